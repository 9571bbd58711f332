"""How Model, History, Dataset and Graph look without Jupyter: short reprs, rich displays
(_repr_html_: tables, the curves as a picture, an SVG of the nodes capped at MAX_NODES), and
summary() printed once. The notebook test (tests/test_notebooks.py) shows them in a kernel."""

from __future__ import annotations

import numpy as np

import irkit
from irkit import nn, ops
from irkit.data import load_dataset
from irkit.ir_display import MAX_NODES

IRIS = load_dataset("iris")


def test_dataset_history_and_model_are_short_and_rich(capsys):
    assert len(repr(IRIS)) < 200 and "150" in repr(IRIS) and "3 classes" in repr(IRIS)
    assert "<table" in IRIS._repr_html_() and "setosa" in IRIS._repr_html_()
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(3)])
    model.compile(lr=0.05)
    history = model.fit(IRIS.x, IRIS.y, epochs=12, batch_size=16, verbose=0)
    assert len(repr(history)) < 300 and len(repr(model)) < 300
    page = history._repr_html_()
    assert "<img src='data:image/png;base64," in page and page.count("<tr>") >= 5
    assert "<table" in model._repr_html_() and "dense_1.W" in model._repr_html_()
    assert model.summary() is None
    printed = capsys.readouterr().out
    assert printed.count("dense_1.W") == 1 and model.summary(print_fn=None) in printed


def _chain(n: int):
    def f(x):
        for _ in range(n):
            x = ops.Relu(x)
        return x
    return irkit.function(f).trace(np.zeros(3, np.float32))


def test_graph_drawing_shows_every_node_up_to_the_cap_then_counts_the_rest():
    small = _chain(20)._repr_html_()
    assert small.count("<rect") == 20 + 1 and "not drawn" not in small  # + the input
    big = _chain(MAX_NODES + 50)._repr_html_()
    assert big.count("<rect") == MAX_NODES + 1
    assert f"the first {MAX_NODES} nodes drawn, 50 more not drawn" in big
