"""Issue 23: nested inputs and bad histories end in one line (or a correct chart with gaps),
never `unexpected RecursionError`/`ValueError`/`TypeError`; a failed --plot writes nothing.
Each test failed on the code before issue 23.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from cli_checks import cli
from cli_checks import one_line_error as any_line_error

one_line_error = functools.partial(any_line_error, code=1)  # these commands exit 1

DEPTH = 100_000  # far past Python's recursion limit; a few hundred kilobytes


@pytest.mark.parametrize("value", ["[" * DEPTH + "]" * DEPTH,
                                   "[" + "{a = " * DEPTH + "1" + "}" * DEPTH + "]"])
def test_a_deeply_nested_recipe_is_refused_in_one_line(tmp_path, value):
    recipe = tmp_path / "deep.toml"
    recipe.write_text(f"[model]\nlayers = {value}\n")
    r = cli("train", recipe, "--data", "iris", "-o", tmp_path / "m.onnx")
    one_line_error(r, "deep.toml", "nested too deeply")
    assert not (tmp_path / "m.onnx").exists()


def test_a_deeply_nested_history_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"history": ' + "[" * DEPTH + "]" * DEPTH + "}")
    one_line_error(cli("plot", path), "deep.json", "nested too deeply")


def _history(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "h.json"
    path.write_text(text)
    return path


BAD = [  # a history, and words of the one line that refuses it
    ('{"history": {"loss": [1.0, "0.5"]}}', ["'loss', epoch 2", "not a number"]),
    ('{"history": {"loss": [1.0, true]}}', ["'loss', epoch 2", "not a number"]),
    ('{"history": {"loss": [1.0, [2]]}}', ["'loss', epoch 2", "not a number"]),
    ('{"history": {"loss": {"1": 1.0}}}', ["'loss' is not a list"]),
    ('{"history": {"loss": [1.0], "\\u001b]0;pwned\\u0007": 3}}', ["'\\x1b]0;pwned\\x07'"]),
    ('{"history": {"loss": [1.0, 0.5]}, "best_epoch": "2"}', ["best_epoch '2'", "1 to 2"]),
    ('{"history": {"loss": [1.0, 0.5]}, "best_epoch": 7}', ["best_epoch 7"]),
    ('{"history": {"loss": [1.0, 0.5]}, "monitor": {"a": 1}}', ["monitor"]),
    ('{"history": {"loss": [NaN, Infinity, null]}}', ["no finite training loss"]),
]


@pytest.mark.parametrize("text,words", BAD, ids=[str(i) for i in range(len(BAD))])
@pytest.mark.parametrize("png", [False, True], ids=["text", "png"])
def test_a_bad_history_is_refused_in_one_line_by_both_charts(tmp_path, text, words, png):
    pytest.importorskip("matplotlib") if png else None
    out = tmp_path / "curves.png"
    r = cli("plot", _history(tmp_path, text), *(["-o", out] if png else []))
    line = one_line_error(r, *words)
    assert "\x1b" not in line and "\x07" not in line
    assert not out.exists()


GAPS = ('{"history": {"loss": [1.0, NaN, 0.5, Infinity, 0.25], '
        '"val_loss": [1.1, null, -Infinity, 0.6, 0.7], "accuracy": [0.3, 0.5, null, 0.7, 0.8],'
        ' "val_accuracy": [NaN, NaN, NaN, NaN, NaN]}, "best_epoch": 4}')


def test_a_history_with_nan_and_infinities_plots_with_gaps(tmp_path):
    r = cli("plot", _history(tmp_path, GAPS))
    assert r.exit_code == 0, r.output
    chart = r.stdout.split("\n\n")[0].splitlines()
    columns = [line[12:] for line in chart[:12]]  # the plot area right of the axis
    marks = [[c for c in (row[col] for row in columns) if c in "*o"] for col in range(5)]
    assert marks[1] == [] and marks[3] == ["o"] and marks[0] and marks[4]  # epochs 2, 4
    assert "validation loss bottomed at epoch 4 (0.6)" in r.stdout
    r = cli("plot", _history(tmp_path, GAPS), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["report"]["lowest_epoch"] == 4


def test_a_history_with_gaps_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    r = cli("plot", _history(tmp_path, GAPS), "-o", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_beyond_what_matplotlib_draws_are_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    text = '{"history": {"loss": [1e308, -1e308, 3.0]}}'
    one_line_error(cli("plot", _history(tmp_path, text), "-o", out), "matplotlib cannot draw",
                   "1e+308")
    assert not out.exists()
    r = cli("plot", _history(tmp_path, text))  # the text chart draws them
    assert r.exit_code == 0, r.output


def test_a_training_file_with_a_bad_history_is_refused_at_load(tmp_path):
    import onnx
    r = cli("train", "iris_mlp", "--epochs", 1, "--save-training", tmp_path / "s.onnx",
            "-o", tmp_path / "a.onnx")
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(tmp_path / "s.onnx"))
    for p in proto.metadata_props:
        if p.key == "irkit.history":
            doc = json.loads(p.value)
            doc["history"]["loss"][0] = "much"
            p.value = json.dumps(doc)
    onnx.save(proto, str(tmp_path / "s.onnx"))
    r = cli("train", tmp_path / "s.onnx", "--data", "iris", "--epochs", 1,
            "-o", tmp_path / "b.onnx")
    one_line_error(r, "s.onnx", "irkit.history", "'loss', epoch 1", "not a number")
    assert not (tmp_path / "b.onnx").exists()


def test_a_failed_plot_writes_no_model(tmp_path, monkeypatch):
    """matplotlib failing on the curves (as it does on figures near 1e308) after training:
    -o, --save-training and the image are all left unwritten."""
    pytest.importorskip("matplotlib")
    import irkit.train.plot

    def broken(*args, **kwargs):
        raise ValueError("Singular matrix")
    monkeypatch.setattr(irkit.train.plot, "_panel", broken)
    r = cli("train", "iris_mlp", "--epochs", 1, "-o", tmp_path / "m.onnx", "--save-training",
            tmp_path / "s.onnx", "--plot", tmp_path / "c.png")
    assert r.exit_code == 1, r.output
    last = r.stderr.splitlines()[-1]  # after the epochs' progress lines
    assert last.startswith("irkit: error: matplotlib cannot draw") and "Singular" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == []
