"""Gradient checks of every op with a VJP, driven by one table (`CASES` in gradient_cases.py).

Each row names an op, its inputs (float inputs to differentiate, integer label inputs,
constants), attributes and the same expression in torch. For each row a float64 graph
`loss = sum_i sum(out_i * W_i)` (fixed random W) gets its gradient subgraph from
`irkit.passes.gradients`, and the gradients are checked
  1. against central differences along a random direction (numpy reference runtime),
  2. on onnxruntime against the reference runtime (same graph, exported to ONNX),
  3. against torch autograd, first and second order, where torch is installed,
  4. at second order: gradients of `sum(grad * U)` against central differences,
and the exported graph passes `onnx.checker.check_model(full_check=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from conftest import ort_matches_reference, reference_outputs, stable_seed
from gradient_cases import CASES, DOUBLE, Case, K, X, case_inputs, f32

from irkit import ops, passes
from irkit.ir import Graph, Value
from irkit.onnx_io import to_onnx

gradients = passes.gradients

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch comparisons skip
    torch = F = None

FD_EPS, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8
TORCH_RTOL, TORCH_ATOL = 1e-9, 1e-11


# ---- building and running one row --------------------------------------------------------------
@dataclass
class Built:
    graph: Graph
    feeds: dict[str, np.ndarray]
    wrt: list[Value]            # the differentiated inputs, in row order
    n_outs: int                 # graph outputs: [loss, *op outputs, *grads (, s, *ds/dx)]
    weights: list[np.ndarray]   # W_i of the loss
    us: list[np.ndarray]        # U_j of the second-order scalar s


def _apply(c: Case, graph: Graph, dtype, rng) -> tuple[list[Value], dict, list[Value]]:
    call_args, feeds, wrt = case_inputs(c, graph, dtype, rng)
    outs = c.build(*call_args) if c.build else getattr(ops, c.op)(*call_args, **c.attrs)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    return [o for o in outs if o.dtype.kind == "f"], feeds, wrt


def _as_outputs(graph: Graph, values: list[Value]) -> list[Value]:
    """Graph outputs must be node outputs, each once: wrap inputs, constants and repeats."""
    result: list[Value] = []
    for v in values:
        if v.producer is None or v in result:
            v = ops.Identity(v)
        result.append(v)
    return result


def build(c: Case, dtype=np.float64, second_order: bool = False) -> Built:
    """The row's graph with the loss, its gradients (and, optionally, second-order terms)."""
    seed = stable_seed(c.id + repr(sorted(c.attrs.items())))  # the same on every run
    probe = Graph("probe")  # the op alone, to learn its output shapes for the loss weights
    outs, feeds, _ = _apply(c, probe, dtype, np.random.default_rng(seed))
    probe.outputs = _as_outputs(probe, outs)
    shapes = [r.shape for r in reference_outputs(probe, feeds)]

    rng = np.random.default_rng(seed)
    graph = Graph(c.id.replace("-", "_"))
    outs, feeds, wrt = _apply(c, graph, dtype, rng)
    weights = [rng.standard_normal(s) for s in shapes]
    loss = None
    for o, w in zip(outs, weights, strict=True):
        term = ops.ReduceSum(ops.Mul(o, graph.constant(w.astype(o.dtype))), keepdims=0)
        loss = term if loss is None else ops.Add(loss, term)
    grads = gradients(graph, loss, wrt)
    extra: list[Value] = []
    us = [rng.standard_normal(feeds[x.name].shape) for x in wrt]
    if second_order:  # s = sum_j sum(grad_j * U_j); ds/dx_j
        s = None
        for g, u in zip(grads, us, strict=True):
            term = ops.ReduceSum(ops.Mul(g, graph.constant(u.astype(dtype))), keepdims=0)
            s = term if s is None else ops.Add(s, term)
        extra = [s, *gradients(graph, s, wrt)]
    graph.outputs = _as_outputs(graph, [loss, *outs, *grads, *extra])
    graph.verify()
    return Built(graph, feeds, wrt, 1 + len(outs), weights, us)


