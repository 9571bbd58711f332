"""The ops torch's two exporters write, imported and differentiated by irkit, against torch.

Each row is a small parameter-free torch module (float64) over a few ops: Gelu (opset 20, both
approximations) and its decomposed form, Erf, Where, scaled_dot_product_attention with a bool
mask, an additive mask and is_causal (the dynamo exporter lowers a masked softmax to Softmax ->
IsNaN -> Where), the attention Einsums, Trilu, CumSum, Range, Split into equal chunks (opset 18's
`num_outputs`), reductions with axes as an input (opset 18), AveragePool ceil_mode and LRN's
decomposition. Every row is exported by the dynamo exporter (its default opset, 20 in torch 2.13)
and by the legacy one (opset 17), with a dynamic batch; irkit imports the file, `AutodiffPass`
adds the VJP of the output with a cotangent W, and irkit's numpy reference runtime runs it at a
batch other than the exported one. The output and every input's gradient must equal torch
autograd's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from irkit.passes.autodiff import AutodiffPass
from irkit.runtimes.reference import ReferenceRuntime

from irkit.onnx_io import load

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL, ATOL = 1e-9, 1e-11
EXPORT_BATCH, RUN_BATCH = 2, 3


class Activations(torch.nn.Module):
    def forward(self, x, y):
        return (F.gelu(x) + F.gelu(y, approximate="tanh") * torch.erf(x)
                + torch.where(x > 0.1, x * y, y - x))


class Attention(torch.nn.Module):
    """Three attentions of one q, k, v: a bool mask, an additive mask, causal."""

    def forward(self, q, k, v, keep):
        additive = torch.where(keep, 0.0, -1e4).to(q.dtype)
        return (F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
                + F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
                + F.scaled_dot_product_attention(q, k, v, is_causal=True))


class Einsums(torch.nn.Module):
    def forward(self, q, k):
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k)
        return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), k) + torch.einsum(
            "bhqd->bhd", q).unsqueeze(2)


class Shapes(torch.nn.Module):
    """Trilu, CumSum (forward and flipped), Range and equal chunks."""

    def forward(self, x):
        a, b, c = torch.chunk(x, 3, dim=2)
        positions = torch.arange(x.shape[-1], dtype=x.dtype)
        tri = torch.triu(a, 1) + torch.tril(b) * c
        return tri.cumsum(-1) + c.flip(-1).cumsum(-1).flip(-1) + positions * x[..., :4, :]


class Reductions(torch.nn.Module):
    def forward(self, x):
        return (x.mean(dim=1) + x.amax(dim=1) * x.sum(dim=(1, 2), keepdim=True)[:, 0]
                + torch.logsumexp(x, dim=1) + x.amin(dim=1))


class Pooling(torch.nn.Module):
    def forward(self, x):
        pooled = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
        return F.local_response_norm(pooled, 3, alpha=0.5, beta=0.75, k=2.0)


def _attention_inputs(rng, batch):
    q, k, v = (rng.standard_normal((batch, 2, 4, 3)) for _ in range(3))
    keep = np.ones((4, 4), bool)
    keep[:, 3] = False
    keep[3, 0] = False
    return {"q": q, "k": k, "v": v, "keep": keep}


# the legacy exporter takes float32 attention masks, not float64: that row runs in float32
FLOAT32_ROWS = {"attention"}
ROWS = {
    "activations": (Activations, lambda rng, b: {"x": rng.standard_normal((b, 5)),
                                                  "y": rng.standard_normal((b, 5))}),
    "attention": (Attention, _attention_inputs),
    "einsums": (Einsums, lambda rng, b: {"q": rng.standard_normal((b, 2, 4, 3)),
                                         "k": rng.standard_normal((b, 2, 5, 3))}),
    "shapes": (Shapes, lambda rng, b: {"x": rng.standard_normal((b, 2, 12, 6))}),
    "reductions": (Reductions, lambda rng, b: {"x": rng.permutation(b * 4 * 3).reshape(
        b, 4, 3) * 0.1}),  # distinct values: no ties for amax/amin
    "pooling": (Pooling, lambda rng, b: {"x": rng.standard_normal((b, 4, 5, 7))}),
}


def _export(module, inputs: dict, path: str, dynamo: bool) -> None:
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    names = list(inputs)
    batched = [n for n in names if inputs[n].ndim > 2 or n in ("x", "y")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            shapes = tuple({0: batch} if n in batched else None for n in names)
            torch.onnx.export(module, args, path, dynamo=True, input_names=names,
                              output_names=["out"], dynamic_shapes=shapes, verbose=False)
        else:
            torch.onnx.export(module, args, path, dynamo=False, opset_version=17,
                              input_names=names, output_names=["out"],
                              dynamic_axes={n: {0: "batch"} for n in batched})


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("row", list(ROWS))
def test_exported_ops_differentiate_as_torch(row, dynamo, tmp_path):
    make, make_inputs = ROWS[row]
    dtype = np.float32 if row in FLOAT32_ROWS else np.float64
    rtol, atol = (2e-5, 1e-6) if row in FLOAT32_ROWS else (RTOL, ATOL)

    def inputs_of(rng, batch):
        return {n: a.astype(dtype) if a.dtype.kind == "f" else a
                for n, a in make_inputs(rng, batch).items()}

    module = make()
    rng = np.random.default_rng(0)
    path = str(tmp_path / f"{row}.onnx")
    _export(module, inputs_of(rng, EXPORT_BATCH), path, dynamo)

    graph = load(path)
    floats = [v.name for v in graph.inputs if v.dtype.kind == "f"]
    AutodiffPass("out", floats)(graph)

    feeds = inputs_of(rng, RUN_BATCH)
    tensors = {n: torch.tensor(a, requires_grad=a.dtype.kind == "f") for n, a in feeds.items()}
    out = module(*tensors.values())
    w = rng.standard_normal(tuple(out.shape)).astype(dtype)
    (out * torch.from_numpy(w)).sum().backward()

    got = dict(zip([v.name for v in graph.outputs],
                   ReferenceRuntime().compile(graph)({**feeds, "out_grad": w})))
    np.testing.assert_allclose(got["out"], out.detach().numpy(), rtol, atol)
    for name in floats:
        np.testing.assert_allclose(got[f"{name}_grad"], tensors[name].grad.numpy(), rtol, atol,
                                   err_msg=f"d out / d {name}")


def test_legacy_if_on_static_dims_is_inlined(tmp_path):
    """The legacy exporter writes F.local_response_norm's `if x.size(1) == 1: squeeze` of a
    dynamic batch as an If; its condition reads a static dim, so import keeps the taken branch
    (the pooling row above differentiates it against torch)."""
    make, inputs_of = ROWS["pooling"]
    path = str(tmp_path / "pooling.onnx")
    _export(make(), inputs_of(np.random.default_rng(0), EXPORT_BATCH), path, dynamo=False)
    import onnx

    assert "If" in {n.op_type for n in onnx.load(path).graph.node}
    graph = load(path)
    assert "If" not in {n.op_type for n in graph.nodes}
    assert graph.outputs[0].shape == ("batch", 4, 3, 4)


def _if_model(condition_from_data: bool):
    """y = x + k if c else x * k and z = x + k if not c else x * k (k = 1), c constant (2 > k)
    or computed from x's values; the four branches all name their result "t"."""
    import onnx
    from onnx import TensorProto, helper

    def branch(op: str, name: str):
        return helper.make_graph(
            [helper.make_node(op, ["x", "k"], ["t"], name="inner")], name, [],
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, [None, 3])])
    condition = (helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0) if condition_from_data
                 else helper.make_node("Constant", [], ["m"], value_float=2.0))
    nodes = [condition, helper.make_node("Greater", ["m", "k"], ["c"]),
             helper.make_node("Not", ["c"], ["not_c"]),
             helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch("Add", "a"),
                              else_branch=branch("Mul", "b")),
             helper.make_node("If", ["not_c"], ["z"], name="other",
                              then_branch=branch("Add", "c"), else_branch=branch("Mul", "d"))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "yz"],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_ifs_with_constant_conditions_run_their_branches_under_fresh_names():
    from irkit.onnx_io import from_onnx

    graph = from_onnx(_if_model(condition_from_data=False))
    assert "If" not in {n.op_type for n in graph.nodes}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y, z = ReferenceRuntime().compile(graph)({"x": x})
    np.testing.assert_array_equal(y, x + 1)  # then branch
    np.testing.assert_array_equal(z, x)  # else branch: x * 1


