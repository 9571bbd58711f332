"""The lab on the command line: checkpoints, the overfitting report, early stopping from a
recipe, curves (PNG and text), resuming without losing the best epoch, piped progress."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import irkit_command
from test_cli import assert_one_line_error, cli, irkit_process, predict, weights

from irkit.data import load_dataset
from irkit.train.loading import load_model

# a net far too large for 45 Iris flowers: validation loss turns upward within a few epochs
OVERFIT = """
[model]
scaling = "standard"
layers = [
  { type = "dense", units = 64, activation = "relu" },
  { type = "dense", units = 64, activation = "relu" },
  { type = "dense", units = 3 },
]
[data]
dataset = "iris"
val_split = 0.7
[train]
optimizer = "adam"
lr = 0.02
epochs = 40
batch_size = 8
"""


@pytest.fixture
def overfit(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "overfit.toml"
    path.write_text(OVERFIT)
    return path


def train_json(*args: str) -> tuple[dict, str]:
    result = cli("train", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def same_predictions(a, b) -> bool:
    x = load_dataset("iris").x
    return np.array_equal(predict(a, x), predict(b, x))


# ---- checkpoints ---------------------------------------------------------------------------
def test_checkpoint_folder_holds_best_last_resumable_and_history(overfit):
    doc, _ = train_json(str(overfit), "-o", "m.onnx", "--checkpoint", "ck")
    ck = overfit.parent / "ck"
    assert sorted(os.listdir(ck)) == ["best.onnx", "history.json", "last.onnx",
                                      "last_train.onnx"]
    for name in ("best.onnx", "last.onnx", "last_train.onnx"):
        onnx.checker.check_model(onnx.load(str(ck / name)), full_check=True)
    best = doc["best_epoch"]
    assert best < doc["epochs_total"]  # the test means something only if so
    assert same_predictions(ck / "best.onnx", "m.onnx")  # -o holds the best epoch
    assert not same_predictions(ck / "last.onnx", "m.onnx")
    saved = json.loads((ck / "history.json").read_text())
    assert saved["history"] == doc["history"] and saved["best_epoch"] == best
    resumable = load_model(str(ck / "last_train.onnx"))
    assert resumable._resume.epochs_done == doc["epochs_total"]
    assert resumable.history.best_epoch == best
    stored_best = resumable._resume.best_weights  # the best survives in the training file
    assert stored_best is not None
    for name, value in weights(ck / "best.onnx").items():
        if name in stored_best:
            np.testing.assert_array_equal(stored_best[name], value)


def test_checkpoint_files_stay_loadable_when_killed(tmp_path):
    (tmp_path / "overfit.toml").write_text(OVERFIT.replace("epochs = 40", "epochs = 100000"))
    ck = tmp_path / "ck"
    exe = irkit_command()
    for attempt in range(2):
        proc = subprocess.Popen([*exe, "train", "overfit.toml", "-o", "m.onnx",
                                 "--checkpoint", "ck", "--epochs", "100000"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (ck / "history.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3 + 0.37 * attempt)  # somewhere in the middle of an epoch's writes
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for name in ("best.onnx", "last.onnx", "last_train.onnx"):
            onnx.checker.check_model(onnx.load(str(ck / name)), full_check=True)
        assert load_model(str(ck / "last_train.onnx"))._resume.epochs_done >= 1
        assert json.loads((ck / "history.json").read_text())["history"]["loss"]
        named = {"best.onnx", "history.json", "last.onnx", "last_train.onnx"}
        # a write cut short: its temporary file; a killed run: its lock file (unlocked)
        for left in set(os.listdir(ck)) - named - {".irkit.lock"}:
            assert left.startswith(".") and left.endswith(".tmp"), left
    # the next run resumes (from a copy: an output never overwrites an input) and clears
    # what the killed runs left behind
    same = irkit_process("train", "ck/last_train.onnx", "--data", "iris", "-o", "m.onnx",
                         "--checkpoint", "ck", cwd=tmp_path)
    assert "--checkpoint ck/last_train.onnx is the input" in same.stderr
    shutil.copy(ck / "last_train.onnx", tmp_path / "resume.onnx")
    resumed = irkit_process("train", "resume.onnx", "--data", "iris", "-o", "m.onnx",
                            "--epochs", "1", "--checkpoint", "ck", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(os.listdir(ck)) == sorted(named)


def test_checkpoint_must_be_a_folder(overfit):
    (overfit.parent / "afile").write_text("x")
    assert_one_line_error(cli("train", str(overfit), "-o", "m.onnx", "--checkpoint", "afile"),
                          "not a directory")


# ---- the overfitting report and early stopping ----------------------------------------------
def test_report_says_the_model_overfits_and_which_epoch_is_kept(overfit):
    doc, _ = train_json(str(overfit), "-o", "m.onnx")
    report, best = doc["report"], doc["best_epoch"]
    val = doc["history"]["val_loss"]
    assert report["overfits"] and report["lowest_epoch"] == best == int(np.argmin(val)) + 1
    assert report["rise"] == pytest.approx((val[-1] - min(val)) / min(val))
    assert f"bottomed at epoch {best}" in report["text"]
    assert f"the model overfits; kept epoch {best}" in report["text"]
    plain = cli("train", str(overfit), "-o", "m.onnx")  # without --json: on stderr
    closing = plain.stderr.splitlines()[-1]  # the report, then whose weights -o holds
    assert closing == (f"{report['text']}. Restored epoch {best}'s weights (best val_loss), "
                       f"not epoch {len(val)}'s: pass keep_best=False (irkit train "
                       "--keep-last) for the last epoch's")


def test_report_on_a_run_that_does_not_overfit(tmp_path):
    result = irkit_process("train", "iris_linear", "-o", "m.onnx", "--epochs", "5",
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "still falling at epoch 5: no overfitting" in result.stderr


def test_patience_from_the_recipe_stops_early_and_keeps_the_best(overfit):
    overfit.write_text(OVERFIT.replace("batch_size = 8", "batch_size = 8\npatience = 5"))
    doc, _ = train_json(str(overfit), "-o", "m.onnx", "--checkpoint", "ck")
    best = doc["best_epoch"]
    assert doc["epochs_run"] == best + 5 < 40  # five epochs without a gain, then stop
    assert doc["report"]["stopped_early"] == best + 5
    assert doc["report"]["text"].startswith(f"stopped early at epoch {best + 5} of 40")
    assert same_predictions("m.onnx", overfit.parent / "ck" / "best.onnx")
    doc, _ = train_json(str(overfit), "-o", "m.onnx", "--patience", "0")  # args beat recipe
    assert doc["epochs_run"] == 40


# ---- curves --------------------------------------------------------------------------------
def _curve_pixels(png: Path) -> tuple[tuple[int, int], list[int]]:
    """Size, and per panel half the counts of pixels of matplotlib's first two line colours."""
    import matplotlib.image as mpimg
    img = (mpimg.imread(str(png))[..., :3] * 255).round().astype(int)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    half = img.shape[1] // 2
    counts = [int((np.abs(part - colour).sum(axis=2) < 30).sum())
              for part in (img[:, :half], img[:, half:]) for colour in (blue, orange)]
    return img.shape[:2], counts


