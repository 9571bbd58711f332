"""The autodiff pass: gradients of composite expressions, summing, un-broadcasting, pruning,
gradients of gradients, errors, and AutodiffPass naming."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from irkit.passes import AutodiffPass, EliminateDeadNodesPass, gradients
from irkit.runtimes.onnxruntime import OrtGraph
from irkit.runtimes.reference import ReferenceRuntime

from irkit import ops
from irkit.errors import IRError, ShapeError, UnsupportedOpError
from irkit.ir import Graph, Value
from irkit.onnx_io import to_onnx
from irkit.ops import registry
from irkit.ops.base import OpDef


def _run_both(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs on the numpy reference, checked against onnxruntime (and the ONNX checker)."""
    graph.verify()
    onnx.checker.check_model(to_onnx(graph, check=False), full_check=True)
    ref = ReferenceRuntime().compile(graph)(feeds)
    got = OrtGraph(graph)(feeds)
    tol = 1e-10 if all(r.dtype == np.float64 for r in ref) else 1e-5
    for v, r, o in zip(graph.outputs, ref, got, strict=True):
        assert r.shape == o.shape, v.name
        np.testing.assert_allclose(o, r, rtol=tol, atol=tol, err_msg=v.name)
    return ref


def _run_reference(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    graph.verify()
    return ReferenceRuntime().compile(graph)(feeds)


def _grad_graph(fn, shapes, dtype=np.float64):
    """Graph with inputs a0, a1, ... of `shapes`, output fn(*inputs) and its gradients."""
    g = Graph("expr")
    ins = [g.add_input(f"a{i}", dtype, s) for i, s in enumerate(shapes)]
    out = fn(*ins)
    grads = gradients(g, out, ins)
    g.outputs = [out, *grads]
    return g, ins, out, grads


def _feeds(shapes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {f"a{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


# ---- composite expressions against torch autograd ------------------------------------------
LABELS = np.array([0, 2, 1], np.int64)

COMPOSITES = {
    "mlp_tanh": (lambda a, b, c: ops.Tanh(ops.Gemm(a, b, c)).sum(),
                 lambda t, a, b, c: t.tanh(a @ b + c).sum(), [(4, 3), (3, 2), (2,)]),
    "sigmoid_square_N1_1C": (lambda a, b: (ops.Sigmoid(a * b + a) ** 2.0).sum(),
                             lambda t, a, b: (t.sigmoid(a * b + a) ** 2).sum(), [(3, 1), (1, 4)]),
    "softmax_div_mean": (lambda a, b: (ops.Softmax(a, axis=-1) / (ops.Exp(b) + 1.0)).mean(),
                         lambda t, a, b: (t.softmax(a, -1) / (t.exp(b) + 1)).mean(),
                         [(2, 5), (5,)]),
    "logsoftmax_gemm_transB": (
        lambda a, b: ops.LogSoftmax(ops.Gemm(a, b, transB=1, alpha=0.5), axis=1).sum(),
        lambda t, a, b: t.log_softmax(0.5 * a @ b.T, 1).sum(), [(3, 4), (5, 4)]),
    "transpose_reshape": (lambda a, b: (a.T.reshape(2, 6) * b).sum(),
                          lambda t, a, b: (a.T.reshape(2, 6) * b).sum(), [(4, 3), (2, 1)]),
    "sqrt_pow_abs": (lambda a, b: ops.Sqrt(a * a + 1.0) - ops.Pow(ops.Abs(b) + 1.0, 1.5),
                     lambda t, a, b: t.sqrt(a * a + 1) - (b.abs() + 1) ** 1.5, [(), ()]),
    "where_concat": (lambda a, b: ops.Where(ops.Greater(a, 0.0), a, b * 2.0).sum()
                     + ops.Concat(a, b, axis=0).mean(),
                     lambda t, a, b: t.where(a > 0, a, b * 2).sum() + t.cat([a, b], 0).mean(),
                     [(3, 2), (3, 2)]),
    "reduce_axes_keepdims": (lambda a, b: (a.mean(axis=1, keepdims=True) * b).sum(axis=0).sum(),
                             lambda t, a, b: (a.mean(1, keepdim=True) * b).sum(0).sum(),
                             [(3, 4), (1, 4)]),
    "unsqueeze_expand": (lambda a, b: (ops.Unsqueeze(a, np.array([0], np.int64))
                                       * ops.Expand(b, np.array([2, 3, 4], np.int64))).sum(),
                         lambda t, a, b: (a.unsqueeze(0) * b.expand(2, 3, 4)).sum(),
                         [(3, 4), (3, 1)]),
    "batched_matmul_vector": (lambda a, b: ops.Sin(ops.MatMul(a, b)).sum(),
                              lambda t, a, b: t.sin(a @ b).sum(), [(2, 3, 4), (4,)]),
    "cross_entropy": (
        lambda a, b: ops.SoftmaxCrossEntropyLoss(ops.MatMul(a, b), a.graph.constant(LABELS)),
        lambda t, a, b: t.nn.functional.cross_entropy(a @ b, t.from_numpy(LABELS)),
        [(3, 4), (4, 3)]),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_gradients_match_torch(name):
    torch = pytest.importorskip("torch")
    fn, torch_fn, shapes = COMPOSITES[name]
    # ORT has no float64 OneHot (used by the cross-entropy gradient): that one is float32
    dtype = np.float32 if name == "cross_entropy" else np.float64
    g, ins, out, grads = _grad_graph(fn, shapes, dtype)
    assert out.shape in ((), (1,)) or all(d == 1 for d in out.shape)
    for x, gx in zip(ins, grads, strict=True):  # inference may leave dims unknown, not wrong
        assert gx.dtype == x.dtype and gx.rank == x.rank
        known = zip(gx.shape, x.shape, strict=True)
        assert all(d is None or d == e for d, e in known), (gx.shape, x.shape)
    feeds = _feeds(shapes, seed=len(name), dtype=dtype)
    value, *got = _run_both(g, feeds)
    tensors = [torch.tensor(feeds[f"a{i}"], requires_grad=True) for i in range(len(shapes))]
    want_value = torch_fn(torch, *tensors)
    want = torch.autograd.grad(want_value, tensors)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(value, want_value.detach().numpy(), rtol=tol, atol=tol)
    for i, (have, expected) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(have, expected.numpy(), rtol=tol, atol=tol,
                                   err_msg=f"{name}: d/da{i}")


# ---- values used twice ---------------------------------------------------------------------
def test_value_used_twice_sums_its_gradients():
    g, (x, y), out, (gx, gy) = _grad_graph(lambda x, y: (x * x + x * y + ops.Exp(x)).sum(),
                                           [(4,), (4,)])
    # x feeds Mul twice, the second Mul and Exp: its gradient is a sum of four terms, summed
    # once (one Sum node), not by a chain of Adds
    assert any(n.op_type == "Sum" and len(n.inputs) == 4 and n.name.startswith("grad/")
               for n in g.nodes)
    feeds = _feeds([(4,), (4,)], seed=1)
    a, b = feeds["a0"], feeds["a1"]
    _, dx, dy = _run_both(g, feeds)
    np.testing.assert_allclose(dx, 2 * a + b + np.exp(a), rtol=1e-12)
    np.testing.assert_allclose(dy, a, rtol=1e-12)


def test_output_used_by_two_nodes_sums_its_gradients():
    def fn(x):
        h = ops.Tanh(x)  # h is read by Mul and by Sin
        return (h * 3.0 + ops.Sin(h)).sum()
    g, _, _, (gx,) = _grad_graph(fn, [(5,)])
    a = _feeds([(5,)], seed=2)["a0"]
    _, dx = _run_both(g, {"a0": a})
    h = np.tanh(a)
    np.testing.assert_allclose(dx, (3 + np.cos(h)) * (1 - h * h), rtol=1e-12)


# ---- un-broadcasting -----------------------------------------------------------------------
@pytest.mark.parametrize("x_shape, y_shape", [
    ((4, 3), (3,)),          # bias add: sum over the batch
    ((3, 1), (1, 4)),        # (N, 1) against (1, C): both sides sum
    ((), (2, 3)),            # a scalar
    ((1, 4), (2, 3, 4)),     # a leading axis and an inner 1
    ((2, 1, 4), (3, 1)),     # inner 1s on both sides, plus a leading axis on one
])
def test_unbroadcast_sums_back_to_each_input_shape(x_shape, y_shape):
    g, (x, y), out, (gx, gy) = _grad_graph(lambda x, y: ((x + y) * (x - y) * 0.5).sum(),
                                           [x_shape, y_shape])
    assert gx.shape == x_shape and gy.shape == y_shape
    feeds = _feeds([x_shape, y_shape], seed=3)
    a, b = feeds["a0"], feeds["a1"]
    _, dx, dy = _run_both(g, feeds)
    # f = sum((a^2 - b^2) / 2) over the broadcast shape: df/da = a summed over broadcast axes
    full = np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_allclose(dx, _sum_to(np.broadcast_to(a, full), a.shape), rtol=1e-12)
    np.testing.assert_allclose(dy, _sum_to(-np.broadcast_to(b, full), b.shape), rtol=1e-12)


def _sum_to(arr: np.ndarray, shape: tuple) -> np.ndarray:
    lead = arr.ndim - len(shape)
    arr = arr.sum(axis=tuple(range(lead))) if lead else arr
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and arr.shape[i] != 1)
    return arr.sum(axis=axes, keepdims=True) if axes else arr


def test_bias_gradient_with_symbolic_batch():
    g = Graph("bias")
    x = g.add_input("x", np.float32, ("N", 3))
    b = g.add_input("b", np.float32, (3,))
    loss = (ops.Relu(x + b) * x).sum()
    gb, gx = gradients(g, loss, [b, x])
    assert gb.shape == (3,) and gx.shape == ("N", 3)
    g.outputs = [gb, gx]
    for n in (1, 6):
        xs = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        bs = np.array([0.1, -0.2, 0.3], np.float32)
        db, dx = _run_both(g, {"x": xs, "b": bs})
        mask = (xs + bs) > 0
        np.testing.assert_allclose(db, (mask * xs).sum(axis=0), rtol=1e-6)
        np.testing.assert_allclose(dx, np.where(mask, 2 * xs + bs, 0.0), rtol=1e-6)


@pytest.mark.parametrize("p_shape", [(None, "T", 3), ("M", "T", 3), (None, None, None)])
def test_unbroadcast_of_dims_unknown_at_build_time(p_shape):
    """A dim unknown when the graph is differentiated may be 1 at run time (a slice of a
    position table, (1, T, C), against a batch (N, T, C)): its gradient is summed in-graph
    there, and the graph differentiated once runs at every batch size."""
    g = Graph("positions")
    x = g.add_input("x", np.float64, ("N", "T", 3))
    p = g.add_input("p", np.float64, p_shape)
    loss = (ops.Tanh(x + p) * x).sum()
    gp, gx = gradients(g, loss, [p, x])
    assert gp.shape == p_shape and gx.shape == ("N", "T", 3)
    g.outputs = [gp, gx]
    rng = np.random.default_rng(5)
    for n, rows in ((1, 1), (4, 1), (7, 1), (4, 4)):
        xs, ps = rng.standard_normal((n, 5, 3)), rng.standard_normal((rows, 5, 3))
        dp, dx = _run_both(g, {"x": xs, "p": ps})
        d = xs * (1 - np.tanh(xs + ps) ** 2)
        np.testing.assert_allclose(dp, _sum_to(d, ps.shape), rtol=1e-12)
        np.testing.assert_allclose(dx, d + np.tanh(xs + ps), rtol=1e-12)


# ---- pruning -------------------------------------------------------------------------------
def test_only_nodes_between_output_and_wrt_are_differentiated(no_gradient_op):
    g = Graph("prune")
    x = g.add_input("x", np.float64, (3, 4))
    y = g.add_input("y", np.float64, (3, 4))
    op = no_gradient_op.op_type
    # neither op has a gradient rule; `scale` does not depend on x, `side` is not read by loss
    scale = ops.apply(g, op, [ops.Exp(y)], name="scale").outputs[0]
    side = ops.apply(g, op, [ops.Neg(x)], name="side").outputs[0]
    loss = (ops.Tanh(x) * scale).sum()
    before = len(g.nodes)
    (gx,) = gradients(g, loss, [x])
    new = g.nodes[before:]
    assert new and all(n.name.startswith("grad/") for n in new)
    g.outputs = [loss, gx, side]
    feeds = _feeds([(3, 4), (3, 4)], seed=4)
    x0, y0 = feeds["a0"], feeds["a1"]
    _, dx, _ = _run_reference(g, {"x": x0, "y": y0})
    np.testing.assert_allclose(dx, (1 - np.tanh(x0) ** 2) * np.exp(y0), rtol=1e-12)


def test_eliminate_dead_nodes_removes_unused_gradient_nodes():
    g = Graph("dead")
    x = g.add_input("x", np.float64, (3,))
    w = g.add_input("w", np.float64, (3,))
    loss = (ops.Exp(x) * w).sum()
    gx, gw = gradients(g, loss, [x, w])
    g.outputs = [gx]  # the gradient for w is not wanted
    gw_nodes = {id(n) for n in g.nodes if n.outputs[0] is gw}
    count = len(g.nodes)
    result = EliminateDeadNodesPass()(g)
    assert result.modified and len(g.nodes) < count
    assert not gw_nodes & {id(n) for n in g.nodes}
    live = {id(v) for v in g.outputs}  # every node left reaches the output
    for node in reversed(g.nodes):
        assert any(id(o) in live for o in node.outputs), node.name
        live.update(id(v) for v in node.inputs if v is not None)
    assert not EliminateDeadNodesPass()(g).modified
    feeds = {"x": np.array([0.0, 1.0, -1.0]), "w": np.array([2.0, 3.0, 4.0])}
    (dx,) = _run_both(g, feeds)
    np.testing.assert_allclose(dx, np.exp(feeds["x"]) * feeds["w"], rtol=1e-12)


def test_gradient_of_an_unrelated_input_is_zero():
    g = Graph("zero")
    x = g.add_input("x", np.float32, (2, 3))
    n = g.add_input("n", np.float32, ("N", 3))
    other = g.add_input("other", np.float32, (2,))
    loss = ops.Exp(x).sum() + n.sum()
    gx, gn, go = gradients(g, loss, [x, n, other])
    g.outputs = [gx, gn, go]
    x0, n0 = np.zeros((2, 3), np.float32), np.ones((4, 3), np.float32)
    _, dn, do = _run_both(g, {"x": x0, "n": n0, "other": np.ones(2, np.float32)})
    np.testing.assert_array_equal(do, np.zeros(2, np.float32))
    np.testing.assert_array_equal(dn, np.ones((4, 3), np.float32))


# ---- gradients of gradients ----------------------------------------------------------------
def test_hessian_vector_product_of_a_small_mlp_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    arrays = {"x": rng.standard_normal((5, 3)), "W1": rng.standard_normal((3, 4)),
              "b1": rng.standard_normal(4), "W2": rng.standard_normal((4, 2)),
              "b2": rng.standard_normal(2), "v1": rng.standard_normal((3, 4)),
              "v2": rng.standard_normal((4, 2))}
    g = Graph("hvp")
    val = {k: g.add_input(k, np.float64, a.shape) for k, a in arrays.items()}
    hidden = ops.Tanh(ops.Gemm(val["x"], val["W1"], val["b1"]))
    out = ops.Gemm(hidden, val["W2"], val["b2"])
    loss = ops.ReduceMean(out * out, keepdims=0)
    gw1, gw2 = gradients(g, loss, [val["W1"], val["W2"]])
    dot = (gw1 * val["v1"]).sum() + (gw2 * val["v2"]).sum()
    hv1, hv2 = gradients(g, dot, [val["W1"], val["W2"]])
    g.outputs = [loss, gw1, gw2, hv1, hv2]
    EliminateDeadNodesPass()(g)
    got = _run_both(g, arrays)

    t = {k: torch.tensor(a, requires_grad=k in ("W1", "W2")) for k, a in arrays.items()}
    t_out = torch.tanh(t["x"] @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    t_loss = (t_out * t_out).mean()
    tg1, tg2 = torch.autograd.grad(t_loss, [t["W1"], t["W2"]], create_graph=True)
    t_dot = (tg1 * t["v1"]).sum() + (tg2 * t["v2"]).sum()
    th1, th2 = torch.autograd.grad(t_dot, [t["W1"], t["W2"]])
    for have, want in zip(got, [t_loss, tg1, tg2, th1, th2], strict=True):
        np.testing.assert_allclose(have, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_second_derivative_of_a_scalar_function():
    g = Graph("d2")
    x = g.add_input("x", np.float64, (4,))
    y = (ops.Sin(x) * x).sum()
    (dy,) = gradients(g, y, [x])
    (d2y,) = gradients(g, dy.sum(), [x])  # the Hessian is diagonal: its row sums are d2y
    g.outputs = [dy, d2y]
    a = np.array([0.1, 0.5, -1.0, 2.0])
    d1, d2 = _run_both(g, {"x": a})
    np.testing.assert_allclose(d1, np.cos(a) * a + np.sin(a), rtol=1e-12)
    np.testing.assert_allclose(d2, 2 * np.cos(a) - a * np.sin(a), rtol=1e-12)


# ---- errors --------------------------------------------------------------------------------
class _NoGradient(OpDef):
    """A test-only op like Identity, with no VJP rule."""

    op_type = "IrkitTestNoGradient"

    def compute(self, node, inputs):
        return [inputs[0]]


@pytest.fixture
def no_gradient_op(monkeypatch):
    """Register the test-only op for one test (the registry is restored afterwards)."""
    opdef = _NoGradient()
    monkeypatch.setitem(registry._REGISTRY, ("", opdef.op_type), opdef)
    return opdef


def test_missing_gradient_rule_names_the_op_and_node(no_gradient_op):
    g = Graph("nograd")
    x = g.add_input("x", np.float32, (2, 3))
    y = g.add_input("y", np.float32, (2, 3))
    blocked = ops.apply(g, no_gradient_op.op_type, [ops.Exp(x)], name="the_blocker").outputs[0]
    assert not no_gradient_op.has_gradient
    loss = (blocked * y).sum()
    (gy,) = gradients(g, loss, [y])  # not on the path from y: no rule needed
    assert gy.shape == (2, 3)
    with pytest.raises(UnsupportedOpError) as err:
        gradients(g, loss, [x])
    message = str(err.value)
    assert "IrkitTestNoGradient" in message and "'the_blocker'" in message
    assert "\n" not in message


def test_non_scalar_output_needs_a_seed():
    g = Graph("vector")
    x = g.add_input("x", np.float32, (3,))
    y = ops.Exp(x)
    with pytest.raises(ShapeError, match="not a scalar"):
        gradients(g, y, [x])
    seed = g.add_input("seed", np.float32, (3,))
    (gx,) = gradients(g, y, [x], seed)
    g.outputs = [gx]
    a, s = np.array([0.0, 1.0, 2.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32)
    (dx,) = _run_both(g, {"x": a, "seed": s})
    np.testing.assert_allclose(dx, np.exp(a) * s, rtol=1e-6)


def test_integer_output_cannot_be_differentiated():
    g = Graph("ints")
    x = g.add_input("x", np.float32, (3,))
    idx = ops.ArgMax(x, axis=0, keepdims=0)
    with pytest.raises(ShapeError, match="not floating"):
        gradients(g, idx, [x])


# ---- AutodiffPass --------------------------------------------------------------------------
def _model() -> Graph:
    g = Graph("model")
    x = g.add_input("x", np.float32, ("N", 3))
    w = g.add_initializer("w", np.arange(6, dtype=np.float32).reshape(3, 2) / 6)
    b = g.add_initializer("b", np.array([0.5, -0.5], np.float32))
    y = ops.Tanh(ops.Gemm(x, w, b))
    g.rename_value(y, "y")
    loss = y.mean()
    g.rename_value(loss, "loss")
    g.outputs = [y, loss]
    return g


def test_autodiff_pass_scalar_output_naming():
    g = _model()
    nodes_before = {n.name for n in g.nodes}
    result = AutodiffPass("loss", ["x", "w", "b"])(g)
    assert result.modified
    assert [v.name for v in g.outputs] == ["y", "loss", "x_grad", "w_grad", "b_grad"]
    assert [v.name for v in g.inputs] == ["x"]  # a scalar needs no cotangent input
    assert {"w", "b"} <= set(g.initializers)
    added = [n for n in g.nodes if n.name not in nodes_before]
    assert added and all(n.name.startswith("grad/") for n in added)
    xs = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], np.float32)
    y, loss, dx, dw, db = _run_both(g, {"x": xs})
    w, b = g.value("w").const, g.value("b").const
    dpre = (1 - np.tanh(xs @ w + b) ** 2) / y.size  # d mean(tanh(z)) / dz
    np.testing.assert_allclose(dx, dpre @ w.T, rtol=1e-5)
    np.testing.assert_allclose(dw, xs.T @ dpre, rtol=1e-5)
    np.testing.assert_allclose(db, dpre.sum(axis=0), rtol=1e-5)


def test_autodiff_pass_non_scalar_output_takes_a_cotangent_input():
    g = _model()
    AutodiffPass("y", ["w", "x"])(g)
    assert [v.name for v in g.inputs] == ["x", "y_grad"]
    cot = g.value("y_grad")
    assert cot.shape == ("N", 2) and cot.dtype == np.float32 and cot.producer is None
    assert [v.name for v in g.outputs][-2:] == ["w_grad", "x_grad"]
    xs = np.array([[0.5, -1.0, 2.0]], np.float32)
    ct = np.array([[2.0, -3.0]], np.float32)
    *_, dw, dx = _run_both(g, {"x": xs, "y_grad": ct})
    w, b = g.value("w").const, g.value("b").const
    dpre = (1 - np.tanh(xs @ w + b) ** 2) * ct
    np.testing.assert_allclose(dw, xs.T @ dpre, rtol=1e-5)
    np.testing.assert_allclose(dx, dpre @ w.T, rtol=1e-5)


def test_autodiff_pass_gradient_that_is_an_input_or_shared_gets_its_own_output():
    g = Graph("sum")
    a = g.add_input("a", np.float32, (2,))
    b = g.add_input("b", np.float32, (2,))
    out = ops.Add(a, b)
    g.rename_value(out, "out")
    g.outputs = [out]
    AutodiffPass("out", ["a", "b"])(g)  # both gradients are the cotangent itself
    assert [v.name for v in g.outputs] == ["out", "a_grad", "b_grad"]
    assert all(v.producer is not None for v in g.outputs)
    ct = np.array([1.0, -2.0], np.float32)
    _, da, db = _run_both(g, {"a": ct, "b": ct, "out_grad": ct})
    np.testing.assert_array_equal(da, ct)
    np.testing.assert_array_equal(db, ct)


def test_autodiff_pass_refuses_computed_values_and_unknown_names():
    g = _model()
    computed = g.nodes[0].outputs[0].name
    with pytest.raises(IRError, match=f"--wrt '{computed}' is computed by node"):
        AutodiffPass("loss", [computed])(g)
    with pytest.raises(IRError, match="no value named 'nope'"):
        AutodiffPass("loss", ["nope"])(_model())


def test_gradient_nodes_and_values_are_prefixed_grad():
    g = _model()
    values_before = {v.name for v in g.values()}
    nodes_before = len(g.nodes)
    gradients(g, g.value("loss"), [g.value("x"), g.value("w")])
    new_nodes = g.nodes[nodes_before:]
    assert new_nodes and all(n.name.startswith("grad/") for n in new_nodes)
    new_values = {v.name for v in g.values()} - values_before
    assert new_values and all(name.startswith("grad/") for name in new_values)


def test_gradients_with_a_custom_scope():
    g = _model()
    nodes_before = len(g.nodes)
    gradients(g, g.value("loss"), [g.value("w")], scope="backward/")
    assert all(n.name.startswith("backward/") for n in g.nodes[nodes_before:])


def test_gradient_values_are_ir_values_of_the_same_graph():
    g = _model()
    grads = gradients(g, g.value("loss"), [g.value("x"), g.value("w"), g.value("b")])
    for gv in grads:
        assert isinstance(gv, Value) and gv.graph is g
    g.verify()


def test_grad_is_linear_in_fan_in():
    """20,000 products of x and w feed one Sum (w read 20,000 times): the gradients are right,
    and building them is linear in the fan-in (a quadratic pass makes this test take minutes;
    issue 9 measured 78 s at this size)."""
    from onnx import TensorProto, helper, numpy_helper

    from irkit.onnx_io import from_onnx
    n = 20_000
    nodes = [helper.make_node("Mul", ["x", "w"], [f"m{i}"]) for i in range(n)]
    nodes += [helper.make_node("Sum", [f"m{i}" for i in range(n)], ["s"]),
              helper.make_node("ReduceSum", ["s"], ["y"], keepdims=0)]
    rng = np.random.default_rng(0)
    w = rng.standard_normal(3)
    proto = helper.make_model(helper.make_graph(
        nodes, "fan_in", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [])],
        [numpy_helper.from_array(w, "w")]), opset_imports=[helper.make_opsetid("", 17)])
    graph = from_onnx(proto)
    AutodiffPass("y", ["x", "w"])(graph)
    x = rng.standard_normal(3)
    # the numpy reference runtime: onnxruntime's own graph optimizer takes a minute here
    run = ReferenceRuntime().compile(graph)
    got = dict(zip([v.name for v in graph.outputs], run({"x": x})))
    np.testing.assert_allclose(got["x_grad"], n * w, rtol=1e-9)
    np.testing.assert_allclose(got["w_grad"], n * x, rtol=1e-9)
    assert sum(node.op_type == "Add" for node in graph.nodes) < 10  # one Sum, no Add chain