def test_if_on_run_time_data_is_refused_in_one_line():
    from irkit.errors import UnsupportedOpError
    from irkit.onnx_io import from_onnx

    with pytest.raises(UnsupportedOpError) as e:
        from_onnx(_if_model(condition_from_data=True))
    message = str(e.value)
    assert "\n" not in message and "unsupported ops: If (nodes choose, other)" in message, message


def _computed_axes_model(op: str):
    """x (2, 3) reduced over axes computed from x (ArgMax of its row 0)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=0),
             helper.make_node("Slice", ["a", "zero", "one"], ["axes"]),
             helper.make_node(op, ["x", "axes"], ["y"], name="pick_axis")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("zero", 0), ("one", 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2"])
def test_reduction_with_computed_axes_is_refused_in_one_line(op):
    from irkit.errors import UnsupportedOpError
    from irkit.onnx_io import from_onnx

    with pytest.raises(UnsupportedOpError) as e:
        from_onnx(_computed_axes_model(op))
    message = str(e.value)
    assert "\n" not in message and "'pick_axis'" in message and "axes" in message, message


def test_reduce_sum_takes_computed_axes():
    # ReduceSum has had axes as an input since opset 13: irkit runs it as it is
    import onnxruntime as ort

    from irkit.onnx_io import from_onnx

    model = _computed_axes_model("ReduceSum")
    x = np.array([[0.0, 1.0, 0.5], [2.0, 3.0, 4.0]], np.float32)  # argmax of each row: 1, 2
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    got = ReferenceRuntime().compile(from_onnx(model))({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
