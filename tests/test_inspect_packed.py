"""`irkit inspect` counts packed element types as stored: int4/uint4/float4 two per byte,
int2/uint2 four, float8 one, bfloat16 two (irkit.ops.dtypes.stored_bytes)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli_checks import cli

ml_dtypes = pytest.importorskip("ml_dtypes")

CASES = [("int4", TensorProto.INT4, 1024), ("uint4", TensorProto.UINT4, 1024),
         ("float4_e2m1fn", TensorProto.FLOAT4E2M1, 1024), ("int2", TensorProto.INT2, 512),
         ("float8_e4m3fn", TensorProto.FLOAT8E4M3FN, 2048),
         ("bfloat16", TensorProto.BFLOAT16, 4096)]


@pytest.mark.parametrize(("name", "element", "stored"), CASES, ids=[c[0] for c in CASES])
def test_inspect_counts_stored_bytes(tmp_path, name, element, stored):
    weight = np.zeros((64, 32), np.float32).astype(getattr(ml_dtypes, name))  # 2048 elements
    nodes = [helper.make_node("Cast", ["wq"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    graph = helper.make_graph(
        nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [numpy_helper.from_array(weight, "wq")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    assert len(onnx.load(str(path)).graph.initializer[0].raw_data) == stored  # ONNX's own count
    result = cli("inspect", path, "--json", "--batch", "2")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["peak_memory"]["initializer_bytes"] == stored
    # Cast reads wq and writes wf (2048 float32); MatMul reads x (2x64) and wf, writes y (2x32)
    floats = 4 * (2048 + 2 * 64 + 2048 + 2 * 32)
    assert info["bytes_moved"] == floats + stored
