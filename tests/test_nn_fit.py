"""The Python high-level API: layers, custom modules, compile / fit / evaluate / predict,
losses, optimizers, determinism, keep-best, callbacks, and the data helpers it relies on."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.runtimes.reference import ReferenceRuntime

from irkit import Sequential, ops
from irkit.data import fit_scaler, load_dataset, train_val_split
from irkit.errors import DataError, IrkitError, ShapeError
from irkit.nn import Activation, Dense, Dropout, Module, Normalize, ReLU, Tanh
from irkit.train import Callback, EarlyStopping, LambdaCallback, LearningRateScheduler


# ---- data and custom layers -----------------------------------------------------------------
def blobs(n: int = 240, features: int = 4, classes: int = 3, seed: int = 0):
    """Gaussian blobs around well-separated centres, integer labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (classes, features))
    y = np.arange(n) % classes
    x = centres[y] + rng.normal(0.0, 1.0, (n, features))
    return x.astype(np.float32), y.astype(np.int64)


def linear_data(n: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5]) + 0.3).astype(np.float32)
    return x, y


class Gain(Module):
    """x * g + c per feature, with its own weights: a layer written with low-level ops."""

    def forward(self, x):
        features = x.shape[-1]
        g = self.add_weight("g", (features,), "ones", graph_of=x)
        c = self.add_weight("c", (features,), "zeros", graph_of=x)
        return ops.Add(ops.Mul(x, g), c)


class Swish(Module):
    """x * sigmoid(x), with the Value operators."""

    def forward(self, x):
        return x * ops.Sigmoid(x)


def snapshot(module) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in module.get_weights().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---- Sequential, custom modules, the training methods ---------------------------------------
def test_sequential_with_custom_modules_trains_and_predicts():
    x, y = blobs()
    model = Sequential([Normalize(), Gain(), Dense(16), Swish(), Dropout(0.2, seed=1),
                        Dense(8, activation="tanh"), ReLU(), Dense(3)])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", lr=0.01, seed=0)
    history = model.fit(x, y, epochs=15, batch_size=32, validation_split=0.25, seed=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 15 for v in history.history.values())
    assert history["val_accuracy"][-1] >= 0.95
    assert history["loss"][-1] < history["loss"][0]
    names = list(model.get_weights())
    assert names[:4] == ["normalize_0.shift", "normalize_0.scale", "gain_1.g", "gain_1.c"]
    gain = model.get_weights()["gain_1.g"]
    assert not np.allclose(gain, 1.0)  # gradients reach the custom layer's weights
    scores = model.evaluate(x, y)
    assert set(scores) == {"loss", "accuracy"} and scores["accuracy"] >= 0.95
    out = model.predict(x)
    assert out.shape == (len(x), 3) and out.dtype == np.float32
    np.testing.assert_array_equal(model.predict(x), out)  # no dropout at inference
    assert (out.argmax(axis=1) == y).mean() == pytest.approx(scores["accuracy"])
    graph = model.to_graph()
    (ref,) = ReferenceRuntime().compile(graph)({"input": x})
    np.testing.assert_allclose(ref, out, rtol=1e-5, atol=1e-5)


def test_dropout_only_in_the_training_graph(tmp_path):
    import onnx
    x, y = blobs()
    model = Sequential([Dense(8, activation="relu"), Dropout(0.5, seed=3), Dense(3)])
    model.compile(seed=0)
    model.fit(x, y, epochs=1)
    graphs = model._graphs
    # the training graph draws its mask from the step counter (a hash of standard ops)
    assert "opt/step" in {v.name for v in graphs.train.inputs}
    assert "GreaterOrEqual" in {n.op_type for n in graphs.train.nodes}
    assert "GreaterOrEqual" not in {n.op_type for n in graphs.eval.nodes}
    assert "Dropout" not in {n.op_type for n in graphs.eval.nodes}
    assert "Dropout" not in {n.op_type for n in model.to_graph().nodes}
    model.export(str(tmp_path / "m.onnx"))
    assert "Dropout" not in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}


