"""Loading elsewhere: irkit's ONNX files, and torch.onnx.export's, give the same outputs in
onnxruntime, onnx.reference, irkit's reference and torch runtimes, OpenVINO and onnx2torch.
The torch runtime follows ONNX op by op (the gradient table's graphs, and a table of ops and
paths with no gradient), and its autograd agrees with irkit's autodiff run on onnxruntime.

OpenVINO, torch and onnx2torch are optional: their checks skip when they are not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tempfile
import types
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from conftest import reference_outputs, stable_seed
from gradient_cases import CASES, Case, case_inputs
from irkit.passes import gradients
from irkit.runtimes import get_runtime
from irkit.runtimes.onnxruntime import OrtGraph

import irkit
import irkit.nn as nn
from irkit import ops
from irkit.data import load_dataset
from irkit.errors import RuntimeUnavailableError, UnsupportedOpError
from irkit.ir import Graph, Value
from irkit.onnx_io import load

ATOL = RTOL = 1e-5  # every runtime against onnxruntime, float32 models
OP_TOLERANCE = {np.dtype(np.float64): (1e-9, 1e-11), np.dtype(np.float32): (1e-5, 1e-5)}


def _allclose(got, want, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, onnxruntime gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"{what} output {i}: dtype {g.dtype} != {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what} output {i}")


# ---- the models: irkit's exports and torch.onnx.export's ----------------------------------------
def _irkit_model(name: str, path: str) -> dict:
    iris, digits = load_dataset("iris"), load_dataset("digits")
    if name == "iris_mlp":
        model, data = nn.Sequential([nn.Normalize(), nn.Dense(16, "relu"), nn.Dense(3)]), iris
    elif name == "digits_mlp":
        model, data = nn.Sequential([nn.Normalize(), nn.Dense(32, "relu"), nn.Dropout(0.2),
                                     nn.Dense(10, "softmax")]), digits
    else:
        model, data = nn.Sequential([
            nn.Normalize(), nn.Reshape((1, 8, 8)), nn.Conv2D(4, 3, activation="relu"),
            nn.BatchNorm(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(10)]), digits
    model = irkit.Model(model)
    model.fit(data.x, data.y, epochs=3, seed=0, verbose=0)
    model.export(path)
    return {"path": path, "feeds": {"input": data.x[:64]}, "labels": data.y[:64],
            "expected": None}


def _torch_model(name: str, path: str) -> dict:
    """A torch module, exported the legacy way (opset 17, a symbolic batch)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if name == "torch_mlp":
        module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(),
                                     torch.nn.Linear(16, 3), torch.nn.Softmax(-1))
        data = load_dataset("iris")
    else:
        module = torch.nn.Sequential(
            _images_module(), torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 6, 3, stride=2, padding=(1, 0)), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.LayerNorm(6), torch.nn.Linear(6, 10), torch.nn.GELU(),
            torch.nn.Linear(10, 10), torch.nn.LogSoftmax(-1))
        data = load_dataset("digits")
    module.eval()
    x = (data.x[:64] / np.abs(data.x).max()).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        with torch.no_grad():
            expected = [module(torch.from_numpy(x)).numpy()]
    return {"path": path, "feeds": {"x": x}, "labels": data.y[:64], "expected": expected}


def _images_module():
    import torch

    class Images(torch.nn.Module):
        """(N, 64) -> (N, 1, 8, 8) as one Reshape (nn.Unflatten exports shape arithmetic)."""

        def forward(self, x):
            return x.reshape(-1, 1, 8, 8)
    return Images()


MODELS = ["iris_mlp", "digits_mlp", "digits_cnn", "torch_mlp", "torch_cnn"]


@pytest.fixture(scope="module", params=MODELS)
def model(request, tmp_path_factory) -> dict:
    path = str(tmp_path_factory.mktemp("interop") / f"{request.param}.onnx")
    make = _torch_model if request.param.startswith("torch") else _irkit_model
    return make(request.param, path)


# ---- the runtimes: each reads the ONNX file itself --------------------------------------------
def run_onnxruntime(path: str, feeds: dict) -> list:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def run_onnx_reference(path: str, feeds: dict) -> list:
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(path).run(None, feeds)


