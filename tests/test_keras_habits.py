"""What a Keras user types works: compile(metrics=...), fit(verbose=...),
EarlyStopping(restore_best_weights=...), ModelCheckpoint, ReduceLROnPlateau, summary(),
count_params(), save() / irkit.load_model()."""

from __future__ import annotations

import io
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import irkit
from irkit import nn
from irkit.data import load_dataset
from irkit.errors import SpecError
from irkit.train import EarlyStopping, LambdaCallback, ModelCheckpoint, ReduceLROnPlateau


def iris_model(hidden: int = 16, seed: int = 0) -> irkit.Model:
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(hidden, activation="relu"),
                              nn.Dense(3)], name="iris")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], learning_rate=0.02, seed=seed)
    return model


@pytest.fixture(scope="module")
def iris():
    ds = load_dataset("iris")
    return ds.x, ds.y


def test_compile_metrics_accuracy_and_unknown_metric(iris):
    model = iris_model()
    history = model.fit(*iris, epochs=3, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    with pytest.raises(SpecError, match="unknown metric 'auc'"):
        irkit.Sequential([nn.Dense(3)]).compile(metrics=["auc"])


@pytest.mark.parametrize("verbose, lines", [(0, 0), (2, 4), (1, 4), ("auto", 4)])
def test_fit_verbose_levels(iris, monkeypatch, verbose, lines):
    err = io.StringIO()  # not a terminal: verbose 1 writes one line per epoch, no bar
    monkeypatch.setattr(sys, "stderr", err)
    iris_model().fit(*iris, epochs=4, verbose=verbose)
    written = err.getvalue().splitlines()
    assert len(written) == lines + bool(lines), written  # + the closing line
    epochs, closing = written[:lines], written[lines:]
    assert [w.split()[1] for w in epochs] == [f"{e}/4" for e in range(1, lines + 1)]
    assert all("val_loss" in w for w in epochs)
    assert closing == ([] if not lines else [
        "validation loss was still falling at epoch 4: no overfitting; more epochs may help"])


def test_early_stopping_restore_best_weights(iris):
    model = iris_model(hidden=64)
    seen = {}
    snap = LambdaCallback(on_epoch_end=lambda e, logs: seen.__setitem__(e + 1,
                                                                      model.get_weights()))
    stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = model.fit(*iris, epochs=200, validation_split=0.7, keep_best=False, verbose=0,
                        callbacks=[snap, stopper])
    best = int(np.argmin(history["val_loss"])) + 1
    assert stopper.stopped_epoch == history.epochs == best + 3 < 200
    assert stopper.best_epoch == best
    final = model.get_weights()
    assert all(np.array_equal(final[k], seen[best][k]) for k in final)
    assert not all(np.array_equal(final[k], seen[history.epochs][k]) for k in final)


def test_model_checkpoint_files_load_and_predict(iris, tmp_path):
    model = iris_model()
    every = ModelCheckpoint(str(tmp_path / "m_{epoch}_{val_loss:.3f}.onnx"))
    best = ModelCheckpoint(str(tmp_path / "best.onnx"), save_best_only=True)
    history = model.fit(*iris, epochs=4, verbose=0, keep_best=False, callbacks=[every, best])
    names = sorted(p.name for p in tmp_path.glob("m_*.onnx"))
    assert names == sorted(f"m_{e}_{v:.3f}.onnx" for e, v in
                           enumerate(history["val_loss"], 1))
    last = tmp_path / f"m_4_{history['val_loss'][-1]:.3f}.onnx"
    onnx.checker.check_model(onnx.load(str(last)), full_check=True)
    x = iris[0][:10]
    session = ort.InferenceSession(str(last), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                               model.predict(x), rtol=1e-5, atol=1e-6)
    loaded = irkit.load_model(str(tmp_path / "best.onnx"))
    assert loaded.predict(x).shape == (10, 3)


def test_reduce_lr_on_plateau_lowers_the_rate_the_step_uses(iris, tmp_path):
    model = iris_model()
    rates = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: rates.append(model.learning_rate))
    # min_delta 10: no epoch after the first counts as a gain, so every epoch is a plateau
    plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0)
    model.fit(*iris, epochs=5, verbose=0, callbacks=[plateau, record])
    assert rates == pytest.approx([0.02, 0.01, 0.005, 0.0025, 0.00125])
    model.save(str(tmp_path / "t.onnx"))  # the rate is optimizer state: it is saved
    assert irkit.load_model(str(tmp_path / "t.onnx")).learning_rate == pytest.approx(0.00125)
    # and the step really uses it: with lr 0 a step changes no weight
    frozen = iris_model()
    frozen.fit(*iris, epochs=1, verbose=0)
    before = frozen.get_weights()
    frozen.learning_rate = 0.0
    frozen.fit(*iris, epochs=2, verbose=0, keep_best=False)
    after = frozen.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_summary_and_count_params(iris):
    model = iris_model(hidden=16)
    model.fit(*iris, epochs=1, verbose=0)
    weights = model.get_weights()
    expected = 4 * 16 + 16 + 16 * 3 + 3 + 2 * 4  # two Dense layers and the scaling (fixed)
    assert sum(w.size for w in weights.values()) == expected
    assert model.count_params() == expected - 8  # what trains (torch's count), not the scaling
    printed = []
    assert model.summary(print_fn=printed.append) is None  # printed once, as in Keras
    text = model.summary(print_fn=None)
    assert printed == [text]
    for name in weights:
        assert name in text
    assert f"total {expected} weights: {expected - 8} trainable, 8 fixed" in text


def test_save_and_load_model_resume_where_fit_stopped(iris, tmp_path):
    model = iris_model()
    model.fit(*iris, epochs=3, verbose=0)
    model.save(str(tmp_path / "t.onnx"))
    loaded = irkit.load_model(str(tmp_path / "t.onnx"))
    np.testing.assert_array_equal(loaded.predict(iris[0]), model.predict(iris[0]))
    history = loaded.fit(*iris, epochs=5, verbose=0)  # continues: epochs 4 and 5
    assert history.epochs == 5
    assert history["loss"][:3] == model.history["loss"]


def test_training_checkpoint_callback_from_python(iris, tmp_path):
    from irkit.train import TrainingCheckpoint
    model = iris_model()
    history = model.fit(*iris, epochs=3, verbose=0,
                        callbacks=[TrainingCheckpoint(str(tmp_path / "ck"))])
    resumed = irkit.load_model(str(tmp_path / "ck" / "last_train.onnx"))
    assert resumed.fit(*iris, epochs=4, verbose=0).epochs == 4
    best = irkit.load_model(str(tmp_path / "ck" / "best.onnx"))
    np.testing.assert_allclose(best.predict(iris[0]), model.predict(iris[0]), rtol=1e-6)
    assert history.best_epoch is not None


def test_string_labels_are_a_one_line_data_error(iris):
    from irkit.errors import DataError
    names = np.array(["setosa", "versicolor", "virginica"])[iris[1]]
    with pytest.raises(DataError, match="got <U10 values \\(e.g. '[a-z]+'\\); map names") as e:
        iris_model().fit(iris[0], names, epochs=1, verbose=0)
    assert "\n" not in str(e.value)
