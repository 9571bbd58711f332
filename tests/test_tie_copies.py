"""TieCopiesPass (passes/tie_copies.py): an exporter's untied copy of a weight is read as that
weight again, the graph computing what it computed (onnxruntime before and after), and what
is not a copy of a weight is left alone."""

from __future__ import annotations

import json

import numpy as np
from irkit.passes.tie_copies import MIN_ELEMENTS, TieCopiesPass, tie_copies
from irkit.runtimes.onnxruntime import OrtGraph

from irkit import ops
from irkit.ir import Graph
from irkit.signature import META_TIED

V, D = 40, 8  # a table of V rows of D: 320 elements, above MIN_ELEMENTS


def _lm(table: np.ndarray, head: np.ndarray) -> tuple[Graph, dict]:
    """A tiny LM: ids -> Gather(table) -> MatMul(head), head (D, V) meant as table's T."""
    g = Graph("lm")
    ids = g.add_input("ids", np.int64, ("N",))
    t = g.add_initializer("wte", table)
    h = g.add_initializer("val_9", head)
    g.outputs = [ops.MatMul(ops.Gather(t, ids, axis=0), h)]
    return g, {"ids": np.array([0, 3, 7, 39], np.int64)}


def _table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((V, D)).astype(np.float32)


def test_a_transposed_copy_becomes_a_transpose_of_the_table():
    table = _table()
    g, feeds = _lm(table, np.ascontiguousarray(table.T))
    before = OrtGraph(g)(feeds)[0]
    assert TieCopiesPass()(g).modified
    g.verify()
    assert "val_9" not in g.initializers and list(g.initializers) == ["wte"]
    node = g.value("val_9").producer
    assert node.op_type == "Transpose" and node.inputs[0].name == "wte"
    np.testing.assert_array_equal(OrtGraph(g)(feeds)[0], before)
    assert json.loads(g.metadata[META_TIED]) == [["val_9", "wte", True]]
    assert not TieCopiesPass()(g).modified


def test_a_plain_copy_is_replaced_and_the_gathered_table_is_kept():
    g = Graph("copies")
    x = g.add_input("x", np.float32, ("N", V))
    table = _table(1)
    first = g.add_initializer("dense", np.ascontiguousarray(table))  # read by MatMul, first
    second = g.add_initializer("emb", np.array(table))               # read by Gather
    ids = g.add_input("ids", np.int64, ("N",))
    g.outputs = [ops.MatMul(x, first), ops.Gather(second, ids, axis=0)]
    feeds = {"x": np.ones((2, V), np.float32), "ids": np.array([1, 2], np.int64)}
    before = OrtGraph(g)(feeds)
    assert tie_copies(g) == [("dense", "emb", False)]
    g.verify()
    assert list(g.initializers) == ["emb"]
    for a, b in zip(OrtGraph(g)(feeds), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_what_is_not_an_untied_weight_stays():
    """Fills of one value, tensors below MIN_ELEMENTS, running statistics, graph outputs and
    near-copies (one bit differs) are not tied."""
    table = _table(2)
    near = np.ascontiguousarray(table.T)
    near.view(np.uint32)[3, 5] ^= 1  # one bit off
    cases = [(np.zeros((V, D), np.float32), np.zeros((D, V), np.float32)),  # a fill
             (table[:10, :4], np.ascontiguousarray(table[:10, :4].T)),         # 40 elements
             (table, near)]
    assert 10 * 4 < MIN_ELEMENTS
    for a, b in cases:
        g, _ = _lm(a, b)
        assert tie_copies(g) == [] and len(g.initializers) == 2
    g = Graph("bn")
    x = g.add_input("x", np.float32, ("N", V * D, 2))
    stats = _table(3).ravel()
    mean, var = g.add_initializer("mean", stats), g.add_initializer("var", np.abs(stats) + 1)
    copy = g.add_initializer("copy", np.array(stats))
    scale, bias = g.add_initializer("scale", np.abs(stats)), g.add_initializer("bias", stats * 2)
    y = ops.BatchNormalization(x, scale, bias, mean, var)
    read = g.add_initializer("read", _table(4))  # read by a node; its transpose is an output
    g.outputs = [ops.Add(y, ops.Reshape(copy, g.constant(np.array([1, -1, 1], np.int64)))),
                 g.add_initializer("out", np.ascontiguousarray(_table(4).T)), ops.Exp(read)]
    assert tie_copies(g) == []


def test_inspect_and_count_params_see_one_tensor_and_say_what_was_tied(tmp_path):
    """A file with an untied copy (as an exporter writes it): `irkit inspect` counts the
    table once and prints one note naming the tie; load_model counts it once too."""
    from cli_checks import cli

    from irkit.onnx_io import save
    from irkit.train.loading import load_model
    table = _table(5)
    g, _ = _lm(table, np.ascontiguousarray(table.T))
    path = str(tmp_path / "lm.onnx")
    save(g, path)
    result = cli("inspect", path)
    assert result.exit_code == 0, result.output
    assert f"parameters: {V * D} in 1 tensors" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notes == [notes[0]] and "val_9 = Transpose(wte)" in notes[0]
    assert load_model(path).count_params() == V * D
