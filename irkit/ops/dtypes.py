"""ONNX element types (the TensorProto.DataType numbers) and numpy dtypes, both ways: the one
table of them in irkit.

The types numpy has natively are here; the newer ones (bfloat16, float8, int4, float4, e8m0,
int2) take their numpy forms from `ml_dtypes` (onnx's own dependency), imported only when one
is asked for, so that building graphs needs neither `import onnx` nor ml_dtypes. Each newer
type has the first ai.onnx opset that declares it (`element_opset`) and its width in bits
(`element_bits`: int4/uint4/float4 pack two to a byte in a file, int2/uint2 four).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from irkit.errors import ShapeError

# TensorProto.DataType -> numpy, for the types numpy has natively (8 is STRING)
_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
          7: np.int64, 8: np.object_, 9: np.bool_, 10: np.float16, 11: np.float64,
          12: np.uint32, 13: np.uint64, 14: np.complex64, 15: np.complex128}
_NUMPY = {k: np.dtype(v) for k, v in _NUMPY.items()}
_ONNX = {v: k for k, v in _NUMPY.items()}

# the newer types: TensorProto.DataType -> (ONNX name, ml_dtypes name, first opset, bits)
NEWER_TYPES = {
    16: ("BFLOAT16", "bfloat16", 13, 16),
    17: ("FLOAT8E4M3FN", "float8_e4m3fn", 19, 8),
    18: ("FLOAT8E4M3FNUZ", "float8_e4m3fnuz", 19, 8),
    19: ("FLOAT8E5M2", "float8_e5m2", 19, 8),
    20: ("FLOAT8E5M2FNUZ", "float8_e5m2fnuz", 19, 8),
    21: ("UINT4", "uint4", 21, 4),
    22: ("INT4", "int4", 21, 4),
    23: ("FLOAT4E2M1", "float4_e2m1fn", 23, 4),
    24: ("FLOAT8E8M0", "float8_e8m0fnu", 24, 8),
    25: ("UINT2", "uint2", 25, 2),
    26: ("INT2", "int2", 25, 2),
}
LAST_ELEMENT_TYPE = max(NEWER_TYPES)  # FLOAT6 (27, 28) and later: no onnxruntime kernel reads them
FLOAT8 = (17, 18, 19, 20)  # the float8 types Cast's `saturate` acts on
FLOAT8E8M0 = 24


@functools.cache
def _newer() -> dict[int, np.dtype]:
    import ml_dtypes

    table = {code: np.dtype(getattr(ml_dtypes, name)) for code, (_, name, _, _)
             in NEWER_TYPES.items()}
    _ONNX.update({dtype: code for code, dtype in table.items()})
    return table


def onnx_dtype(dtype: Any) -> int:
    """The TensorProto element type of a numpy dtype; ShapeError if ONNX has none."""
    dtype = np.dtype(dtype)
    code = _ONNX.get(dtype)
    if code is None:  # perhaps one of ml_dtypes' types, whose table is built on first use
        _newer()
        code = _ONNX.get(dtype)
    if code is None:
        raise ShapeError(f"dtype {dtype} has no ONNX equivalent")
    return code


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a TensorProto element type; ShapeError for an unknown number."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        raise ShapeError(f"{code!r} is not an ONNX element type") from None
    dtype = _NUMPY.get(code)
    if dtype is None and code in NEWER_TYPES:
        dtype = _newer()[code]
    if dtype is None:
        raise ShapeError(f"{code} is not an ONNX element type irkit knows (1 to "
                         f"{LAST_ELEMENT_TYPE})")
    return dtype


def type_name(code: int) -> str:
    """The ONNX name of an element type (FLOAT8E4M3FN), or its number."""
    if code in NEWER_TYPES:
        return NEWER_TYPES[code][0]
    names = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
             8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
             14: "COMPLEX64", 15: "COMPLEX128", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2"}
    return names.get(code, f"number {code}")


def element_opset(code: int) -> int:
    """The first ai.onnx opset whose ops take this element type (1 for the original ones)."""
    return NEWER_TYPES[code][2] if code in NEWER_TYPES else 1


def element_bits(code: int) -> int:
    """The bits one element takes in a file (8 per byte for the native types)."""
    if code in NEWER_TYPES:
        return NEWER_TYPES[code][3]
    return 0 if code == 8 else _NUMPY[code].itemsize * 8


def stored_bytes(code: int, count: int) -> int:
    """The bytes `count` elements take in a TensorProto's raw_data (sub-byte types packed)."""
    return math.ceil(count * element_bits(code) / 8)


def differentiable(dtype: Any) -> bool:
    """Whether gradients flow through values of this dtype: float16/32/64. float8_e5m2 is a
    float to numpy too (kind "f") but, like the other float8 and sub-byte types, holds
    quantized data that no gradient reaches."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" and dtype.itemsize >= 2