def _directional_fd(b: Built, out_index: int, grad_indices: range) -> None:
    """d out / d x_j along a random v_j by central differences, against sum(grad_j * v_j)."""
    rng = np.random.default_rng(7)
    base = reference_outputs(b.graph, b.feeds)
    for x, gi in zip(b.wrt, grad_indices, strict=True):
        v = rng.standard_normal(b.feeds[x.name].shape)
        plus, minus = dict(b.feeds), dict(b.feeds)
        plus[x.name] = b.feeds[x.name] + FD_EPS * v
        minus[x.name] = b.feeds[x.name] - FD_EPS * v
        f_plus = reference_outputs(b.graph, plus)[out_index]
        f_minus = reference_outputs(b.graph, minus)[out_index]
        numeric = float((f_plus - f_minus) / (2 * FD_EPS))
        analytic = float(np.sum(base[gi] * v))
        assert base[gi].shape == v.shape, f"gradient of {x.name} has the wrong shape"
        assert abs(analytic - numeric) <= FD_RTOL * max(abs(numeric), abs(analytic)) + FD_ATOL, \
            f"d/d{x.name}: autodiff {analytic!r} vs central differences {numeric!r}"


def _params() -> list:
    """The rows as pytest params with unique ids (a repeated id gets #2, #3, ...)."""
    seen: dict[str, int] = {}
    params = []
    for c in CASES:
        seen[c.id] = seen.get(c.id, 0) + 1
        params.append(pytest.param(c, id=c.id if seen[c.id] == 1 else f"{c.id}#{seen[c.id]}"))
    return params


PARAMS = _params()


@pytest.mark.parametrize("c", PARAMS)
def test_gradient_matches_central_differences(c: Case) -> None:
    b = build(c)
    _directional_fd(b, 0, range(b.n_outs, b.n_outs + len(b.wrt)))


@pytest.mark.parametrize("c", [p for p in PARAMS if p.values[0].second_order])
def test_second_order_matches_central_differences(c: Case) -> None:
    b = build(c, second_order=True)
    n = len(b.wrt)
    s_index = b.n_outs + n
    _directional_fd(b, s_index, range(s_index + 1, s_index + 1 + n))


@pytest.mark.parametrize("c", PARAMS)
def test_onnxruntime_matches_reference(c: Case) -> None:
    b = build(c, dtype=c.ort_dtype)
    ort_matches_reference(b.graph, b.feeds)


@pytest.mark.parametrize("c", PARAMS)
def test_export_passes_full_check(c: Case) -> None:
    b = build(c, dtype=c.ort_dtype, second_order=c.second_order)
    onnx.checker.check_model(to_onnx(b.graph, check=False), full_check=True)


