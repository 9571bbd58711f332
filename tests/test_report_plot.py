"""The overfitting report and the text chart on histories written by hand."""

from __future__ import annotations

import pytest

from irkit.train import History
from irkit.train.plot import text_chart
from irkit.train.report import overfitting_report


def doc(loss, val_loss=None, best=None, monitor="val_loss") -> dict:
    history = {"loss": loss} | ({"val_loss": val_loss} if val_loss else {})
    return {"history": history, "best_epoch": best, "monitor": monitor}


def test_overfits_when_validation_rises_while_training_falls():
    r = overfitting_report(doc([1.0, 0.5, 0.3, 0.2, 0.1], [1.0, 0.6, 0.5, 0.6, 0.75], 3), 5)
    assert r.overfits and r.lowest_epoch == 3 and r.rise == pytest.approx(0.5)
    assert r.text == ("validation loss bottomed at epoch 3 (0.5) and rose 50% by epoch 5: "
                      "the model overfits; kept epoch 3")


def test_keep_last_and_another_monitor_are_named():
    h = doc([1.0, 0.5, 0.3, 0.2], [1.0, 0.5, 0.7, 0.8], 2)
    assert overfitting_report(h, keep_best=False).text.endswith("kept the last epoch (4)")
    h = doc([1.0, 0.5, 0.3, 0.2], [1.0, 0.5, 0.7, 0.8], 3, monitor="val_accuracy")
    assert overfitting_report(h).text.endswith("kept epoch 3 (best val_accuracy)")


def test_unstable_when_both_losses_rise():
    r = overfitting_report(doc([1.0, 0.5, 0.6, 0.9], [1.0, 0.5, 0.9, 2.0], 2))
    assert not r.overfits and not r.diverges and "unstable training" in r.text


# --lr 10 on Iris (the starting weights' loss 1.1): no NaN, a loss hundreds of times the start
WILD = [371.5, 319.6, 177.2, 129.1, 48.85, 172.5, 41.56, 2.173, 0.891, 0.473]
WILD_VAL = [82.44, 5.957, 133.4, 52.83, 99.52, 1.212, 22.23, 0.586, 0.485, 0.419]


@pytest.mark.parametrize("history, start, why", [
    (WILD, 1.1, "training loss reached 371.5 at epoch 1, 338 times the 1.1 it started from"),
    ([1.0, 0.5, 0.9, 2.0], None,  # the first epoch's loss stands in for an older history's
     "training loss rose from 0.5 at epoch 2 to 2 at epoch 4, above the 1 it started from"),
    ([9.0, 4.0, 2.5, 3.0], 9.5, "")])  # a rise below the start is no divergence
def test_growing_training_loss_is_reported_as_divergence_not_overfitting(history, start, why):
    d = doc(history, WILD_VAL[:len(history)], 2) | {"start_loss": start}
    r = overfitting_report(d, len(history))
    assert r.diverges == bool(why)
    if why:
        assert not r.overfits and r.text.startswith(f"{why}: training diverges"), r.text
        assert "lower the learning rate" in r.text and "no clear overfitting" not in r.text


def test_a_continued_run_near_zero_loss_is_no_divergence():
    r = overfitting_report(doc([1e-3, 0.1, 0.2], [0.01, 0.2, 0.3], 1) | {"start_loss": 2e-8})
    assert not r.diverges


def test_still_falling_small_rise_early_stop_and_no_validation():
    assert "still falling at epoch 3" in overfitting_report(doc([3, 2, 1], [3, 2, 1], 3)).text
    small = overfitting_report(doc([3, 2, 1, 0.5], [3, 2, 1.0, 1.01], 3))
    assert not small.overfits and "no clear overfitting" in small.text
    early = overfitting_report(doc([3, 2, 1, 0.5], [3, 2, 1.0, 1.5], 3), epochs_planned=10)
    assert early.stopped_early == 4 and early.text.startswith("stopped early at epoch 4 of 10")
    alone = overfitting_report(doc([3, 2, 2.5]))
    assert alone.curve == "loss" and not alone.overfits
    assert "training loss (no validation data)" in alone.text


def test_report_reads_a_history_object():
    h = History(monitor="val_loss")
    for loss, val in [(1.0, 1.0), (0.5, 0.4), (0.2, 0.8)]:
        h.append({"loss": loss, "val_loss": val})
    h.best_epoch = 2
    assert overfitting_report(h).overfits