def run_irkit_reference(path: str, feeds: dict) -> list:
    return get_runtime("reference").compile(load(path))(feeds)


def run_irkit_torch(path: str, feeds: dict) -> list:
    pytest.importorskip("torch")
    return get_runtime("torch").compile(load(path))(feeds)


def run_openvino(path: str, feeds: dict) -> list:
    ov = pytest.importorskip("openvino")
    # f32: on CPUs with bf16 units OpenVINO's default precision is bf16 (errors ~1e-2)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    return [result[o] for o in compiled.outputs]


def import_onnx2torch() -> types.ModuleType:
    """onnx2torch, or a skip. Installed without its dependencies (`pip install --no-deps
    onnx2torch`: its torchvision requirement would replace a CPU torch by a CUDA build), it
    imports beside a stub torchvision, used only by its NMS and RoiAlign converters."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("onnx2torch is not installed (pip install --no-deps onnx2torch)")
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match this torch
        stub = types.ModuleType("torchvision")
        stub.ops = types.ModuleType("torchvision.ops")

        def missing(*args, **kwargs):
            raise RuntimeError("torchvision is not installed")
        stub.ops.nms = stub.ops.roi_align = stub.ops.box_convert = missing
        saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.ops")}
        sys.modules.update({"torchvision": stub, "torchvision.ops": stub.ops})
        try:
            return importlib.import_module("onnx2torch")
        finally:  # onnx2torch keeps its reference; nobody else sees the stub
            for k, v in saved.items():
                sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    return importlib.import_module("onnx2torch")


def run_onnx2torch(path: str, feeds: dict) -> list:
    onnx2torch = import_onnx2torch()
    import torch
    module = onnx2torch.convert(path).eval()  # it starts in training mode (BatchNorm)
    with torch.no_grad():
        outs = module(*[torch.from_numpy(np.asarray(a)) for a in feeds.values()])
    return [o.numpy() for o in (outs if isinstance(outs, tuple | list) else [outs])]


RUNTIMES = {"onnx_reference": run_onnx_reference, "irkit_reference": run_irkit_reference,
            "irkit_torch": run_irkit_torch, "openvino": run_openvino,
            "onnx2torch": run_onnx2torch}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_runtime_matches_onnxruntime(model: dict, runtime: str) -> None:
    want = run_onnxruntime(model["path"], model["feeds"])
    got = RUNTIMES[runtime](model["path"], model["feeds"])
    _allclose(got, want, f"{runtime} on {model['path']}")


def test_onnxruntime_matches_the_source_framework(model: dict) -> None:
    if model["expected"] is None:  # irkit's own models: irkit's predict is onnxruntime
        pytest.skip("an irkit model")
    _allclose(run_onnxruntime(model["path"], model["feeds"]), model["expected"], "onnxruntime")


def test_torch_runtime_gradients_match_irkit_autodiff(model: dict) -> None:
    """torch autograd through the model (trainable=True) against irkit's gradient graph on
    onnxruntime, for the mean cross-entropy of the model's outputs and every float weight."""
    torch = pytest.importorskip("torch")
    from irkit.runtimes.torch_runtime import to_torch

    graph = load(model["path"])
    labels = graph.add_input("labels", np.int64, ("N",))
    logits = graph.outputs[0]
    loss = ops.SoftmaxCrossEntropyLoss(logits, labels)
    graph.outputs = [loss]
    module = to_torch(graph, trainable=True)
    feeds = {**model["feeds"], "labels": model["labels"].astype(np.int64)}
    module(**feeds).backward()
    weights = [v for v in graph.initializers.values() if v.dtype.kind == "f"]
    assert len(list(module.parameters())) == len(weights) > 0
    graph.outputs = [loss, *gradients(graph, loss, weights)]
    want = OrtGraph(graph)(feeds)
    got = [module.initializer(w.name).grad for w in weights]
    for w, g, expected in zip(weights, got, want[1:], strict=True):
        g = torch.zeros_like(module.initializer(w.name)) if g is None else g
        np.testing.assert_allclose(g.numpy(), expected, rtol=1e-4, atol=1e-6,
                                   err_msg=f"d loss / d {w.name}: torch autograd vs irkit")