def test_plot_png_from_train_and_from_history(overfit):
    doc, _ = train_json(str(overfit), "-o", "m.onnx", "--plot", "a.png")
    (overfit.parent / "h.json").write_text(json.dumps(doc))
    result = cli("plot", "h.json", "-o", "b.png")
    assert result.exit_code == 0, result.output
    for png in ("a.png", "b.png"):
        size, counts = _curve_pixels(overfit.parent / png)
        assert size == (400, 1100)  # two panels: loss and accuracy
        assert min(counts) > 200, counts  # training and validation curve in each panel


def test_plot_text_chart_and_report(overfit):
    train_json(str(overfit), "-o", "m.onnx", "--checkpoint", "ck")
    result = cli("plot", "ck/history.json")
    assert result.exit_code == 0, result.output
    assert "* training loss, o validation loss, | best epoch" in result.stdout
    assert "* training accuracy, o validation accuracy" in result.stdout
    assert "the model overfits" in result.stdout
    chart = result.stdout.split("\n\n")[0].splitlines()
    assert any("*" in line for line in chart) and any("o" in line[12:] for line in chart)


def test_plot_without_matplotlib_is_one_line(overfit, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert_one_line_error(cli("train", str(overfit), "-o", "m.onnx", "--plot", "c.png"),
                          'pip install matplotlib')
    assert not (overfit.parent / "m.onnx").exists()  # refused before training


def test_plot_of_a_file_that_is_not_a_history(in_tmp_dir):
    (in_tmp_dir / "h.json").write_text('{"a": 1}')
    assert_one_line_error(cli("plot", "h.json"), "history")


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- resume ------------------------------------------------------------------------------
def test_resume_keeps_the_earlier_best_when_new_epochs_are_worse(overfit):
    first, _ = train_json(str(overfit), "-o", "a.onnx", "--save-training", "t.onnx")
    best = first["best_epoch"]
    assert best < 40
    doc, stderr = train_json("t.onnx", "--data", "iris", "-o", "b.onnx", "--epochs", "20")
    assert doc["epochs_total"] == 60 and doc["epochs_run"] == 20
    assert min(doc["history"]["val_loss"][40:]) > min(first["history"]["val_loss"])
    assert doc["best_epoch"] == best  # the best is still the first run's
    assert f"kept epoch {best}" in doc["report"]["text"] and doc["report"]["overfits"]
    assert same_predictions("a.onnx", "b.onnx")  # -o holds those weights again


# ---- smaller traps ----------------------------------------------------------------------------
def test_recipe_data_path_is_relative_to_the_recipe(tmp_path):
    sub = tmp_path / "lab"
    sub.mkdir()
    ds = load_dataset("iris")
    rows = ["a,b,c,d,label"] + [",".join([*map(str, x), str(int(y))]) for x, y in zip(ds.x,
                                                                                       ds.y)]
    (sub / "flowers.csv").write_text("\n".join(rows) + "\n")
    (sub / "r.toml").write_text('[model]\nlayers = [{ type = "dense", units = 3 }]\n'
                                '[data]\ndataset = "flowers.csv"\n[train]\nepochs = 2\n')
    result = irkit_process("train", "lab/r.toml", "-o", "m.onnx", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dataset"] == str(sub / "flowers.csv")


def test_piped_progress_prints_each_epoch_once(tmp_path):
    result = irkit_process("train", "iris_linear", "-o", "m.onnx", "--epochs", "4",
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\033" not in result.stderr  # no bar in a pipe
    for epoch in range(1, 5):
        assert sum(line.startswith(f"epoch {epoch}/4 ") for line in
                   result.stderr.splitlines()) == 1


def test_train_help_says_which_file_holds_which_weights():
    text = " ".join(cli("train", "--help").stdout.split())
    assert "-o holds the best epoch's weights" in text
    assert "training holds the last epoch's state" in text
    assert "--checkpoint DIR" in text and "--plot PNG" in text


def test_plot_svg_and_a_bad_suffix(overfit):
    train_json(str(overfit), "-o", "m.onnx", "--checkpoint", "ck")
    assert cli("plot", "ck/history.json", "-o", "c.svg").exit_code == 0
    svg = (overfit.parent / "c.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "best epoch" in svg
    assert_one_line_error(cli("plot", "ck/history.json", "-o", "c.txt"), ".png, .svg or .pdf")
    assert_one_line_error(cli("train", str(overfit), "-o", "m.onnx", "--plot", "c.jpg"),
                          ".png, .svg or .pdf")


def test_lab_commands_under_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "irkit.cli", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("evaluate", "predict", "plot", "train"):
        assert f"  {command} " in result.stdout
