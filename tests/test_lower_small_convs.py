"""LowerSmallConvsPass: small 2-D convolutions (group 1 and depthwise) as matrix products give
onnxruntime's Conv results; larger or other convolutions stay; in a train step the lowered
convolution and its weight gradient share their im2col columns."""

from __future__ import annotations

import numpy as np
import onnx
from irkit.passes import gradients
from irkit.passes.lower_small_convs import LowerSmallConvsPass
from irkit.runtimes.onnxruntime import make_session, session_bytes

from irkit import ops
from irkit.ir import Graph
from irkit.onnx_io import to_onnx

RNG = np.random.default_rng(5)


def _convs() -> tuple[Graph, dict]:
    """x (N, 4, 4, 4) -> Conv 3x3 stride 2 with bias (2x2 out) -> depthwise 3x3 pad 1 (2x2)
    -> Relu; x -> Conv 3x3 pad 1 (4x4 = 16 out); x -> a group-2 Conv (not lowered)."""
    g = Graph("convs")
    x = g.add_input("x", np.float32, ("N", 4, 4, 4))
    w = {k: g.constant(RNG.normal(size=s).astype(np.float32)) for k, s in (
        ("a", (6, 4, 3, 3)), ("d", (6, 1, 3, 3)), ("b", (5, 4, 3, 3)), ("grp", (4, 2, 3, 3)))}
    bias = g.constant(RNG.normal(size=(6,)).astype(np.float32))
    a = ops.Conv(x, w["a"], bias, strides=[2, 2], pads=[1, 1, 1, 1])
    d = ops.Conv(a, w["d"], group=6, pads=[1, 1, 1, 1])
    b = ops.Conv(x, w["b"], pads=[1, 1, 1, 1])
    kept = ops.Conv(x, w["grp"], group=2, pads=[1, 1, 1, 1])
    g.outputs = [ops.Relu(d), b, kept]
    for v, name in zip(g.outputs, ("y", "z", "k"), strict=True):
        g.rename_value(v, name)
    return g, {"x": RNG.normal(size=(3, 4, 4, 4)).astype(np.float32)}


def test_lowered_convs_equal_onnxruntime_conv():
    g, feeds = _convs()
    want = make_session(to_onnx(g, check=False).SerializeToString()).run(None, feeds)
    lowered = g.copy()
    assert LowerSmallConvsPass()(lowered).modified
    lowered.verify()
    convs = [n for n in lowered.nodes if n.op_type == "Conv"]
    assert [n.attributes.get("group") for n in convs] == [2]  # only the grouped one stays
    assert [v.name for v in lowered.outputs] == ["y", "z", "k"]
    got = make_session(to_onnx(lowered, check=False).SerializeToString()).run(None, feeds)
    for have, expect in zip(got, want, strict=True):
        np.testing.assert_allclose(have, expect, rtol=1e-5, atol=1e-5)


def test_train_step_shares_the_columns():
    """The forward's columns and the weight gradient's are one computation after the
    session's lowering (one MatMul by the constant placement matrix, not two)."""
    g = Graph("step")
    x = g.add_input("x", np.float32, (2, 3, 4, 4))
    w = g.add_input("w", np.float32, (5, 3, 3, 3))
    loss = ops.ReduceSum(ops.Mul(ops.Conv(x, w, strides=[2, 2], pads=[1, 1, 1, 1]),
                                 ops.Conv(x, w, strides=[2, 2], pads=[1, 1, 1, 1])), keepdims=0)
    (dw,) = gradients(g, loss, [w])
    g.outputs = [loss, dw]
    model = onnx.load_from_string(session_bytes(g))
    names = {i.name for i in model.graph.initializer}
    placements = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in names]
    assert len(placements) == 1 and not any(n.op_type == "Conv" for n in model.graph.node)
    feeds = {"x": RNG.normal(size=(2, 3, 4, 4)).astype(np.float32),
             "w": RNG.normal(size=(5, 3, 3, 3)).astype(np.float32)}
    got = make_session(model.SerializeToString()).run(None, feeds)
    want = make_session(to_onnx(g, check=False).SerializeToString()).run(None, feeds)
    for have, expect in zip(got, want, strict=True):
        np.testing.assert_allclose(have, expect, rtol=1e-4, atol=1e-4)
