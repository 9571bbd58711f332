"""Element types and forms newer than opset 17 (float8, int4, float4, e8m0, int2; Cast saturate
and round_mode; scatter max/min; Equal on strings): the IR holds them, the numpy reference
computes them as onnx's ReferenceEvaluator does, and export writes the lowest opset that holds
the graph (17 when nothing newer is in it), refusing a lower `--opset` in one line."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_checks import cli, one_line_error
from conftest import reference_outputs
from irkit.passes import gradients
from irkit.runtimes.reference import ReferenceRuntime
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from irkit import ops
from irkit.errors import UnsupportedOpError
from irkit.ir import Graph
from irkit.onnx_io import from_onnx, to_onnx
from irkit.onnx_io._wire import tensor_bytes
from irkit.ops.dtypes import NEWER_TYPES, numpy_dtype, onnx_dtype

ml_dtypes = pytest.importorskip("ml_dtypes")
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

FLOAT8 = [T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ]
# extremes, ties, tiny values: where saturation and rounding modes differ
EDGES = np.array([0.0, -0.0, 0.1, 0.3, 1.5, 2.5, 3.0, -3.5, 7.5, 240.0, 448.0, 500.0, 6e4,
                  1e6, -1e6, 1e-7, -1e-9, 3e-39, np.inf, -np.inf, np.nan, 1.0 + 2 ** -8,
                  2 ** 127 * 1.5, 2 ** -127], np.float32)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _model(nodes, inputs, outputs, opset: int, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def _cast_model(to: int, opset: int = 25, **attrs) -> onnx.ModelProto:
    return _model([helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)],
                  [helper.make_tensor_value_info("x", T.FLOAT, [len(EDGES)])],
                  [helper.make_tensor_value_info("y", to, [len(EDGES)])], opset)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("code", sorted(NEWER_TYPES))
def test_the_dtype_table_is_onnx_s(code):
    dtype = numpy_dtype(code)
    assert dtype == np.dtype(helper.tensor_dtype_to_np_dtype(code))
    assert onnx_dtype(dtype) == code == helper.np_dtype_to_tensor_dtype(dtype)


@pytest.mark.parametrize("code", [c for c in NEWER_TYPES if c != T.FLOAT8E8M0])
@pytest.mark.parametrize("size", [1, 4, 7])
def test_tensors_are_written_as_onnx_writes_them(code, size):
    # sub-byte types packed (two int4 to a byte, four int2), the odd tail in the last byte
    values = np.resize(np.array([0, 1, -1, 2, -2, 3, 1], np.float32), size)
    if NEWER_TYPES[code][1].startswith("uint"):
        values = np.abs(values)
    array = values.astype(numpy_dtype(code))
    assert tensor_bytes(array, "w") == numpy_helper.from_array(array, "w").SerializeToString()


@pytest.mark.parametrize("to, attrs", [(t, {"saturate": s}) for t in FLOAT8 for s in (0, 1)]
                         + [(T.FLOAT8E8M0, {"saturate": s, "round_mode": m})
                            for s in (0, 1) for m in ("up", "down", "nearest")]
                         + [(t, {}) for t in (T.INT4, T.UINT4, T.FLOAT4E2M1, T.INT2, T.UINT2)])
def test_cast_computes_as_onnx_reference(to, attrs):
    model = _cast_model(to, **attrs)
    want = ReferenceEvaluator(model).run(None, {"x": EDGES})[0]
    graph = from_onnx(model)
    _same(ReferenceRuntime().compile(graph)({"x": EDGES})[0], want)
    exported = to_onnx(graph)
    _same(ReferenceEvaluator(exported).run(None, {"x": EDGES})[0], want)


@pytest.mark.parametrize("to, opset", [(T.FLOAT8E4M3FN, 19), (T.FLOAT8E5M2FNUZ, 19),
                                       (T.INT4, 21), (T.UINT4, 21), (T.FLOAT4E2M1, 23),
                                       (T.FLOAT8E8M0, 24), (T.INT2, 25), (T.UINT2, 25)])
def test_export_writes_the_lowest_opset_that_holds_the_type(to, opset):
    exported = to_onnx(from_onnx(_cast_model(to)))
    assert _opset(exported) == opset
    assert exported.ir_version == helper.find_min_ir_version_for(list(exported.opset_import))
    with pytest.raises(UnsupportedOpError) as err:
        to_onnx(from_onnx(_cast_model(to)), opset - 1)
    message = str(err.value)
    assert NEWER_TYPES[to][0] in message and f"--opset {opset}" in message
    assert "\n" not in message


def test_saturate_alone_needs_opset_19():
    # a float32 -> float8 Cast that sets saturate=0 keeps it: opset 19, where Cast has it
    exported = to_onnx(from_onnx(_cast_model(T.FLOAT8E4M3FN, saturate=0)))
    assert _opset(exported) == 19
    cast = next(n for n in exported.graph.node if n.op_type == "Cast")
    assert {a.name: a.i for a in cast.attribute}["saturate"] == 0


def test_a_model_that_needs_nothing_new_is_written_at_17():
    model = _cast_model(T.FLOAT16)  # an opset-25 file of opset-17 types and forms
    exported = to_onnx(from_onnx(model))
    assert _opset(exported) == 17 and exported.ir_version == 8
    assert not any(a.name == "saturate" for n in exported.graph.node for a in n.attribute)


def _session(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _quantized(kind: int, opset: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """Weights as a quantizer stores them: int4 (packed) or float8, a float scale, dequantized
    by Cast and Mul before the MatMul; and the raw weights."""
    rng = np.random.default_rng(0)
    raw = rng.integers(-8, 8, (5, 3)) if kind == T.INT4 else rng.normal(0, 2, (5, 3))
    weights = numpy_helper.from_array(raw.astype(numpy_dtype(kind)), "w")
    scale = numpy_helper.from_array(np.float32([0.5, 0.25, 2.0]), "scale")
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=T.FLOAT),
             helper.make_node("Mul", ["wf", "scale"], ["dq"]),
             helper.make_node("MatMul", ["x", "dq"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, ["N", 5])],
                   [helper.make_tensor_value_info("y", T.FLOAT, ["N", 3])], opset,
                   [weights, scale])
    return model, raw


@pytest.mark.parametrize("kind, opset", [(T.INT4, 21), (T.FLOAT8E4M3FN, 19), (T.FLOAT8E5M2, 19)])
def test_a_quantized_model_imports_and_runs(kind, opset):
    model, raw = _quantized(kind, opset)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    want = _session(model).run(None, {"x": x})[0]
    graph = from_onnx(model)
    exported = to_onnx(graph)
    assert _opset(exported) == opset
    np.testing.assert_allclose(_session(exported).run(None, {"x": x})[0], want, rtol=1e-6)
    np.testing.assert_allclose(ReferenceRuntime().compile(graph)({"x": x})[0], want, rtol=1e-5)
    # differentiable in x; the quantized weights get no gradient (Cast from them has none)
    from irkit.passes import gradients
    (dx,) = gradients(graph, graph.outputs[0].sum(), [graph.inputs[0]])
    graph.outputs = [dx]
    dq = raw.astype(numpy_dtype(kind)).astype(np.float32) * np.float32([0.5, 0.25, 2.0])
    np.testing.assert_allclose(_session(to_onnx(graph)).run(None, {"x": x})[0],
                               np.broadcast_to(dq.sum(axis=1), x.shape), rtol=1e-6)


def test_scatter_max_is_written_at_18():
    nodes = [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1,
                              reduction="max")]
    model = _model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", T.FLOAT, [2, 3])], 18,
                   [numpy_helper.from_array(np.int64([[0, 0], [2, 1]]), "i"),
                    numpy_helper.from_array(np.float32([[5, -1], [0, 9]]), "u")])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = _session(model).run(None, {"x": x})[0]
    graph = from_onnx(model)
    exported = to_onnx(graph)
    assert _opset(exported) == 18
    np.testing.assert_array_equal(_session(exported).run(None, {"x": x})[0], want)
    np.testing.assert_array_equal(ReferenceRuntime().compile(graph)({"x": x})[0], want)
    with pytest.raises(UnsupportedOpError, match="reduction max.*--opset 18"):
        to_onnx(graph, 17)


def test_equal_on_strings_is_written_at_19():
    nodes = [helper.make_node("Equal", ["a", "b"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info(n, T.STRING, [3]) for n in "ab"],
                   [helper.make_tensor_value_info("y", T.BOOL, [3])], 19)
    exported = to_onnx(from_onnx(model))
    assert _opset(exported) == 19
    a, b = np.array(["x", "y", "z"], object), np.array(["x", "q", "z"], object)
    np.testing.assert_array_equal(_session(exported).run(None, {"a": a, "b": b})[0],
                                  [True, False, True])


def test_cli_export_names_the_opset_it_writes_and_refuses_a_lower_one(tmp_path):
    source = tmp_path / "f8.onnx"
    onnx.save(_cast_model(T.FLOAT8E5M2), source)
    out = tmp_path / "out.onnx"
    result = cli("export", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "opset 19" in result.output and _opset(onnx.load(out)) == 19
    refused = cli("export", source, "-o", tmp_path / "low.onnx", "--opset", "17")
    one_line_error(refused, "FLOAT8E5M2", "--opset 19")
    assert not (tmp_path / "low.onnx").exists()


def test_cli_trains_a_quantized_model_and_writes_its_opset(tmp_path):
    # the -o model, the training file and a resume from it: opset 21, the int4 weights kept
    # (no gradient reaches them), the float scale trained
    model, raw = _quantized(T.INT4, 21)
    onnx.save(model, tmp_path / "q.onnx")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(24, 5)).astype(np.float32),
             y=rng.integers(0, 3, 24))
    result = cli("train", tmp_path / "q.onnx", "--data", tmp_path / "d.npz", "--epochs", "2",
                 "-o", tmp_path / "t.onnx", "--save-training", tmp_path / "t_train.onnx")
    assert result.exit_code == 0, result.output
    resumed = cli("train", tmp_path / "t_train.onnx", "--data", tmp_path / "d.npz", "--epochs",
                  "3", "-o", tmp_path / "t2.onnx")
    assert resumed.exit_code == 0, resumed.output
    for name in ("t.onnx", "t_train.onnx", "t2.onnx"):
        written = onnx.load(tmp_path / name)
        onnx.checker.check_model(written, full_check=True)
        assert _opset(written) == 21
        inits = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
        assert inits["w"].dtype == numpy_dtype(T.INT4)
        np.testing.assert_array_equal(inits["w"].astype(np.int8), raw)
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "t2.onnx")
               .graph.initializer}
    assert not np.array_equal(trained["scale"], np.float32([0.5, 0.25, 2.0]))


def test_a_packed_tensor_of_the_wrong_size_is_refused():
    # 5 int4 take 3 bytes; 5 bytes (one per element, unpacked) is a damaged file
    from irkit.errors import ModelFileError
    bad = T(name="w", data_type=T.INT4, dims=[5], raw_data=b"\x01\x02\x03\x04\x05")
    model = _model([helper.make_node("Cast", ["w"], ["y"], to=T.FLOAT)], [],
                   [helper.make_tensor_value_info("y", T.FLOAT, [5])], 21, [bad])
    with pytest.raises(ModelFileError, match="raw_data has 5 bytes.*need 3"):
        from_onnx(model)


def test_a_float8_constant_node_imports():
    # a Constant of float8 data (an exporter's folded weight), read as its array
    value = numpy_helper.from_array(np.array([1.5, -2.0, 448.0], ml_dtypes.float8_e4m3fn))
    nodes = [helper.make_node("Constant", [], ["c"], value=value),
             helper.make_node("Cast", ["c"], ["cf"], to=T.FLOAT),
             helper.make_node("Add", ["x", "cf"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", T.FLOAT, [3])], 19)
    graph = from_onnx(model)
    x = np.float32([1, 2, 3])
    np.testing.assert_array_equal(_session(to_onnx(graph)).run(None, {"x": x})[0],
                                  x + np.float32([1.5, -2.0, 448.0]))


def test_a_dynamo_export_with_float8_weights_imports_and_differentiates(tmp_path):
    # torch's default exporter (opset 20+) keeping a float8 buffer (optimize=False: its
    # optimizer folds the dequantization away); written back at 19, gradients equal torch's
    torch = pytest.importorskip("torch")
    from irkit.passes import gradients

    class Dequantized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("w8", torch.randn(5, 3, generator=generator)
                                 .to(torch.float8_e4m3fn))
            self.scale = torch.nn.Parameter(torch.tensor([0.5, -0.25, 2.0]))

        def forward(self, x):
            return torch.relu(x @ (self.w8.to(torch.float32) * self.scale))

    module, x = Dequantized().eval(), torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    program = torch.onnx.export(module, (x,), dynamo=True, optimize=False,
                                dynamic_shapes={"x": {0: torch.export.Dim("N")}})
    model = program.model_proto
    assert _opset(model) >= 18 and any(t.data_type == T.FLOAT8E4M3FN
                                       for t in model.graph.initializer)
    graph = from_onnx(model)
    name = graph.inputs[0].name
    exported = to_onnx(graph)
    assert _opset(exported) == 19
    np.testing.assert_allclose(_session(exported).run(None, {name: x.numpy()})[0],
                               module(x).detach().numpy(), rtol=1e-6, atol=1e-6)
    module(x).sum().backward()
    (dscale,) = gradients(graph, graph.outputs[0].sum(), [graph.initializers["scale"]])
    graph.outputs = [dscale]
    np.testing.assert_allclose(ReferenceRuntime().compile(graph)({name: x.numpy()})[0],
                               module.scale.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_scatter_nd_max_computes_and_has_no_gradient() -> None:
    # reduction max/min (opset 18): computed (export declares 18), not differentiable
    graph = Graph("scatter")
    x = graph.add_input("x", np.float64, (3, 4))
    updates = np.array([[5.0, -1.0, 20.0, 0.0], [-3.0, 9.0, 1.0, 2.0]])
    y = ops.ScatterND(x, np.array([[0], [0]]), updates, reduction="max")
    graph.outputs = [y]
    data = np.arange(12.0).reshape(3, 4)
    want = data.copy()
    want[0] = np.maximum(data[0], updates.max(axis=0))
    np.testing.assert_array_equal(reference_outputs(graph, {"x": data})[0], want)
    with pytest.raises(UnsupportedOpError, match="no gradient for reduction 'max'"):
        gradients(graph, ops.ReduceSum(y, keepdims=0), [x])
    with pytest.raises(UnsupportedOpError, match="reduction 'avg' is not one of"):
        ops.ScatterND(x, np.array([[0]]), np.ones((1, 4)), reduction="avg")