# ---- op by op: the gradient table's graphs on the torch runtime ---------------------------------
def _case_graph(c: Case, dtype, weights: list | None) -> tuple[Graph, dict, list[str], int]:
    """The row's op on fresh inputs; with cotangent weights, also the loss sum(w * out) and
    irkit's gradients: outputs [*op outputs, loss, *d loss / d inputs]."""
    rng = np.random.default_rng(stable_seed("interop " + c.id))
    graph = Graph(c.id.replace("-", "_"))
    args, feeds, wrt = case_inputs(c, graph, dtype, rng)
    outs = c.build(*args) if c.build else getattr(ops, c.op)(*args, **c.attrs)
    outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o.dtype.kind == "f"]
    if weights is None:
        graph.outputs = _distinct(outs)
        return graph, feeds, [], len(outs)
    loss = None
    for o, w in zip(outs, weights, strict=True):
        term = ops.ReduceSum(ops.Mul(o, graph.constant(w.astype(dtype))), keepdims=0)
        loss = term if loss is None else ops.Add(loss, term)
    graph.outputs = _distinct([*outs, loss, *gradients(graph, loss, wrt)])
    return graph, feeds, [v.name for v in wrt], len(outs)


def _distinct(values: list[Value]) -> list[Value]:
    """Graph outputs are node outputs, each once: wrap inputs, constants and repeats."""
    result: list[Value] = []
    for v in values:
        result.append(ops.Identity(v) if v.producer is None or v in result else v)
    return result


