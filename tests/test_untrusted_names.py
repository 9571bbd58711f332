"""Issue 23: names that come from files (a model's class names) reach the terminal escaped,
files keep them exactly, `predict`/`evaluate` check a model as every import does, and they
refuse outputs that overflow instead of scoring NaN. Each test failed on the code before
issue 23.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from irkit.cli import main

# an OSC 8 hyperlink, a screen clear, a carriage return that overwrites the line, a newline
HOSTILE = ["\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07", "clear\x1b[2J\x1b[H",
           "fine\rFORGED", "two\nlines"]
CONTROL = ("\x1b", "\x07", "\r", "\x9b")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """iris_mlp (1 epoch) as m.onnx, and h.onnx: the same model with HOSTILE class names."""
    folder = tmp_path_factory.mktemp("names")
    r = cli("train", "iris_mlp", "--epochs", 1, "-o", folder / "m.onnx")
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(folder / "m.onnx"))
    for p in proto.metadata_props:
        if p.key == "irkit.classes":
            p.value = json.dumps(HOSTILE[:3])
    onnx.save(proto, str(folder / "h.onnx"))
    (folder / "x.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n")
    return folder


def _no_control(text: str) -> None:
    for c in CONTROL:
        assert c not in text, f"{c!r} reached the terminal: {text!r}"


def test_predict_escapes_class_names_on_stdout(models):
    r = cli("predict", models / "h.onnx", "--data", models / "x.csv")
    assert r.exit_code == 0, r.output
    _no_control(r.stdout)
    assert "\\x1b]8;;http://evil.example/\\x07click" in r.stdout
    assert "fine\\rFORGED" in r.stdout
    assert len(r.stdout.splitlines()) == 3  # the header and two rows, nothing forged


def test_evaluate_escapes_class_names_on_stdout(models):
    r = cli("evaluate", models / "h.onnx", "--data", "iris")
    assert r.exit_code == 0, r.output
    _no_control(r.stdout)
    assert "clear\\x1b[2J\\x1b[H" in r.stdout


def test_files_and_json_keep_the_names_exactly(models, tmp_path):
    out = tmp_path / "p.csv"
    r = cli("predict", models / "h.onnx", "--data", models / "x.csv", "-o", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode(), newline="")))
    assert len(rows) == 3 and rows[0][2:] == [f"prob_{name}" for name in HOSTILE[:3]]
    r = cli("predict", models / "h.onnx", "--data", models / "x.csv", "--json")
    assert r.exit_code == 0, r.output
    _no_control(r.stdout)  # JSON writes control characters as \u escapes
    assert json.loads(r.stdout)["classes"] == HOSTILE[:3]


def test_data_class_names_are_escaped_too(models, tmp_path):
    """A model without names of its own takes the data's (a CSV's string labels; irkit's CSV
    reader takes no line break inside a cell)."""
    proto = onnx.load(str(models / "m.onnx"))
    kept = [p for p in proto.metadata_props if p.key != "irkit.classes"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    rows = ["5.1,3.5,1.4,0.2", "6.0,2.9,4.5,1.5", "6.3,3.3,6.0,2.5"]
    names = [*HOSTILE[:2], "plain"]
    text = "a,b,c,d,label\n" + "".join(f'{r},"{names[i]}"\n' for i, r in enumerate(rows))
    (tmp_path / "d.csv").write_text(text)
    r = cli("evaluate", tmp_path / "plain.onnx", "--data", tmp_path / "d.csv")
    assert r.exit_code == 0, r.output
    _no_control(r.stdout)
    assert "clear\\x1b[2J\\x1b[H" in r.stdout and "\\x1b]8;;http" in r.stdout


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_validate_the_model(models, tmp_path, command):
    """onnxruntime runs a model whose input declares a negative dimension; irkit's validator
    refuses it, as it does at every import."""
    proto = onnx.load(str(models / "m.onnx"))
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -4
    onnx.save(proto, str(tmp_path / "neg.onnx"))
    r = cli(command, tmp_path / "neg.onnx", "--data", "iris")
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"irkit: error: {tmp_path / 'neg.onnx'}: value 'input' "
                                     "declares a negative dimension -4"]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_outputs_that_overflow_are_refused_not_scored(models, tmp_path, command):
    """3e38 fits float32, but the model's output for it overflows: NaN probabilities (and
    evaluate's accuracy 1.0 from the argmax of NaN) used to come out with exit code 0."""
    data = tmp_path / "big.csv"
    data.write_text("a,b,c,d,label\n5.1,3.5,1.4,0.2,0\n3e38,1,1,1,0\n")
    r = cli(command, models / "m.onnx", "--data", data)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"irkit: error: {models / 'm.onnx'}: the model's output "
                                     "for row 2 is NaN or infinite (its largest feature is "
                                     "3e+38); scale the data as the model was trained, or "
                                     "check the model"]