@pytest.mark.parametrize("c", PARAMS)
def test_matches_torch(c: Case) -> None:
    pytest.importorskip("torch")
    if c.torch is None:
        pytest.skip(f"no torch expression for {c.id}")
    b = build(c)
    got = reference_outputs(b.graph, b.feeds)
    args, leaves = [], []
    for a, value in zip([a for a in c.args if not isinstance(a, K)], b.feeds.values(), strict=True):
        t = torch.tensor(value, requires_grad=isinstance(a, X))
        args.append(t)
        if isinstance(a, X):
            leaves.append(t)
    outs = c.torch(*args)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    assert len(outs) == b.n_outs - 1, "the torch expression gives a different number of outputs"
    loss = sum((o * torch.tensor(w)).sum() for o, w in zip(outs, b.weights, strict=True))
    grads = torch.autograd.grad(loss, leaves, create_graph=True)
    for mine, theirs in zip(got[1:], [*outs, *grads], strict=True):
        np.testing.assert_allclose(mine, _numpy(theirs), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    if not c.second_order:
        return
    b2 = build(c, second_order=True)
    got2 = reference_outputs(b2.graph, b2.feeds)
    s = sum((g * torch.tensor(u)).sum() for g, u in zip(grads, b2.us, strict=True))
    hs = [None] * len(leaves)
    if s.requires_grad:  # else every gradient is constant and the second order is zero
        hs = torch.autograd.grad(s, leaves, allow_unused=True)
    for j, (mine, leaf, theirs) in enumerate(zip(got2[-len(leaves):], leaves, hs, strict=True)):
        want = np.zeros(leaf.shape) if theirs is None else _numpy(theirs)
        np.testing.assert_allclose(mine, want, rtol=TORCH_RTOL, atol=1e-10,
                                   err_msg=f"second order, input {j}")


def _numpy(t) -> np.ndarray:
    """A torch tensor as numpy (torch's lazy zero tensors included)."""
    return (t.detach() + torch.zeros(t.shape, dtype=t.dtype)).numpy()


# ---- coverage ---------------------------------------------------------------------------------
def test_every_op_with_a_gradient_has_a_row() -> None:
    """Adding a differentiable op without a row here fails (and so does a row for no op)."""
    covered = {c.op for c in CASES}
    need = {o.op_type for o in ops.all_ops() if o.has_gradient and o.differentiable}
    assert not need - covered, f"ops with a VJP but no gradient-table row: {sorted(need - covered)}"
    assert not covered - need, f"rows for ops without a VJP: {sorted(covered - need)}"


NOT_DIFFERENTIABLE_YET: set[str] = set()


def test_ops_without_gradient_are_listed() -> None:
    """Differentiable ops that still lack a VJP are exactly the known list."""
    missing = {o.op_type for o in ops.all_ops() if not o.has_gradient}
    assert missing == NOT_DIFFERENTIABLE_YET


# ---- second order through a whole model -----------------------------------------------------
MLP_SHAPES = {"w1": (6, 5), "b1": (6,), "w2": (6, 4), "b2": (4,), "w3": (4, 3), "b3": (3,)}


def _mlp_hvp_graph() -> tuple[Graph, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """loss = cross-entropy of a 5-6-4-3 Tanh/Relu MLP + 0.01 ||w1||^2; outputs
    [loss, *dloss/dp, *Hv] for params p and a fixed direction v."""
    rng = np.random.default_rng(11)
    graph = Graph("mlp_hvp")
    x = graph.add_input("x", np.float64, (8, 5))
    labels = graph.add_input("labels", np.int64, (8,))
    p = {k: graph.add_input(k, np.float64, s) for k, s in MLP_SHAPES.items()}
    h = ops.Tanh(ops.Gemm(x, p["w1"], p["b1"], transB=1))
    h = ops.Relu(ops.Gemm(h, p["w2"], p["b2"]))
    logits = ops.Gemm(h, p["w3"], p["b3"])
    penalty = ops.ReduceSum(ops.Mul(p["w1"], p["w1"]), keepdims=0)
    loss = ops.Add(ops.SoftmaxCrossEntropyLoss(logits, labels), ops.Mul(penalty, 0.01))
    grads = gradients(graph, loss, list(p.values()))
    v = {k: rng.standard_normal(s) for k, s in MLP_SHAPES.items()}
    s = None
    for g, k in zip(grads, p, strict=True):
        term = ops.ReduceSum(ops.Mul(g, graph.constant(v[k])), keepdims=0)
        s = term if s is None else ops.Add(s, term)
    hvp = gradients(graph, s, list(p.values()))
    graph.outputs = _as_outputs(graph, [loss, *grads, *hvp])
    feeds = {"x": rng.standard_normal((8, 5)), "labels": rng.integers(0, 3, 8)}
    feeds.update({k: rng.standard_normal(s) * 0.7 for k, s in MLP_SHAPES.items()})
    return graph, feeds, v


def test_mlp_hessian_vector_product_matches_central_differences() -> None:
    graph, feeds, v = _mlp_hvp_graph()
    n = len(MLP_SHAPES)
    base = reference_outputs(graph, feeds)
    plus = {k: feeds[k] + FD_EPS * v[k] if k in v else feeds[k] for k in feeds}
    minus = {k: feeds[k] - FD_EPS * v[k] if k in v else feeds[k] for k in feeds}
    g_plus = reference_outputs(graph, plus)[1:1 + n]
    g_minus = reference_outputs(graph, minus)[1:1 + n]
    for hv, gp, gm in zip(base[1 + n:], g_plus, g_minus, strict=True):
        np.testing.assert_allclose(hv, (gp - gm) / (2 * FD_EPS), rtol=1e-5, atol=1e-7)
    ort_matches_reference(graph, feeds)


def test_mlp_hessian_vector_product_matches_torch_double_backward() -> None:
    pytest.importorskip("torch")
    graph, feeds, v = _mlp_hvp_graph()
    got = reference_outputs(graph, feeds)
    t = {k: torch.tensor(a, requires_grad=k in v) for k, a in feeds.items()}
    h = torch.tanh(t["x"] @ t["w1"].T + t["b1"])
    h = torch.relu(h @ t["w2"] + t["b2"])
    loss = F.cross_entropy(h @ t["w3"] + t["b3"], t["labels"]) + 0.01 * (t["w1"] ** 2).sum()
    params = [t[k] for k in MLP_SHAPES]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    s = sum((g * torch.tensor(v[k])).sum() for g, k in zip(grads, MLP_SHAPES, strict=True))
    hvp = torch.autograd.grad(s, params)
    want = [loss, *grads, *hvp]
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(mine, _numpy(theirs), rtol=TORCH_RTOL, atol=TORCH_ATOL)


# ---- LayerNormalization's statistics outputs (float32 by ONNX's rules) ------------------------
def _layer_norm_stats_graph() -> tuple[Graph, dict[str, np.ndarray], list[np.ndarray]]:
    """loss = sum(y W0) + sum(mean W1) + sum(inv_std W2) of a float64 LayerNormalization; the
    weights of the float32 statistics are float32-exact. Outputs [loss, dx, dscale, dbias]."""
    rng = np.random.default_rng(5)
    graph = Graph("layer_norm_stats")
    x, scale, bias = (graph.add_input(n, np.float64, s) for n, s in
                      (("x", (3, 2, 4)), ("scale", (2, 4)), ("bias", (2, 4))))
    outs = ops.LayerNormalization(x, scale, bias, axis=1, _num_outputs=3)
    weights = [rng.standard_normal(o.shape).astype(o.dtype).astype(np.float64) for o in outs]
    loss = None
    for o, w in zip(outs, weights, strict=True):
        o = o if o.dtype == np.float64 else ops.Cast(o, to=DOUBLE)
        term = ops.ReduceSum(ops.Mul(o, graph.constant(w)), keepdims=0)
        loss = term if loss is None else ops.Add(loss, term)
    graph.outputs = _as_outputs(graph, [loss, *gradients(graph, loss, [x, scale, bias])])
    feeds = {"x": rng.standard_normal((3, 2, 4)) * 2 + 1, "scale": rng.standard_normal((2, 4)),
             "bias": rng.standard_normal((2, 4))}
    return graph, feeds, weights


def test_layer_normalization_statistics_outputs_gradient() -> None:
    graph, feeds, _ = _layer_norm_stats_graph()
    got = reference_outputs(graph, feeds)
    v = np.random.default_rng(1).standard_normal(feeds["x"].shape)
    eps = 1e-3  # the statistics are float32: a larger step keeps their rounding out of the way
    plus = reference_outputs(graph, {**feeds, "x": feeds["x"] + eps * v})[0]
    minus = reference_outputs(graph, {**feeds, "x": feeds["x"] - eps * v})[0]
    np.testing.assert_allclose(np.sum(got[1] * v), (plus - minus) / (2 * eps), rtol=1e-3)
    ort_matches_reference(graph, feeds)


def test_layer_normalization_statistics_outputs_match_torch() -> None:
    pytest.importorskip("torch")
    graph, feeds, weights = _layer_norm_stats_graph()
    got = reference_outputs(graph, feeds)
    t = {k: torch.tensor(a, requires_grad=True) for k, a in feeds.items()}
    mean = t["x"].mean((1, 2), keepdim=True)
    inv_std = 1 / torch.sqrt(t["x"].var((1, 2), unbiased=False, keepdim=True) + f32(1e-5))
    y = (t["x"] - mean) * inv_std * t["scale"] + t["bias"]
    loss = sum((o * torch.tensor(w)).sum() for o, w in zip((y, mean, inv_std), weights,
                                                             strict=True))
    grads = torch.autograd.grad(loss, list(t.values()))
    np.testing.assert_allclose(got[0], _numpy(loss), rtol=1e-6)  # float32 statistics
    for mine, theirs in zip(got[1:], grads, strict=True):
        np.testing.assert_allclose(mine, _numpy(theirs), rtol=TORCH_RTOL, atol=TORCH_ATOL)


# ---- ops without a gradient, and rules that refuse clearly ------------------------------------
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [{}, {"axis": 1, "keepdims": 0},
                                   {"axis": -1, "select_last_index": 1}])
def test_arg_extrema_match_onnxruntime(op: str, attrs: dict) -> None:
    graph = Graph("arg")
    x = graph.add_input("x", np.float64, (3, 4))
    graph.outputs = [getattr(ops, op)(x, **attrs)]
    data = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, -1.0], [5.0, 4.0, 5.0, 4.0]])
    got = ort_matches_reference(graph, {"x": data})[0]
    fn = np.argmax if op == "ArgMax" else np.argmin
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index"):  # ties: the last index, found on the flipped axis
        want = data.shape[axis] - 1 - fn(np.flip(data, axis), axis=axis, keepdims=keep)
    else:
        want = fn(data, axis=axis, keepdims=keep)
    np.testing.assert_array_equal(got, want)