@pytest.mark.parametrize("c", CASES, ids=[f"{c.id}#{i}" for i, c in enumerate(CASES)])
def test_torch_runtime_runs_the_gradient_table(c: Case) -> None:
    """Forward and irkit's gradient graph on the torch runtime equal onnxruntime; torch autograd
    of the forward equals irkit's gradients."""
    torch = pytest.importorskip("torch")
    from irkit.runtimes.torch_runtime import to_torch

    probe, feeds, _, _ = _case_graph(c, c.ort_dtype, None)
    rng = np.random.default_rng(stable_seed("weights " + c.id))
    weights = [rng.standard_normal(r.shape) for r in reference_outputs(probe, feeds)]
    graph, feeds, wrt, n = _case_graph(c, c.ort_dtype, weights)
    want = OrtGraph(graph)(feeds)
    inputs = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in feeds.items()}
    outs = to_torch(graph)(**inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    rtol, atol = OP_TOLERANCE[np.dtype(c.ort_dtype)]
    _allclose([o.detach().numpy() for o in outs], want, f"torch runtime on {c.id}", rtol, atol)
    outs[n].backward()
    autograd = [inputs[k].grad.numpy() for k in wrt]
    _allclose(autograd, want[n + 1:], f"torch autograd vs irkit on {c.id}", rtol, atol)


# ---- op by op: ops and paths the gradient table does not reach ----------------------------------
def _const(graph: Graph, value, dtype) -> Value:
    return ops.apply(graph, "Constant", [], {"value": np.asarray(value, dtype)}).outputs[0]


F32, I64 = np.float32, np.int64
HALVES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -1.7, 1.2], F32)
TIES = np.array([[1, 3, 3], [2, 2, 1]], F32)
INTS = np.array([[-7, 7, -7, 5], [3, -3, 0, 9]], I64)
IMAGE = np.random.default_rng(3).standard_normal((2, 3, 6, 7)).astype(F32)
WEIGHT = np.random.default_rng(4).standard_normal((3, 2, 3, 2)).astype(F32)  # (C, M, kh, kw)
VECTOR = np.arange(5, dtype=F32)
# (id, feeds, build(graph, *inputs) -> outputs)
FORWARD_CASES = [
    ("ArgMax-ties", [TIES], lambda g, x: [ops.ArgMax(x, axis=1, keepdims=0),
                                          ops.ArgMax(x, axis=1, select_last_index=1)]),
    ("ArgMin-ties", [TIES], lambda g, x: [ops.ArgMin(x, axis=-1),
                                          ops.ArgMin(x, axis=0, select_last_index=1)]),
    ("Floor-Ceil-Round", [HALVES], lambda g, x: [ops.Floor(x), ops.Ceil(x), ops.Round(x)]),
    ("Constant", [TIES], lambda g, x: [ops.Add(x, _const(g, [[0.5, 1, 2]], F32))]),
    ("compare-logic", [INTS, INTS[::-1].copy()], lambda g, a, b: [
        ops.GreaterOrEqual(a, b), ops.LessOrEqual(a, b), ops.Equal(a, b),
        ops.Or(ops.Less(a, b), ops.Greater(a, 0)), ops.Not(ops.And(ops.Less(a, b),
                                                                  ops.Greater(b, 0)))]),
    ("Div-int-truncates", [INTS, np.array([2, -2, 3, -4], I64)], lambda g, a, b: [ops.Div(a, b)]),
    ("int-arithmetic", [INTS], lambda g, a: [
        ops.Add(a, 3), ops.Mul(a, a), ops.Sub(a, 1), ops.Neg(a), ops.Abs(a), ops.Sign(a),
        ops.Clip(a, np.array(-4, I64), np.array(6, I64)), ops.Pow(a, np.array(2, I64)),
        ops.Max(a, np.array(0, I64)), ops.Min(a),
        ops.Where(ops.Greater(a, 0), a, g.constant(0, I64))]),
    ("Pow-int-exponent", [HALVES], lambda g, x: [ops.Pow(x, np.array([3], I64))]),
    ("Cast", [HALVES], lambda g, x: [ops.Cast(x, to=6), ops.Cast(x, to=9), ops.Cast(
        ops.Cast(x, to=7), to=11), ops.Cast(ops.Greater(x, 0.0), to=1), ops.Cast(x, to=10)]),
    ("Slice-negative-steps", [VECTOR], lambda g, x: [
        ops.Slice(x, np.array([10]), np.array([-10]), np.array([0]), np.array([-2])),
        ops.Slice(x, np.array([-2]), np.array([-2 ** 62]), np.array([0]), np.array([-1]))]),
    ("Slice-start-before-first", [VECTOR], lambda g, x: [
        ops.Slice(x, np.array([-100]), np.array([-200]), np.array([0]), np.array([-1]))]),
    ("Pad-modes", [TIES], lambda g, x: [ops.Pad(x, np.array([1, 2, 1, 0]), mode="reflect"),
                                        ops.Pad(x, np.array([2, 1, 0, 3]), mode="edge"),
                                        ops.Pad(x, np.array([1, -1, 0, 2]), np.array(7, F32))]),
    ("OneHot", [np.array([[0, -1], [5, 2]], I64)], lambda g, i: [
        ops.OneHot(i, np.array([4], I64), np.array([0.0, 1.0], F32)),
        ops.OneHot(i, np.array(3.0, F32), np.array([2, 9], I64), axis=0)]),
    ("Expand-bidirectional", [TIES[:, :1].copy()], lambda g, x: [
        ops.Expand(x, np.array([1, 4], I64)), ops.Expand(x, np.array([3, 1, 1], I64))]),
    ("shape-ops", [IMAGE], lambda g, x: [
        ops.Shape(x), ops.Shape(x, start=-2), ops.Shape(x, start=1, end=-1), ops.Size(x),
        ops.ConstantOfShape(ops.Shape(x, end=2), value=np.array([7], I64)),
        ops.ConstantOfShape(ops.Shape(x, start=3)), ops.Reshape(x, np.array([0, -1], I64)),
        ops.Flatten(x, axis=-1), ops.Flatten(x, axis=0), ops.Squeeze(ops.Unsqueeze(
            x, np.array([-1, 1], I64))), ops.Transpose(x, perm=[0, 2, 3, 1])]),
    ("Dropout", [TIES], lambda g, x: [
        *ops.Dropout(x, _num_outputs=2),
        *ops.Dropout(x, np.array(0.0, F32), np.array(True), _num_outputs=2),
        *ops.Dropout(x, np.array(0.4, F32), np.array(False), _num_outputs=2)]),
    ("reductions", [INTS, TIES], lambda g, a, x: [
        ops.ReduceSum(a, np.array([1], I64)), ops.ReduceMax(a, axes=[0], keepdims=0),
        ops.ReduceSum(x, keepdims=0), ops.ReduceSum(x, noop_with_empty_axes=1),
        ops.ReduceMin(x), ops.ReduceProd(x, axes=[0, 1], keepdims=0),
        ops.CumSum(a, np.array(1, I64), exclusive=1, reverse=1)]),
    ("LayerNormalization-stats", [IMAGE, IMAGE[0, 0].copy()], lambda g, x, s: list(
        ops.LayerNormalization(x, s, axis=-2, epsilon=0.01, _num_outputs=3))),
    ("Conv-asymmetric", [IMAGE, WEIGHT.transpose(1, 0, 2, 3).copy()], lambda g, x, w: [
        ops.Conv(x, w, pads=[0, 1, 2, 0], strides=[2, 1], dilations=[1, 2]),
        ops.Conv(x, w, auto_pad="SAME_LOWER", strides=[2, 3])]),
    ("ConvTranspose-asymmetric", [IMAGE, WEIGHT], lambda g, x, w: [
        ops.ConvTranspose(x, w, strides=[2, 3], pads=[0, 1, 1, 0], output_padding=[1, 2]),
        ops.ConvTranspose(x, w, group=1, dilations=[2, 1], pads=[1, 0, 0, 2])]),
    ("MaxPool-asymmetric-indices", [IMAGE], lambda g, x: [
        *ops.MaxPool(x, kernel_shape=[3, 2], pads=[0, 1, 2, 0], strides=[2, 2], _num_outputs=2),
        *ops.MaxPool(x, kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1, _num_outputs=2)]),
    ("MaxPool-column-major-ceil-dilated", [IMAGE], lambda g, x: [
        *ops.MaxPool(x, kernel_shape=[3, 2], pads=[1, 0, 2, 1], strides=[2, 2], storage_order=1,
                     _num_outputs=2),
        *ops.MaxPool(x, kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 1, 1, 1], ceil_mode=1,
                     strides=[3, 2], _num_outputs=2)]),
    ("ScatterElements-mul", [IMAGE], lambda g, x: [ops.ScatterElements(
        x, np.array([[[[1, 0], [0, 5]]]], I64), np.full((1, 1, 2, 2), 3.0, F32), axis=-1,
        reduction="mul")]),
    ("AveragePool-asymmetric", [IMAGE], lambda g, x: [
        ops.AveragePool(x, kernel_shape=[3, 2], pads=[0, 1, 2, 0], strides=[2, 1]),
        ops.AveragePool(x, kernel_shape=[3, 3], pads=[1, 0, 2, 1], count_include_pad=1),
        ops.AveragePool(x, kernel_shape=[2, 2], auto_pad="SAME_UPPER", strides=[2, 2])]),
]
# where irkit's numpy reference differs from ONNX (and onnxruntime), or lacks a feature
REFERENCE_DEVIATES = {
    "Slice-start-before-first": "the reference slices with Python's clamping, which for a "
    "negative step leaves a start before the first element out; ONNX clamps it to 0",
}
REFERENCE_LACKS: dict[str, str] = {}