def test_activation_layers_build_their_ops():
    model = Sequential([Dense(4, activation="relu"), Tanh(), Activation("sigmoid"),
                        Activation("linear"), Dense(2, activation="softplus")], input_shape=(3,))
    graph = model.to_graph()
    assert [n.op_type for n in graph.nodes] == ["Gemm", "Relu", "Tanh", "Sigmoid", "Gemm",
                                                "Softplus"]
    with pytest.raises(IrkitError, match="unknown activation"):
        Dense(2, activation="swishy")


def test_fit_with_validation_data_and_no_validation():
    x, y = blobs(300)
    xv, yv = blobs(60, seed=5)
    model = Sequential([Dense(3)])
    model.compile(optimizer="sgd", lr=0.1, momentum=0.9)
    history = model.fit(x, y, epochs=5, validation_data=(xv, yv), validation_split=0.5)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # validation_data wins over validation_split: the logged figures are those of (xv, yv)
    assert history["val_loss"][history.best_epoch - 1] == pytest.approx(
        model.evaluate(xv, yv)["loss"], rel=1e-5)
    plain = Sequential([Dense(3)])
    plain.compile()
    assert set(plain.fit(x, y, epochs=2, validation_split=0).history) == {"loss", "accuracy"}
    assert set(plain.fit(x, y, epochs=2).history) == {"loss", "accuracy", "val_loss",
                                                       "val_accuracy"}  # 0.2 by default


def test_fit_without_compile_uses_defaults_and_evaluate_needs_compile():
    x, y = blobs()
    with pytest.raises(ShapeError, match="compile"):
        Sequential([Dense(3)]).evaluate(x, y)
    model = Sequential([Dense(3)])
    history = model.fit(x, y, epochs=3)
    assert "accuracy" in history.history
    with pytest.raises(DataError, match="samples"):
        model.fit(x, y[:-1])


def test_shuffle_changes_the_batches_and_seed_fixes_them():
    x, y = blobs()

    def train(shuffle: bool, seed: int = 0):
        m = Sequential([Dense(3)])
        m.compile(optimizer="sgd", lr=0.05, seed=seed)
        m.fit(x, y, epochs=2, batch_size=16, shuffle=shuffle, keep_best=False)
        return snapshot(m)
    assert same_weights(train(True), train(True))
    assert not same_weights(train(True), train(False))
    assert same_weights(train(False), train(False))