def test_pad_reflect_gradient_is_a_clear_error() -> None:
    from irkit.errors import UnsupportedOpError
    graph = Graph("pad")
    x = graph.add_input("x", np.float64, (3, 4))
    y = ops.Pad(x, np.array([1, 1, 1, 1]), mode="reflect")
    with pytest.raises(UnsupportedOpError, match="Pad node .*'reflect'"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])


@pytest.mark.parametrize("start", [1, -3])
def test_slice_with_computed_bounds_has_a_gradient(start) -> None:
    """A unit-step Slice whose end is known only at run time pads its gradient back in-graph
    (a symbolic sequence length: logits[:, :-1] of a legacy GPT-2 export)."""
    graph = Graph("slice")
    x = graph.add_input("x", np.float64, (3, "T"))
    end = graph.add_input("end", np.int64, (1,))
    y = ops.Slice(x, np.array([start]), end, np.array([1]))
    (dx,) = gradients(graph, ops.ReduceSum(ops.Mul(y, y), keepdims=0), [x])
    graph.outputs = [dx]
    xs = np.random.default_rng(0).standard_normal((3, 5))
    for stop in (3, 4, 99):
        (got,) = ort_matches_reference(graph, {"x": xs, "end": np.array([stop])})
        want = np.zeros_like(xs)
        begin = start % 5  # a negative start counts from the end
        want[:, begin:stop] = 2 * xs[:, begin:stop]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_slice_with_computed_steps_gradient_is_a_clear_error() -> None:
    from irkit.errors import ShapeError
    graph = Graph("slice")
    x = graph.add_input("x", np.float64, (3, 4))
    step = graph.add_input("step", np.int64, (1,))
    y = ops.Slice(x, np.array([0]), np.array([4]), np.array([1]), step)
    with pytest.raises(ShapeError, match="Slice node .*constant axes and unit steps"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])


