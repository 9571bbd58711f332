"""The common mistakes of a learner coming from Keras, one table row each: a clear one-line
error naming the problem and the fix (before onnxruntime), or the habit simply works."""

from __future__ import annotations

import numpy as np
import pytest

import irkit
from irkit import nn
from irkit.data import load_dataset
from irkit.errors import DataError, ShapeError, SpecError
from irkit.train import Adam
from tests.test_cli import assert_one_line_error, cli

IRIS = load_dataset("iris")
IMAGES = np.random.default_rng(0).random((20, 28, 28), dtype=np.float32)


def _model(*layers):
    model = irkit.Sequential(list(layers) or [nn.Dense(3)])
    model.compile(optimizer="adam", lr=0.01)
    return model


MISTAKES = [  # (what, call, error, words in its message)
    ("one-hot labels, sparse loss", lambda: _model().fit(IRIS.x, np.eye(3)[IRIS.y], epochs=1,
                                                         verbose=0),
     DataError, ["look one-hot", "argmax", "categorical_crossentropy"]),
    ("validation data of another width", lambda: _model().fit(
        IRIS.x, IRIS.y, epochs=1, verbose=0, validation_data=(IRIS.x[:, :3], IRIS.y)),
     DataError, ["validation data", "(4,)", "(3,)"]),
    ("28x28 images into Dense", lambda: _model(nn.Dense(10)).fit(
        IMAGES, np.arange(20) % 10, epochs=1, verbose=0),
     ShapeError, ["(28, 10)", "nn.Flatten()"]),
    ("a missing data file", lambda: load_dataset("data/flowers.csv"),
     DataError, ["no such file", "flowers.csv"]),
]


@pytest.mark.parametrize("what, call, error, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_clear_line(what, call, error, words):
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_keras_habits_that_just_work():
    _model().fit(IRIS.x, IRIS.y.reshape(-1, 1), epochs=1, verbose=0)  # labels shaped (N, 1)
    model = _model(irkit.Input((4,)), nn.Dense(3))                    # keras.Input first
    assert model.count_params() == 15                                 # built without data
    history = model.fit(IRIS.x, IRIS.y, epochs=2, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.epoch == [0, 1]
    from irkit.train import SGD, RMSprop
    model = irkit.Sequential([nn.Dense(3)], input_shape=(4,))      # input_shape= as in Keras
    assert model.count_params() == 15
    model.compile(optimizer=SGD(0.1, momentum=0.9, nesterov=True))
    assert (model.settings.optimizer, model.settings.lr) == ("sgd", 0.1)
    assert model.settings.optimizer_config["nesterov"] is True
    model.compile(optimizer=RMSprop(learning_rate=0.01))
    assert (model.settings.optimizer, model.settings.lr) == ("rmsprop", 0.01)
    assert model.compile(optimizer="RMSProp").settings.optimizer == "rmsprop"


def test_adam_positional_rate_trains_like_compile_lr():
    runs = []
    for optimizer, extra in ((Adam(0.05), {}), (Adam(learning_rate=0.05), {}),
                             ("ADAM", {"lr": 0.05})):
        model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(3)])
        model.compile(optimizer=optimizer, **extra)
        runs.append(model.fit(IRIS.x, IRIS.y, epochs=3, verbose=0, seed=1).history["loss"])
    assert runs[0] == runs[1] == runs[2]


def test_cli_mistakes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "semi.csv").write_text("a;b;label\n1;2;0\n3;4;1\n")
    assert_one_line_error(cli("train", "iris_linear", "--data", "semi.csv", "-o", "m.onnx"),
                          "';'-separated", "commas")
    assert_one_line_error(cli("train", "iris_linear", "--data", "nothere.csv", "-o", "m.onnx"),
                          "no such file")
    assert_one_line_error(cli("train", "iris_linear", "-o", "m.txt", "--epochs", "1"),
                          "name it m.onnx")
    assert not (tmp_path / "m.txt").exists()
    assert cli("train", "iris_linear", "-o", "m.onnx", "--epochs", "1").exit_code == 0
    rows = ["a,b,c,d,species"] + [",".join(map(str, x)) + "," + IRIS.classes[y]
                                  for x, y in zip(IRIS.x, IRIS.y)]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    assert_one_line_error(cli("evaluate", "m.onnx", "--data", "f.csv"),
                          "--label-column species")


def test_saturated_scores_evaluate_to_a_loss_of_zero_not_minus_zero():
    """A diverged model's huge logits give probabilities of exactly 1: `irkit evaluate`
    printed `loss -0.0000`."""
    from irkit.cli.lab import _describe
    from irkit.cli.predictor import Predictions, classification_figures
    probabilities = np.eye(3)[[0, 1, 2, 1]]
    pred = Predictions("classify", probabilities, probabilities.argmax(1), probabilities,
                       ["a", "b", "c"], "probabilities")
    figures = classification_figures(pred, np.array([0, 1, 2, 1]))
    assert figures["loss"] == 0.0 and str(figures["loss"]) == "0.0"
    text = _describe({"model": "m.onnx", "data": "d.csv", **figures})
    assert "loss 0.0000" in text and "-0.0000" not in text


@pytest.mark.parametrize("last", [nn.Dense(3), nn.Dense(3, activation="softmax")],
                         ids=["logits", "softmax"])
def test_python_predict_and_irkit_predict_agree(tmp_path, last):
    """Model.predict(x) gives the model's outputs (as Keras) and irkit predict's JSON has them
    as "outputs"; predict(x, probabilities=True) is irkit predict's probabilities."""
    import json
    model = _model(nn.Normalize("standard"), last)
    model.fit(IRIS.x, IRIS.y, epochs=5, verbose=0, seed=1)
    model.export(str(tmp_path / "m.onnx"))
    r = cli("predict", str(tmp_path / "m.onnx"), "--data", "iris", "-o", str(tmp_path / "p.json"))
    assert r.exit_code == 0, r.output
    cli_out = json.loads((tmp_path / "p.json").read_text())
    np.testing.assert_allclose(cli_out["outputs"], model.predict(IRIS.x), rtol=1e-5, atol=1e-6)
    probabilities = model.predict(IRIS.x, probabilities=True)
    np.testing.assert_allclose(cli_out["probabilities"], probabilities, atol=2e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert cli_out["labels"] == probabilities.argmax(axis=1).tolist()
    regressor = irkit.Sequential([nn.Dense(1)]).compile(loss="mse")
    with pytest.raises(SpecError, match="for classifiers"):
        regressor.predict(IRIS.x, probabilities=True)
