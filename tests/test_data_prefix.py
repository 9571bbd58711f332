"""The data prefix (passes/data_prefix.py): row-wise constant work on the batch input split off
step graphs, and applied once to the staged data by the onnxruntime runner."""

from __future__ import annotations

import irkit.runtimes.onnxruntime as ort_runtime
import numpy as np
import pytest
from irkit.passes.data_prefix import split_data_prefix
from irkit.runtimes.onnxruntime import OrtGraph

from irkit import ops
from irkit.cli.jobs import prepare
from irkit.ir import Graph

N = "N"


def _graph(build) -> Graph:
    g = Graph()
    x = g.add_input("x", np.float32, (N, 4))
    w = g.add_input("w", np.float32, (4, 3))
    g.outputs = [ops.MatMul(build(g, x), w)]
    return g


def _normalize(g, x):
    return ops.Mul(ops.Sub(x, g.constant(np.arange(4, dtype=np.float32))),
                   g.constant(np.full((1, 4), 0.5, np.float32)))


def _run(graph: Graph, feeds: dict) -> np.ndarray:
    return OrtGraph(graph)(feeds)[0]


def test_the_prefix_then_the_rest_gives_the_bits_of_the_whole():
    g = _graph(lambda g, x: ops.Div(g.constant(np.float32(3)), _normalize(g, x)))
    split = split_data_prefix([g], "x")
    assert [n.op_type for n in split.graph.nodes] == ["Sub", "Mul", "Div"]
    rest = split.graphs[0]
    assert [n.op_type for n in rest.nodes] == ["MatMul"]
    assert rest.value("x").shape == (N, 4) and not rest.initializers
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    prepared = _run(split.graph, {"x": x})
    np.testing.assert_array_equal(_run(rest, {"x": prepared, "w": w}),
                                  _run(g, {"x": x, "w": w}))
    assert [n.op_type for n in g.nodes] == ["Sub", "Mul", "Div", "MatMul"]  # left as it was


@pytest.mark.parametrize("build, kept", [
    (lambda g, x: ops.Add(x, g.constant(np.ones((5, 4), np.float32))), 0),  # varies by row
    (lambda g, x: ops.Mul(x, g.add_input("s", np.float32, (4,))), 0),       # not a constant
    (lambda g, x: ops.Add(_normalize(g, x), x), 0),                         # x read twice
    (lambda g, x: ops.Relu(_normalize(g, x)), 2),                           # not row-wise op
    (lambda g, x: ops.Cast(ops.Cast(x, to=11), to=1), 0),                   # changes the type
    (lambda g, x: ops.Sub(_normalize(g, x), g.constant(np.ones((1, 1, 4), np.float32))), 2)],
    ids=["varies-by-row", "not-a-constant", "read-twice", "not-row-wise", "changes-the-type",
         "grows-the-shape"])
def test_the_chain_stops_where_a_row_would_depend_on_more_than_itself(build, kept):
    split = split_data_prefix([_graph(build)], "x")
    assert (0 if split is None else len(split.graph.nodes)) == kept


def test_graphs_share_the_prefix_they_have_in_common():
    a = _graph(_normalize)
    b = _graph(lambda g, x: ops.Add(ops.Sub(x, g.constant(np.arange(4, dtype=np.float32))),
                                    g.constant(np.float32(1))))
    split = split_data_prefix([a, b], "x")
    assert [n.op_type for n in split.graph.nodes] == ["Sub"]
    assert [n.op_type for n in split.graphs[0].nodes] == ["Mul", "MatMul"]
    assert [n.op_type for n in split.graphs[1].nodes] == ["Add", "MatMul"]


@pytest.mark.parametrize("recipe", ["iris_mlp", "digits_cnn"])
def test_training_on_prepared_data_gives_the_bits_of_training_on_raw_data(recipe, monkeypatch):
    """The runner applies a Normalize layer to the staged data once: the same history and
    weights, bit for bit, as steps that normalize every batch."""
    runs = []
    for hoist in (True, False):
        if not hoist:
            monkeypatch.setattr(ort_runtime, "split_data_prefix", lambda graphs, name: None)
        model, _, data = prepare(recipe, {})
        history = model.fit(data.x[:300], data.y[:300], epochs=2, verbose=0)
        assert (model._runner._prefix is not None) == hoist
        runs.append((history.history, model.get_weights(), model.evaluate(data.x, data.y)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
