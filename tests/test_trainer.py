"""Trainer: one step equals a numpy SGD step; the model's arrays are not touched in place."""

from __future__ import annotations

import numpy as np

from irkit.nn import Dense, Sequential
from irkit.train import SGD, ModuleModel, Trainer, get_loss


def _numpy_step(w: dict, x: np.ndarray, y: np.ndarray, lr: float) -> dict:
    w1, b1, w2, b2 = (w[k].astype(np.float64) for k in
                      ("dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"))
    z = x @ w1 + b1
    h = np.maximum(z, 0)
    s = h @ w2 + b2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(s.shape[1])[y]) / len(x)
    dh = d @ w2.T * (z > 0)
    grads = {"dense_0.W": x.T @ dh, "dense_0.b": dh.sum(0), "dense_1.W": h.T @ d,
             "dense_1.b": d.sum(0)}
    return {k: w[k] - lr * grads[k] for k in grads}


def test_train_step_matches_numpy_and_leaves_model_arrays_alone():
    model = ModuleModel(Sequential([Dense(16, "relu"), Dense(3)]), (4,), seed=2)
    before = {k: v.copy() for k, v in model.weights().items()}
    arrays = dict(model.weights())  # the very arrays the model holds
    trainer = Trainer(model, get_loss("cross_entropy"), SGD(lr=0.5))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    expected = _numpy_step(before, x.astype(np.float64), y, 0.5)
    trainer.train_step(x, y)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(arr, before[name], err_msg=f"{name} changed in place")
    got = trainer.current_weights()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    expected2 = _numpy_step(got, x.astype(np.float64), y, 0.5)
    trainer.train_step(x, y)  # the second step reads the other buffer set
    for name, value in trainer.current_weights().items():
        np.testing.assert_allclose(value, expected2[name], rtol=1e-5, atol=1e-6)