# ---- losses -----------------------------------------------------------------------------------
def test_mse_regression_loss_drops():
    x, y = linear_data()
    model = Sequential([Dense(1)])
    model.compile(loss="mse", optimizer="adam", lr=0.05)
    history = model.fit(x, y, epochs=40, validation_split=0.2)
    assert set(history.history) == {"loss", "val_loss"}  # no accuracy for regression
    assert history["loss"][-1] < 0.01 * history["loss"][0]
    assert history["val_loss"][-1] < 1e-2
    w = model.get_weights()
    np.testing.assert_allclose(w["dense_0.W"].ravel(), [1.5, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(model.predict(x).ravel(), y, atol=0.1)


def test_binary_crossentropy_on_separable_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
    model = Sequential([Dense(1)])
    model.compile(loss="binary_crossentropy", optimizer="sgd", lr=0.5, momentum=0.9)
    history = model.fit(x, y, epochs=20, validation_split=0.2)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history["val_accuracy"][-1] >= 0.95
    logits = model.predict(x).ravel()
    assert ((logits > 0) == (y > 0.5)).mean() >= 0.95


def test_sparse_and_categorical_crossentropy_agree():
    x, y = blobs()
    one_hot = np.eye(3, dtype=np.float32)[y]
    tr, va = train_val_split(len(x), 0.2, 0, y)  # one split for both (one-hot isn't stratified)
    results = {}
    for loss, target in (("sparse_categorical_crossentropy", y),
                         ("categorical_crossentropy", one_hot)):
        m = Sequential([Dense(3)])
        m.compile(loss=loss, optimizer="sgd", lr=0.1, seed=0)
        history = m.fit(x[tr], target[tr], epochs=5, validation_data=(x[va], target[va]))
        results[loss] = (history, snapshot(m))
    sparse, categorical = results.values()
    assert sparse[0]["val_accuracy"][-1] >= 0.95
    # the same loss written two ways: the same training, up to float rounding
    np.testing.assert_allclose(sparse[0]["loss"], categorical[0]["loss"], rtol=1e-4)
    for k in sparse[1]:
        np.testing.assert_allclose(sparse[1][k], categorical[1][k], rtol=1e-3, atol=1e-5)


# ---- optimizers, checked against the update rules by hand -----------------------------------
def _mse_grad(x, y, w, b):
    """d/dW, d/db of mean((x W + b - y)^2) for one output."""
    r = x.astype(np.float64) @ w + b - y.reshape(-1, 1)
    return 2 * x.T @ r / len(x), 2 * r.sum(axis=0) / len(x)


def _one_batch_fit(optimizer: str, epochs: int, **settings):
    x, y = linear_data(64)
    model = Sequential([Dense(1)], input_shape=(3,))
    model.compile(loss="mse", optimizer=optimizer, seed=0, **settings)
    model.to_graph()  # makes the initial weights
    w0 = snapshot(model)
    model.fit(x, y, epochs=epochs, batch_size=len(x), shuffle=False, keep_best=False,
              validation_split=0)
    return x, y, w0, snapshot(model)


def test_sgd_momentum_matches_the_update_rule():
    lr, momentum = 0.1, 0.9
    x, y, w0, w2 = _one_batch_fit("sgd", 2, lr=lr, momentum=momentum)
    w, b = w0["dense_0.W"].astype(np.float64), w0["dense_0.b"].astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        gw, gb = _mse_grad(x, y, w, b)
        vw, vb = momentum * vw + gw, momentum * vb + gb
        w, b = w - lr * vw, b - lr * vb
    np.testing.assert_allclose(w2["dense_0.W"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w2["dense_0.b"], b, rtol=1e-4, atol=1e-5)


def test_adam_matches_the_update_rule():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    x, y, w0, w3 = _one_batch_fit("adam", 3, lr=lr)
    p = [w0["dense_0.W"].astype(np.float64), w0["dense_0.b"].astype(np.float64)]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    for t in range(1, 4):
        grads = _mse_grad(x, y, *p)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(w3["dense_0.W"], p[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(w3["dense_0.b"], p[1], rtol=1e-4, atol=1e-6)


def test_unknown_loss_and_optimizer():
    with pytest.raises(IrkitError, match="unknown loss"):
        Sequential([Dense(1)]).compile(loss="hinge")
    with pytest.raises(IrkitError, match="optimizer must be one of sgd, adam, rmsprop"):
        Sequential([Dense(1)]).compile(optimizer="adagrad")


# ---- determinism and keep-best --------------------------------------------------------------
def _train_with_dropout(seed: int):
    x, y = blobs()
    model = Sequential([Dense(16, activation="relu"), Dropout(0.3, seed=seed), Dense(3)])
    model.compile(optimizer="adam", lr=0.01, seed=seed)
    history = model.fit(x, y, epochs=4, validation_split=0.2, seed=seed)
    return history.history, snapshot(model)


def test_same_seed_same_weights():
    first, second, other = _train_with_dropout(7), _train_with_dropout(7), _train_with_dropout(8)
    assert first[0] == second[0]
    assert same_weights(first[1], second[1])
    assert not same_weights(first[1], other[1])


class RecordWeights(Callback):
    """The weights after each epoch (1-based), straight from the trainer."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, np.ndarray]] = {}

    def on_epoch_end(self, epoch, logs):
        self.after[epoch + 1] = self.model.get_weights()


def _unstable_run(keep_best: bool):
    # a sane learning rate for 4 epochs, then a far too large one: validation loss gets worse
    x, y = blobs()
    model = Sequential([Dense(3)])
    model.compile(optimizer="sgd", lr=0.05, seed=0)
    record = RecordWeights()
    blow_up = LearningRateScheduler(lambda epoch, lr: 0.05 if epoch < 4 else 50.0)
    history = model.fit(x, y, epochs=8, validation_split=0.25, seed=0,
                        callbacks=[blow_up, record], keep_best=keep_best)
    return model, history, record


def test_keep_best_restores_the_best_epoch():
    model, history, record = _unstable_run(keep_best=True)
    losses = history["val_loss"]
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert history.best_epoch < len(losses)  # the test only means something if so
    assert same_weights(snapshot(model), record.after[history.best_epoch])
    assert not same_weights(snapshot(model), record.after[len(losses)])
    # the restored weights are what evaluation and prediction use
    x, y = blobs()
    _, val_idx = train_val_split(len(x), 0.25, 0, y)
    assert model.evaluate(x[val_idx], y[val_idx])["loss"] == pytest.approx(min(losses), rel=1e-5)


def test_without_keep_best_the_last_epoch_stays():
    model, history, record = _unstable_run(keep_best=False)
    assert same_weights(snapshot(model), record.after[len(history["loss"])])


# ---- callbacks --------------------------------------------------------------------------------
def test_early_stopping_stops_early():
    x, y = blobs()
    model = Sequential([Dense(3)])
    model.compile(optimizer="adam", lr=0.05)
    # no improvement is ever big enough: stop after `patience` epochs past the first
    stop = EarlyStopping(monitor="val_loss", patience=2, min_delta=100.0)
    history = model.fit(x, y, epochs=50, validation_split=0.2, callbacks=[stop])
    assert len(history["loss"]) == 3 and stop.stopped_epoch == 3
    # monitoring accuracy in max mode: keeps going while it improves
    patient = EarlyStopping(monitor="accuracy", mode="max", patience=3)
    model2 = Sequential([Dense(3)])
    model2.compile(optimizer="sgd", lr=0.01)
    history2 = model2.fit(x, y, epochs=30, callbacks=[patient])
    assert 4 <= len(history2["loss"]) <= 30
    assert patient.best == max(history2["accuracy"])


class RecordLr(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_epoch_end(self, epoch, logs):
        self.lrs.append(self.model.learning_rate)


def test_learning_rate_scheduler_sets_trainer_lr():
    x, y = blobs()
    model = Sequential([Dense(3)])
    model.compile(optimizer="sgd", lr=0.2)
    record = RecordLr()
    schedule = LearningRateScheduler(lambda epoch, lr: 0.2 * 0.5 ** epoch)
    model.fit(x, y, epochs=4, callbacks=[schedule, record])
    assert record.lrs == pytest.approx([0.2, 0.1, 0.05, 0.025])
    assert model.learning_rate == pytest.approx(0.025)
    # the graph reads lr each step: a schedule of zeros leaves the weights untouched
    frozen = Sequential([Dense(3)], input_shape=(4,))
    frozen.compile(optimizer="sgd", lr=0.2, momentum=0.9)
    frozen.to_graph()
    start = snapshot(frozen)
    frozen.fit(x, y, epochs=2, keep_best=False,
               callbacks=[LearningRateScheduler(lambda epoch, lr: 0.0)])
    assert same_weights(snapshot(frozen), start)


def test_lambda_callback_hooks_are_called():
    x, y = blobs(100)
    calls: dict[str, list] = {k: [] for k in ("train_begin", "epoch_begin", "batch_end",
                                              "epoch_end", "train_end")}
    hooks = LambdaCallback(
        on_train_begin=lambda logs: calls["train_begin"].append(logs),
        on_epoch_begin=lambda epoch, logs: calls["epoch_begin"].append(epoch),
        on_batch_end=lambda batch, logs: calls["batch_end"].append((batch, logs["loss"])),
        on_epoch_end=lambda epoch, logs: calls["epoch_end"].append((epoch, dict(logs))),
        on_train_end=lambda logs: calls["train_end"].append(logs))
    model = Sequential([Dense(3)])
    model.compile()
    history = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.2, callbacks=[hooks])
    assert len(calls["train_begin"]) == 1 and len(calls["train_end"]) == 1
    assert calls["epoch_begin"] == [0, 1, 2]
    batches = -(-80 // 32)
    assert [b for b, _ in calls["batch_end"]] == list(range(batches)) * 3
    assert all(np.isfinite(loss) for _, loss in calls["batch_end"])
    assert [e for e, _ in calls["epoch_end"]] == [0, 1, 2]
    assert calls["epoch_end"][-1][1]["val_loss"] == history["val_loss"][-1]
    assert calls["train_end"][0]["best_epoch"] == history.best_epoch
    with pytest.raises(TypeError, match="on_epoch_ended"):
        LambdaCallback(on_epoch_ended=lambda epoch, logs: None)


# ---- data -----------------------------------------------------------------------------------
def test_train_val_split_is_stratified_and_seeded():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    train, val = train_val_split(len(y), 0.2, 3, y)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    assert np.bincount(y[val]).tolist() == [10, 6, 4]  # 20 % of every class
    assert np.bincount(y[train]).tolist() == [40, 24, 16]
    again = train_val_split(len(y), 0.2, 3, y)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    other = train_val_split(len(y), 0.2, 4, y)
    assert not np.array_equal(np.sort(other[1]), np.sort(val))
    # float targets: a plain random split
    tr, va = train_val_split(100, 0.25, 0, np.linspace(0, 1, 100))
    assert len(va) == 25 and len(tr) == 75
    with pytest.raises(DataError):
        train_val_split(10, 1.0, 0, None)
    with pytest.raises(DataError, match="none to train"):
        train_val_split(10, 0.99, 0, None)


def test_scaler_is_fitted_on_the_training_part_only():
    ds = load_dataset("iris")
    model = Sequential([Normalize("standard"), Dense(3)])
    model.compile(seed=0)
    model.fit(ds.x, ds.y, epochs=1, validation_split=0.3, seed=2)
    train, _ = train_val_split(len(ds.x), 0.3, 2, ds.y)
    shift, scale = fit_scaler(ds.x[train], "standard")
    w = model.get_weights()
    np.testing.assert_allclose(w["normalize_0.shift"], shift, rtol=1e-6)
    np.testing.assert_allclose(w["normalize_0.scale"], scale, rtol=1e-6)
    assert not np.allclose(w["normalize_0.shift"], ds.x.mean(axis=0))
    assert "normalize_0.shift" not in model._graphs.params  # frozen, not trained
    # with validation_data the scaler sees x only
    outside = ds.x + 100.0
    minmax = Sequential([Normalize("minmax"), Dense(3)])
    minmax.compile()
    minmax.fit(ds.x, ds.y, epochs=1, validation_data=(outside, ds.y))
    np.testing.assert_allclose(minmax.get_weights()["normalize_0.shift"], ds.x.min(axis=0))


@pytest.mark.parametrize("where", ["x", "validation x", "regression y"])
def test_nan_is_a_data_error(where):
    x, y = blobs()
    xv, yv = x[:20].copy(), y[:20]
    model = Sequential([Dense(3)])
    model.compile()
    if where == "x":
        x = x.copy()
        x[5, 2] = np.nan
    elif where == "validation x":
        xv[3, 0] = np.inf
    else:
        model = Sequential([Dense(1)])
        model.compile(loss="mse")
        y = y.astype(np.float32)
        y[7] = np.nan
        yv = yv.astype(np.float32)
    with pytest.raises(DataError, match="NaN or inf in row"):
        model.fit(x, y, epochs=1, validation_data=(xv, yv))


def test_nan_in_a_csv_is_a_data_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\nnan,3,1\n")
    with pytest.raises(DataError, match="line 3"):
        load_dataset(str(path))
    path.write_text("a,b,label\n1,2,0\n1,3,-1\n")
    with pytest.raises(DataError, match="negative class label"):
        load_dataset(str(path))


@pytest.mark.parametrize("labels", [[0, 1, 3], [0, 1, -1]])
def test_label_out_of_range_is_a_data_error(labels):
    x, _ = blobs(90)
    y = np.array(labels * 30)
    model = Sequential([Dense(3)])
    model.compile()
    with pytest.raises(DataError, match="out of range for 3 classes"):
        model.fit(x, y, epochs=1)
    good = np.arange(90) % 3
    with pytest.raises(DataError, match="validation data"):
        model.fit(x, good, epochs=1, validation_data=(x, y))


def test_fractional_labels_and_wrong_target_shapes_are_data_errors():
    x, y = blobs(60)
    model = Sequential([Dense(3)])
    model.compile()
    with pytest.raises(DataError, match="integer class labels"):
        model.fit(x, y + 0.5, epochs=1)
    categorical = Sequential([Dense(3)])
    categorical.compile(loss="categorical_crossentropy")
    with pytest.raises(DataError, match="targets shaped like the output"):
        categorical.fit(x, y, epochs=1)  # class labels, not one-hot