@pytest.mark.parametrize("start, limit, delta", [(2, 11, 3), (10, 1, -3), (5, 5, 1),
                                                  (0.5, 3.0, 0.5), (1.0, -1.0, -0.25)])
def test_range_matches_onnxruntime(start, limit, delta) -> None:
    dtype = np.int64 if isinstance(start, int) else np.float64
    graph = Graph("range")
    inputs = [graph.add_input(n, dtype, ()) for n in ("start", "limit", "delta")]
    constant = ops.Range(*inputs[:1], graph.constant(np.array(limit, dtype)),
                         graph.constant(np.array(delta, dtype)))
    graph.outputs = [ops.Range(*inputs), constant]
    feeds = {n: np.array(v, dtype) for n, v in zip(("start", "limit", "delta"),
                                                    (start, limit, delta), strict=True)}
    got = ort_matches_reference(graph, feeds)
    want = np.arange(start, limit, delta, dtype=dtype)
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)


def test_range_of_constants_has_a_static_length() -> None:
    graph = Graph("range")
    r = ops.Range(*(graph.constant(np.array(v)) for v in (1.0, 2.0, 0.25)))
    assert r.shape == (4,) and r.dtype == np.float64
    x = graph.add_input("x", np.int64, ())
    r = ops.Range(x, graph.constant(np.array(0)), graph.constant(np.array(-3)))
    assert r.shape == (None,) and r.dtype == np.int64


