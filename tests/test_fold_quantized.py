"""`irkit optimize` keeps quantized weights packed: constant folding leaves a dequantization
(Cast(int4/float8 weight) * scale) alone and folds everything else as before."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.cli_checks import cli

ml_dtypes = pytest.importorskip("ml_dtypes")


def _dequantized_matmul(path, element: int, dtype, extra_float_chain: bool = False) -> str:
    """y = x @ (Cast(wq) * scale) with wq of `element`; optionally a foldable float chain
    (b = Add(c1, c2)) added to y."""
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, (64, 32)).astype(np.float32) / (1 if element == TensorProto.INT4
                                                           else 8)
    nodes = [helper.make_node("Cast", ["wq"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["wf", "scale"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["m"])]
    inits = [numpy_helper.from_array(w.astype(dtype), "wq"),
             numpy_helper.from_array(np.float32([0.05]), "scale")]
    if extra_float_chain:
        nodes += [helper.make_node("Add", ["c1", "c2"], ["b"]),
                  helper.make_node("Add", ["m", "b"], ["y"])]
        inits += [numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), n)
                  for n in ("c1", "c2")]
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 64])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)


CASES = [("int4", TensorProto.INT4), ("float8_e4m3fn", TensorProto.FLOAT8E4M3FN)]


@pytest.mark.parametrize(("name", "element"), CASES, ids=[c[0] for c in CASES])
def test_optimize_keeps_packed_weights(tmp_path, name, element):
    src = _dequantized_matmul(tmp_path / "q.onnx", element, getattr(ml_dtypes, name),
                              extra_float_chain=True)
    out = tmp_path / "q.opt.onnx"
    result = cli("optimize", src, "-o", out)
    assert result.exit_code == 0, result.output
    before, after = onnx.load(src), onnx.load(str(out))
    packed = {t.name: t for t in before.graph.initializer if t.data_type == element}
    kept = [t for t in after.graph.initializer if t.data_type == element]
    assert [t.raw_data for t in kept] == [t.raw_data for t in packed.values()]
    assert max(len(t.raw_data) for t in after.graph.initializer) <= len(kept[0].raw_data)
    assert "Add" not in [n.op_type for n in after.graph.node if "c1" in n.input]
    assert len(after.graph.node) < len(before.graph.node)  # the float chain still folds
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    want = ReferenceEvaluator(before).run(None, {"x": x})[0]
    got = ReferenceEvaluator(after).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
