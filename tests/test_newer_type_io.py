"""Graph inputs and outputs of the newer element types (bfloat16, float8, int4) through irkit's
own runtime and `irkit predict`: fed from .npz and from Python, equal to onnx's
ReferenceEvaluator."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from irkit.runtimes import ort_values
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.cli_checks import cli

ml_dtypes = pytest.importorskip("ml_dtypes")

RNG = np.random.default_rng(0)
WEIGHT = RNG.standard_normal((4, 3)).astype(np.float32)


def _classifier(path, element: int, out_element: int = TensorProto.FLOAT) -> str:
    """x (N, 4) of `element` -> Cast(float) -> MatMul -> Softmax -> Cast(out_element)."""
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=1),
             helper.make_node("Cast", ["p"], ["y"], to=out_element)]
    graph = helper.make_graph(
        nodes, "newer", [helper.make_tensor_value_info("x", element, ["N", 4])],
        [helper.make_tensor_value_info("y", out_element, ["N", 3])],
        [numpy_helper.from_array(WEIGHT, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)


def _features(dtype) -> np.ndarray:
    """Rows that the element type holds exactly (so .npz floats and typed feeds agree)."""
    return RNG.standard_normal((7, 4)).astype(np.float32).astype(dtype).astype(np.float32)


def close(got: np.ndarray, expected: np.ndarray) -> None:
    """float32 sums of onnxruntime and numpy may differ in the last bit."""
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


CASES = [("bfloat16", TensorProto.BFLOAT16, TensorProto.BFLOAT16),
         ("float8_e4m3fn", TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT)]


@pytest.mark.parametrize(("name", "element", "out_element"), CASES, ids=[c[0] for c in CASES])
def test_predict_newer_input_types(tmp_path, name, element, out_element):
    dtype = getattr(ml_dtypes, name)
    model = _classifier(tmp_path / f"{name}.onnx", element, out_element)
    x = _features(dtype)
    expected = ReferenceEvaluator(model).run(None, {"x": x.astype(dtype)})[0]
    expected = np.asarray(expected).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    result = cli("predict", model, "--data", tmp_path / "data.npz", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    close(np.array(got["outputs"], np.float32), expected)
    assert got["labels"] == expected.argmax(axis=1).tolist()

    from irkit.cli.predictor import OnnxPredictor, predict
    predictor = OnnxPredictor(model)
    close(predictor(x), expected)  # floats in, cast to the input type
    close(predictor(x.astype(dtype)), expected)
    assert predict(predictor, x).labels.tolist() == expected.argmax(axis=1).tolist()


def test_runtime_feeds_and_fetches_newer_types():
    """A compiled irkit graph with bfloat16 and int4 inputs and a bfloat16 output on
    onnxruntime (OrtGraph), equal to onnx's ReferenceEvaluator."""
    from irkit.runtimes.onnxruntime import OrtGraph

    from irkit.onnx_io import from_onnx
    nodes = [helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["af", "qf"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=TensorProto.BFLOAT16)]
    graph = helper.make_graph(
        nodes, "io", [helper.make_tensor_value_info("a", TensorProto.BFLOAT16, [2, 5]),
                      helper.make_tensor_value_info("q", TensorProto.INT4, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    feeds = {"a": RNG.standard_normal((2, 5)).astype(ml_dtypes.bfloat16),
             "q": RNG.integers(-8, 8, (2, 5)).astype(ml_dtypes.int4)}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    got = OrtGraph(from_onnx(model))(feeds)[0]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), expected.astype(np.float32))


@pytest.mark.parametrize("name", ["bfloat16", "float8_e5m2", "int4", "uint4", "float4_e2m1fn",
                                  "int2"])
def test_ortvalue_round_trip(name):
    dtype = getattr(ml_dtypes, name)
    array = RNG.integers(-1, 2, (3, 5)).astype(np.float32) if "int" not in name else \
        RNG.integers(0, 2, (3, 5))
    array = array.astype(dtype)
    back = ort_values.from_ortvalue(ort_values.to_ortvalue(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))