def test_text_chart_marks_curves_and_best_epoch():
    chart = text_chart(doc([4.0, 2.0, 1.0, 0.5], [4.0, 2.5, 2.0, 3.0], 3), height=8)
    lines = chart.splitlines()
    assert lines[0].startswith("         4 +") and "0.5 +" in lines[7]
    grid = [line[12:] for line in lines[:8]]
    assert grid[0][0] in "*o" and grid[-1][3] == "*"  # first epoch at the top, last low
    assert all(row[2] in "|*o" for row in grid)  # the best epoch's column
    assert "| best epoch 3" in lines[-1]


def test_a_later_epoch_with_better_accuracy_is_mentioned():
    h = doc([1.0, 0.5, 0.3, 0.2], [1.0, 0.5, 0.55, 0.6], 2)
    h["history"]["val_accuracy"] = [0.5, 0.937, 0.955, 0.94]
    text = overfitting_report(h).text
    assert text.endswith("; epoch 3 had higher validation accuracy (0.9550 vs 0.9370): "
                         "--monitor val_accuracy keeps that one")
    h["history"]["val_accuracy"] = [0.5, 0.937, 0.94, 0.94]  # within 0.01: no note
    assert "higher validation accuracy" not in overfitting_report(h).text


def test_a_last_epoch_wiggle_of_a_tiny_loss_is_not_overfitting():
    """Iris: validation loss 1.13 -> 0.0032 at epoch 99, 0.0039 at epoch 100 (+24%, but
    0.06% of what training gained): noise, not overfitting."""
    val = [1.13] + [1.13 * 0.95 ** k for k in range(1, 98)] + [0.0032, 0.0039]
    train = [1.6 * 0.97 ** k for k in range(100)]
    r = overfitting_report(doc(train, val, 99), 100)
    assert not r.overfits and "no clear overfitting" in r.text


def test_a_fit_whose_loss_explodes_without_nan_is_reported_as_diverging():
    """Iris at Adam --lr 10: the losses reach hundreds (below the trainer's hard stop, no NaN);
    the report names the divergence with its figure instead of 'no clear overfitting'."""
    import irkit
    from irkit import nn
    from irkit.data import load_dataset
    data = load_dataset("iris")
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(16, activation="relu"),
                              nn.Dense(3)])
    model.compile(optimizer="adam", lr=10)
    history = model.fit(data.x, data.y, epochs=10, batch_size=16, seed=1, verbose=0)
    assert 0.5 < history.start_loss < 5 and max(history["loss"]) > 50 * history.start_loss
    r = overfitting_report(history, 10)
    assert r.diverges and "training diverges" in r.text and "times the" in r.text, r.text
    assert overfitting_report(History.from_dict(history.to_dict()), 10).text == r.text


def test_plots_leave_matplotlibs_backend_and_pyplot_alone(tmp_path):
    """irkit draws on an Agg canvas of its own: the backend a notebook set (inline) stays,
    and pyplot is never imported (its state is the user's)."""
    import os
    import subprocess
    import sys
    script = (
        "import matplotlib, sys\nmatplotlib.use('svg')\n"
        "from irkit.train.plot import plot_png\n"
        "png = plot_png({'history': {'loss': [2.0, 1.0], 'val_loss': [2.5, 1.5]}})\n"
        "print(png[:4] == b'\\x89PNG', matplotlib.get_backend(), "
        "'matplotlib.pyplot' in sys.modules)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "svg", "False"], done.stdout


def test_a_small_rise_in_every_epoch_for_five_epochs_is_overfitting():
    """What early stopping with patience 5 sees (mnist_overfit: 0.4375 at epoch 7, 2% higher
    five epochs later, training loss falling): the lesson's overfitting, not 'no clear'."""
    val = [0.666, 0.591, 0.517, 0.49, 0.446, 0.438, 0.4375, 0.438, 0.44, 0.441, 0.443, 0.445]
    loss = [1.5 / (e + 1) for e in range(12)]
    r = overfitting_report(doc(loss, val, 7), 40)
    assert r.overfits and r.text.startswith("stopped early at epoch 12 of 40; validation loss "
                                            "bottomed at epoch 7 (0.4375) and rose 2% by epoch "
                                            "12: the model overfits; kept epoch 7"), r.text
    wiggle = val[:7] + [0.438, 0.437, 0.439, 0.4385, 0.44]  # not every epoch higher: noise
    assert not overfitting_report(doc(loss, wiggle, 7), 40).overfits
