"""Softmax (or LogSoftmax) in front of a cross-entropy loss and Sigmoid in front of binary
cross-entropy: these losses take logits, so the step graph feeds them the activation's input;
inference keeps the activation. Without this, Iris validation loss plateaued at 0.55."""

from __future__ import annotations

import numpy as np
import pytest

import irkit
from irkit import nn
from irkit.data import load_dataset


def _fit(activation, loss="sparse_categorical_crossentropy", y=None, units=3, epochs=150):
    ds = load_dataset("iris")
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(16, activation="relu"),
                              nn.Dense(units, activation=activation)])
    model.compile(optimizer="adam", loss=loss, lr=0.01)
    target = ds.y if y is None else y
    history = model.fit(ds.x, target, epochs=epochs, batch_size=16, verbose=0, seed=1)
    return model, history, ds.x, target


@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_softmax_before_sparse_ce_trains_as_well_as_logits(activation):
    _, plain, _, _ = _fit(None)
    model, history, x, y = _fit(activation)
    assert min(plain["val_loss"]) < 0.05  # the issue measured 0.003 without, 0.55 with
    assert min(history["val_loss"]) == pytest.approx(min(plain["val_loss"]), rel=1e-3)
    out = model.predict(x)
    if activation == "softmax":  # inference keeps the activation: rows are probabilities
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
        probabilities = out
    else:
        probabilities = np.exp(out)
    # the loss evaluate() reports is the cross-entropy of the probabilities predict() gives
    want = -np.log(probabilities[np.arange(len(y)), y]).mean()
    assert model.evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-4)


def test_the_train_graph_feeds_logits_to_the_loss():
    model, _, x, _ = _fit("softmax", epochs=1)
    graphs = model.prepare(x)
    for graph in (graphs.train, graphs.eval):
        assert "Softmax" not in {n.op_type for n in graph.nodes}
    assert "Softmax" in {n.op_type for n in model.to_graph().nodes}


def test_sigmoid_before_binary_crossentropy_loss_and_accuracy():
    ds = load_dataset("iris")
    y = (ds.y == 2).astype(np.float32).reshape(-1, 1)  # virginica or not
    model, history, x, _ = _fit("sigmoid", "binary_crossentropy", y, units=1, epochs=15)
    p = model.predict(x)
    assert ((p > 0) & (p < 1)).all()
    p64 = p.astype(np.float64)
    bce = -(y * np.log(p64) + (1 - y) * np.log(1 - p64)).mean()
    figures = model.evaluate(x, y)
    assert figures["loss"] == pytest.approx(bce, rel=1e-3)
    # accuracy thresholds the probability at 0.5 (the logit at 0), not the probability at 0
    assert figures["accuracy"] == pytest.approx(((p > 0.5) == (y > 0.5)).mean())
    assert figures["accuracy"] > 0.9 > (y > 0.5).mean()
