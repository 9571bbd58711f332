"""irkit's own knowledge of ONNX attribute and element types agrees with onnx's.

Export writes attributes with the types irkit's ops declare (`OpDef.attribute_kind`) and maps
element types with irkit's table (`irkit.ops.dtypes`), so that building and exporting graphs
needs neither onnx's schema registry nor, for building, onnx at all.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from irkit import ops
from irkit.errors import ShapeError
from irkit.ir import Graph
from irkit.onnx_io import to_onnx
from irkit.ops.dtypes import LAST_ELEMENT_TYPE, numpy_dtype, onnx_dtype

KINDS = {"FLOAT": "float", "INT": "int", "FLOATS": "floats", "INTS": "ints", "TENSOR": "tensor",
         "STRING": "string", "STRINGS": "strings"}


@pytest.mark.parametrize("op", ops.all_ops(), ids=lambda o: o.op_type)
def test_attribute_kinds_match_onnx_schemas(op) -> None:
    schema = onnx.defs.get_schema(op.op_type, 17, op.domain)
    newest = onnx.defs.get_schema(op.op_type, onnx.defs.onnx_opset_version(), op.domain)
    for name in op.attributes:
        if name not in schema.attributes:  # one a later opset added (Cast's saturate: 19)
            assert name in newest.attributes, f"{op.op_type}.{name} is in no opset"
            schema = newest
        want = KINDS[onnx.AttributeProto.AttributeType.Name(schema.attributes[name].type)]
        assert op.attribute_kind(name) == want, f"{op.op_type}.{name}"
    assert op.attribute_kind("no_such_attribute") is None


def test_export_writes_the_declared_types() -> None:
    """Ints given for float attributes, floats and arrays for int lists: written as declared."""
    g = Graph()
    x = g.add_input("x", np.float32, (1, 1, 4, 4))
    y = ops.LeakyRelu(ops.MaxPool(x, kernel_shape=np.array([2, 2]), strides=(2.0, 2.0)), alpha=1)
    g.outputs = [ops.ReduceMax(y, axes=(np.int64(2), 3), keepdims=True)]
    attrs = {(n.op_type, a.name): a.type for n in to_onnx(g).graph.node for a in n.attribute}
    A = onnx.AttributeProto
    assert attrs == {("MaxPool", "kernel_shape"): A.INTS, ("MaxPool", "strides"): A.INTS,
                     ("LeakyRelu", "alpha"): A.FLOAT, ("ReduceMax", "axes"): A.INTS,
                     ("ReduceMax", "keepdims"): A.INT}


@pytest.mark.parametrize("code", [c for c in onnx.TensorProto.DataType.values() if c])
def test_element_types_match_onnx(code: int) -> None:
    try:
        want = np.dtype(helper.tensor_dtype_to_np_dtype(code))
    except (KeyError, ValueError, TypeError):
        pytest.skip(f"onnx maps element type {code} to no numpy dtype")
    if code > LAST_ELEMENT_TYPE:  # FLOAT6 (opset 28), which no onnxruntime reads: refused
        with pytest.raises(ShapeError, match="not an ONNX element type irkit knows"):
            numpy_dtype(code)
        return
    assert numpy_dtype(code) == want
    if want != np.object_:
        assert onnx_dtype(want) == helper.np_dtype_to_tensor_dtype(want)


def test_unknown_types_name_the_problem() -> None:
    with pytest.raises(ShapeError, match="no ONNX equivalent"):
        onnx_dtype(np.dtype("datetime64[s]"))
    with pytest.raises(ShapeError, match="999 is not an ONNX element type"):
        numpy_dtype(999)
