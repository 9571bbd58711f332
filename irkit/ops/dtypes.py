"""ONNX element types (the TensorProto.DataType numbers) and numpy dtypes, both ways.

irkit's own table, so that building graphs needs no `import onnx` (a quarter of a second at
start-up); the rarer types numpy has no native dtype for (bfloat16, float8, int4, ...) are
looked up in onnx's helper when asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irkit.errors import ShapeError

# TensorProto.DataType -> numpy, for the types numpy has natively (8 is STRING)
_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
          7: np.int64, 8: np.object_, 9: np.bool_, 10: np.float16, 11: np.float64,
          12: np.uint32, 13: np.uint64, 14: np.complex64, 15: np.complex128}
_NUMPY = {k: np.dtype(v) for k, v in _NUMPY.items()}
_ONNX = {v: k for k, v in _NUMPY.items()}


def onnx_dtype(dtype: Any) -> int:
    """The TensorProto element type of a numpy dtype; ShapeError if ONNX has none."""
    dtype = np.dtype(dtype)
    code = _ONNX.get(dtype)
    if code is not None:
        return code
    import onnx

    try:
        return onnx.helper.np_dtype_to_tensor_dtype(dtype)
    except (KeyError, ValueError):
        raise ShapeError(f"dtype {dtype} has no ONNX equivalent") from None


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a TensorProto element type; ShapeError for an unknown number."""
    dtype = _NUMPY.get(int(code))
    if dtype is not None:
        return dtype
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(code)))
    except (KeyError, ValueError, TypeError):
        raise ShapeError(f"{code} is not an ONNX element type") from None
