"""LowerSoftmaxCrossEntropyPass: the lowered loss gives what onnxruntime's own function form of
SoftmaxCrossEntropyLoss gives, with fewer kernels, and cases it does not handle stay as they are."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.passes.lower_losses import LowerSoftmaxCrossEntropyPass
from irkit.runtimes.onnxruntime import make_session, session_bytes
from irkit.runtimes.reference import ReferenceRuntime

from irkit import ops
from irkit.ir import Graph
from irkit.onnx_io import to_onnx

RNG = np.random.default_rng(3)
SCORES = RNG.normal(size=(6, 4)).astype(np.float32) * 3
LABELS = np.array([0, 3, 1, 1, 2, 0], np.int64)


def _loss_graph(reduction: str, log_prob: bool, **extra) -> Graph:
    g = Graph("ce")
    x = g.add_input("x", np.float32, ("N", 4))
    t = g.add_input("t", np.int64, ("N",))
    inputs = [ops.Exp(x) if extra.pop("exp", False) else x, t, *extra.pop("weights", [])]
    loss, logp = ops.SoftmaxCrossEntropyLoss(*inputs, reduction=reduction, _num_outputs=2,
                                             **extra)
    g.rename_value(loss, "loss")
    g.outputs = [loss] + ([ops.Mul(logp, 2.0)] if log_prob else [])
    return g


def _function_form(g: Graph) -> list[np.ndarray]:
    """onnxruntime running the op as it is (its ONNX function, inlined)."""
    session = make_session(to_onnx(g, check=False).SerializeToString())
    return session.run(None, {"x": SCORES, "t": LABELS})


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("log_prob", [False, True])
def test_lowered_loss_equals_the_op(reduction, log_prob):
    g = _loss_graph(reduction, log_prob)
    want = _function_form(g)
    reference = ReferenceRuntime().compile(g)({"x": SCORES, "t": LABELS})
    lowered = g.copy()
    assert LowerSoftmaxCrossEntropyPass()(lowered).modified
    lowered.verify()
    ops_left = [n.op_type for n in lowered.nodes]
    assert "SoftmaxCrossEntropyLoss" not in ops_left and "LogSoftmax" in ops_left
    assert [v.name for v in lowered.outputs] == [v.name for v in g.outputs]
    got = make_session(session_bytes(lowered)).run(None, {"x": SCORES, "t": LABELS})
    for a, b, r in zip(got, want, reference, strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit with onnxruntime's function form
        np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-6)


def test_session_bytes_lower_a_copy_and_fewer_kernels_run():
    g = _loss_graph("mean", False, exp=True)
    before = [n.op_type for n in g.nodes]
    data = session_bytes(g)
    assert [n.op_type for n in g.nodes] == before  # the caller's graph is left as it is
    import onnx
    lowered = onnx.load_from_string(data)
    assert "SoftmaxCrossEntropyLoss" not in {n.op_type for n in lowered.graph.node}
    # the function form inlines into 11 kernels; the lowered loss is 5
    assert len(lowered.graph.node) == len(g.nodes) - 1 + 5


@pytest.mark.parametrize("case", ["weights", "ignore_index", "rank3"])
def test_other_cases_are_left_alone(case):
    if case == "rank3":
        g = Graph("ce3")
        x = g.add_input("x", np.float32, ("N", 4, 2))
        t = g.add_input("t", np.int64, ("N", 2))
        g.outputs = [ops.SoftmaxCrossEntropyLoss(x, t, reduction="mean")]
    elif case == "weights":
        g = _loss_graph("mean", False, weights=[np.ones(4, np.float32)])
    else:
        g = _loss_graph("mean", False, ignore_index=1)
    assert not LowerSoftmaxCrossEntropyPass()(g).modified
    assert "SoftmaxCrossEntropyLoss" in {n.op_type for n in g.nodes}
