"""compile(metrics=...) beyond accuracy, as in Keras: top-k accuracy for classifiers, MAE and
MSE for regression, functions of (y_true, y_pred); checked against the step graph's own
figures (top-1 is the accuracy, MSE on an mse loss is the loss) and against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import irkit
from irkit import nn
from irkit.data import load_dataset
from irkit.errors import SpecError
from irkit.train.metrics import METRICS, TopKAccuracy, resolve_metrics

IRIS = load_dataset("iris")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 3)).astype(np.float32)
Y = (X @ np.array([1.0, 2.0, -1.0]) + 0.5 + 0.3 * RNG.normal(size=200)).astype(np.float32)


def test_top_k_accuracy_logs_per_epoch_and_top_1_is_the_accuracy():
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(3)])
    model.compile(optimizer="adam", lr=0.01,
                  metrics=["accuracy", TopKAccuracy(1), TopKAccuracy(k=2), "top_k_accuracy"])
    history = model.fit(IRIS.x, IRIS.y, epochs=3, batch_size=16, seed=1, verbose=0)
    assert list(history.history) == [
        "loss", "accuracy", "top_1_accuracy", "top_2_accuracy", "top_k_accuracy", "val_loss",
        "val_accuracy", "val_top_1_accuracy", "val_top_2_accuracy", "val_top_k_accuracy"]
    # top-1 is the accuracy (on validation the same weights; training accuracy is the
    # epoch's running figure, the metric the epoch's end)
    assert history["val_top_1_accuracy"] == pytest.approx(history["val_accuracy"])
    assert all(a <= b for a, b in zip(history["val_top_1_accuracy"], history["val_top_2_accuracy"]))
    assert history["val_top_k_accuracy"] == [1.0] * 3     # k = 5 >= 3 classes
    figures = model.evaluate(IRIS.x, IRIS.y)
    scores = model.predict(IRIS.x)
    top2 = np.argsort(-scores, axis=1)[:, :2]
    assert figures["top_2_accuracy"] == pytest.approx(np.mean((top2 == IRIS.y[:, None]).any(1)))
    assert figures["top_1_accuracy"] == pytest.approx(figures["accuracy"])


def test_mae_and_mse_for_regression_and_a_function_of_y_true_y_pred():
    def max_error(y_true, y_pred):
        return np.abs(y_true.reshape(y_pred.shape) - y_pred).max()
    model = irkit.Sequential([nn.Dense(1)])
    model.compile(optimizer="adam", loss="mse", lr=0.05,
                  metrics=["MAE", "mean_squared_error", max_error])
    history = model.fit(X, Y, epochs=20, batch_size=16, seed=0, verbose=0)
    assert {"mae", "mean_squared_error", "max_error", "val_mae", "val_mean_squared_error",
            "val_max_error"} <= set(history.history)
    # the metric and the loss graph agree on the validation data
    assert history["val_mean_squared_error"] == pytest.approx(history["val_loss"], rel=1e-4)
    figures = model.evaluate(X, Y)
    error = model.predict(X).ravel() - Y
    assert figures["mae"] == pytest.approx(np.abs(error).mean(), rel=1e-5)
    assert figures["mean_squared_error"] == pytest.approx(figures["loss"], rel=1e-4)
    assert figures["max_error"] == pytest.approx(np.abs(error).max(), rel=1e-5)
    assert history["val_mae"][-1] < 0.5 * history["val_mae"][0]  # it learned


@pytest.mark.parametrize("metrics, classification, words", [
    (["auc"], True, ["unknown metric 'auc'", "mae", "top_k_accuracy"]),
    (["top_k_accuracy"], False, ["is for classifiers", "mae or mse"]),
    ([3], True, ["give a name, a Metric or a function"])])
def test_metric_mistakes_are_one_line(metrics, classification, words):
    with pytest.raises(SpecError) as caught:
        resolve_metrics(metrics, classification)
    for word in words:
        assert word in str(caught.value) and "\n" not in str(caught.value)


def test_registry_names_and_accuracy_needs_no_metric():
    assert {"mae", "mse", "top_k_accuracy", "sparse_top_k_categorical_accuracy"} <= set(METRICS)
    assert resolve_metrics(["accuracy", "ACC"], True) == []
    with pytest.raises(SpecError, match="k >= 1"):
        TopKAccuracy(0)


def test_irkit_list_metrics_reads_the_registry():
    import json

    from click.testing import CliRunner

    from irkit.cli import main
    done = CliRunner().invoke(main, ["list", "metrics", "--json"])
    assert done.exit_code == 0, done.output
    assert [m["name"] for m in json.loads(done.stdout)["metrics"]] == list(METRICS)