def test_top_k_unsorted_picks_what_onnxruntime_picks() -> None:
    graph = Graph("topk")
    x = graph.add_input("x", np.float64, (3, 7))
    values, indices = ops.TopK(x, np.array([4]), sorted=0)
    graph.outputs = [values, indices]
    data = np.random.default_rng(3).permutation(21).reshape(3, 7).astype(np.float64)
    from irkit.runtimes.onnxruntime import OrtGraph
    got = OrtGraph(graph)({"x": data})  # sorted=0: the order is each runtime's own
    want = reference_outputs(graph, {"x": data})
    for mine, theirs in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.sort(mine, 1), np.sort(theirs, 1))
    np.testing.assert_array_equal(np.take_along_axis(data, got[1], 1), got[0])


@pytest.mark.parametrize("equation, shapes, message", [
    ("ij,jk", [(2, 3)], "2 operands for 1 inputs"),
    ("ij->ii", [(2, 2)], "each output letter must appear once"),
    ("ij->k", [(2, 2)], "each output letter must appear once"),
    ("ijk->i", [(2, 2)], "term 'ijk' does not fit"),
    ("i1->i", [(2, 2)], "letters and one ellipsis"),
    ("ij,jk->ik", [(2, 3), (4, 5)], "letter 'j' is 3 in one input and 4"),
])
def test_einsum_rejects_bad_equations(equation, shapes, message) -> None:
    from irkit.errors import ShapeError
    graph = Graph("einsum")
    xs = [graph.add_input(f"x{i}", np.float64, s) for i, s in enumerate(shapes)]
    with pytest.raises(ShapeError, match=f"Einsum node .*{message}"):
        ops.Einsum(*xs, equation=equation)


def test_einsum_ellipsis_needs_the_rank() -> None:
    from irkit.errors import ShapeError
    graph = Graph("einsum")
    x = graph.add_input("x", np.float64, None)
    with pytest.raises(ShapeError, match="an ellipsis needs the rank of its input"):
        ops.Einsum(x, equation="...ii->...i")


@pytest.mark.parametrize("attrs, message", [
    ({"antialias": 1}, "attribute 'antialias' is from opset 18"),
    ({"axes": [2, 3]}, "attribute 'axes' is from opset 18"),
    ({"keep_aspect_ratio_policy": "not_larger"}, "'keep_aspect_ratio_policy' is from opset 18"),
    ({"coordinate_transformation_mode": "half_pixel_symmetric"},
     "coordinate_transformation_mode 'half_pixel_symmetric' is not supported"),
    ({"mode": "area"}, "mode 'area' is not supported"),
])
def test_resize_rejects_newer_attributes(attrs, message) -> None:
    from irkit.errors import UnsupportedOpError
    graph = Graph("resize")
    x = graph.add_input("x", np.float32, (1, 1, 2, 2))
    with pytest.raises(UnsupportedOpError, match=f"Resize node .*{message}"):
        ops.Resize(x, None, np.array([1, 1, 2, 2], np.float32), **attrs)


def test_resize_gradient_with_computed_sizes_is_a_clear_error() -> None:
    from irkit.errors import ShapeError
    graph = Graph("resize")
    x = graph.add_input("x", np.float64, (1, 1, 2, 2))
    sizes = graph.add_input("sizes", np.int64, (4,))
    y = ops.Resize(x, None, None, sizes, mode="linear")
    assert y.shape == (None, None, None, None)
    with pytest.raises(ShapeError, match="Resize node .*constant roi, scales and sizes"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])


def test_scatter_nd_mul_gradient_is_a_clear_error() -> None:
    from irkit.errors import UnsupportedOpError
    graph = Graph("scatter")
    x = graph.add_input("x", np.float64, (3, 4))
    y = ops.ScatterND(x, np.array([[0]]), np.ones((1, 4)), reduction="mul")
    with pytest.raises(UnsupportedOpError, match="ScatterND node .*no gradient for reduction"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])


def test_gather_nd_batch_gradient_needs_static_batch_dims() -> None:
    from irkit.errors import ShapeError
    graph = Graph("gather")
    x = graph.add_input("x", np.float64, ("N", 4))
    index = graph.add_input("index", np.int64, ("N", 1))
    y = ops.GatherND(x, index, batch_dims=1)
    assert y.shape == ("N",)
    with pytest.raises(ShapeError, match="GatherND node .*static batch dims"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])