def _forward_graph(name: str, inputs: list[np.ndarray], build) -> tuple[Graph, dict]:
    graph = Graph(name.replace("-", "_"))
    values = [graph.add_input(f"in{i}", a.dtype, a.shape) for i, a in enumerate(inputs)]
    graph.outputs = _distinct(build(graph, *values))
    return graph, {v.name: a for v, a in zip(values, inputs, strict=True)}


@pytest.mark.parametrize("name, inputs, build", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_torch_runtime_matches_onnxruntime_op_by_op(name: str, inputs, build) -> None:
    pytest.importorskip("torch")
    graph, feeds = _forward_graph(name, inputs, build)
    want = OrtGraph(graph)(feeds)
    _allclose(get_runtime("torch").compile(graph)(feeds), want, f"torch runtime on {name}")


@pytest.mark.parametrize("name, inputs, build", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_reference_runtime_matches_onnxruntime_op_by_op(name: str, inputs, build) -> None:
    if name in REFERENCE_DEVIATES:
        pytest.xfail(REFERENCE_DEVIATES[name])
    if name in REFERENCE_LACKS:
        pytest.skip(REFERENCE_LACKS[name])
    graph, feeds = _forward_graph(name, inputs, build)
    _allclose(reference_outputs(graph, feeds), OrtGraph(graph)(feeds), f"reference on {name}")


# ---- the runtime itself -----------------------------------------------------------------------
def test_dropout_in_training_mode_keeps_or_scales_each_element() -> None:
    """The one op whose result is random: each element is 0 or x / (1 - ratio) as its mask
    says, and the same seed draws the same mask."""
    pytest.importorskip("torch")
    x = np.random.default_rng(5).uniform(1.0, 2.0, (40, 50)).astype(F32)
    graph, feeds = _forward_graph("dropout", [x], lambda g, v: list(ops.Dropout(
        v, np.array(0.25, F32), np.array(True), seed=3, _num_outputs=2)))
    run = get_runtime("torch").compile(graph)
    (y, mask), (_, mask2) = run(feeds), run(feeds)
    np.testing.assert_allclose(y, np.where(mask, x / 0.75, 0.0), rtol=1e-6)
    assert 0.6 < mask.mean() < 0.9 and (mask == mask2).all()


def test_every_registered_op_has_a_torch_implementation() -> None:
    pytest.importorskip("torch")
    from irkit.runtimes.torch_runtime import TORCH_OPS
    missing = sorted(o.op_type for o in ops.all_ops() if o.op_type not in TORCH_OPS)
    assert not missing, f"add these ops to irkit/runtimes/torch_ops.py: {missing}"


def test_unsupported_op_names_the_op_and_the_node(monkeypatch) -> None:
    pytest.importorskip("torch")
    from irkit.runtimes import torch_runtime
    monkeypatch.delitem(torch_runtime.TORCH_OPS, "Relu")
    graph = Graph("g")
    x = graph.add_input("x", F32, (2,))
    graph.outputs = [ops.apply(graph, "Relu", [x], name="act").outputs[0]]
    with pytest.raises(UnsupportedOpError, match=r"Relu \(node 'act'\)"):
        torch_runtime.to_torch(graph)


def test_torch_module_api(tmp_path) -> None:
    """Inputs by position or name, numpy or tensors; buffers by default, parameters where
    trainable names them; named initializers; the runtime by name."""
    torch = pytest.importorskip("torch")
    from irkit.runtimes.torch_runtime import TorchRuntime, to_torch
    graph = Graph("g")
    x = graph.add_input("x", F32, ("N", 2))
    w, b = graph.add_initializer("w.0", np.ones((2, 3), F32)), graph.add_initializer(
        "b/0", np.arange(3, dtype=F32))
    graph.outputs = [ops.Gemm(x, w, b), ops.ArgMax(ops.Gemm(x, w, b), axis=1)]
    module = to_torch(graph, trainable=["w.0"])
    assert [n for n, _ in module.named_parameters()] == ["init_w_0"]
    assert set(module.initializers()) == {"w.0", "b/0"} and not module.initializer(
        "b/0").requires_grad
    feed = np.array([[1.0, 2.0]], F32)
    y, index = module(feed)
    assert y.tolist() == [[3.0, 4.0, 5.0]] and index.tolist() == [[2]]
    assert module(x=torch.from_numpy(feed))[0].tolist() == y.tolist()
    assert isinstance(get_runtime("torch"), TorchRuntime)
    out = get_runtime("torch").compile(graph)({"x": feed.astype(np.float64)})
    assert out[0].dtype == np.float32 and out[1].dtype == np.int64


def test_torch_runtime_without_torch_is_a_clear_error() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from irkit.runtimes import get_runtime\n"
            "try:\n    get_runtime('torch')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    # run outside the checkout: `python -c` puts the cwd first on sys.path, and the
    # repository's irkit/ lacks irkit.runtimes (mapped from runtimes/ at install time)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir()).stdout
    assert out.startswith(RuntimeUnavailableError.__name__) and "pip install" in out, out
