"""numpy arrays <-> onnxruntime OrtValues, the newer element types included.

onnxruntime's Python API takes and gives numpy arrays of numpy's own types only; the types
numpy has no native form for (bfloat16, float8, int4, uint4, float4, int2, ...: ml_dtypes
arrays) go in and come out as OrtValues holding their bytes as ONNX stores them (sub-byte
types packed). `run` is the one way irkit feeds a session plain arrays of any type.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from irkit.errors import ShapeError
from irkit.ops.dtypes import NEWER_TYPES, numpy_dtype, onnx_dtype, type_name

# onnxruntime's names of the types its Python API does not turn into numpy arrays (no `import
# onnx` here: a plain training run never loads it; the newer types' bytes go through onnx's
# numpy_helper, imported when one is met)
ORT_NEWER_TYPES = {f"tensor({name.lower()})": code for code, (name, *_) in NEWER_TYPES.items()}
_CODES = {f"tensor({type_name(c).lower()})": c for c in (*range(1, 16), *NEWER_TYPES)}


def newer_type(dtype: Any) -> bool:
    """An ml_dtypes type (bfloat16, float8, int4, ...), which onnxruntime does not take as is."""
    try:
        return onnx_dtype(dtype) >= 16
    except ShapeError:
        return False


# the float element types a model's features can come in: float32/16/64, bfloat16, float8, float4
FLOAT_CODES = (1, 10, 11, 16, 17, 18, 19, 20, 23)


def element_code(ort_type: str) -> int | None:
    """The TensorProto element type of an onnxruntime type name ('tensor(bfloat16)' -> 16),
    None for a non-tensor or unknown type."""
    return _CODES.get(ort_type)


def float_dtype(ort_type: str) -> np.dtype | None:
    """The numpy dtype (ml_dtypes for the newer ones) of a float tensor type, else None."""
    code = element_code(ort_type)
    return numpy_dtype(code) if code in FLOAT_CODES else None


def to_ortvalue(array: np.ndarray) -> ort.OrtValue:
    """A CPU OrtValue of `array`; a newer type is copied in as ONNX stores it."""
    array = np.require(array, requirements="C")
    if not newer_type(array.dtype):
        return ort.OrtValue.ortvalue_from_numpy(array)
    from onnx import numpy_helper
    proto = numpy_helper.from_array(array)
    value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), proto.data_type)
    raw = proto.raw_data
    if len(raw) != value.tensor_size_in_bytes():
        raise ValueError(f"{len(raw)} bytes of {array.dtype} for an OrtValue of "
                         f"{value.tensor_size_in_bytes()} bytes")
    ctypes.memmove(value.data_ptr(), raw, len(raw))
    return value


def from_ortvalue(value: ort.OrtValue) -> Any:
    """The numpy array of an OrtValue, a newer type read from its bytes (ml_dtypes)."""
    if not value.is_tensor():
        return value.numpy()
    code = ORT_NEWER_TYPES.get(value.data_type())
    if code is None:
        return value.numpy()
    from onnx import helper, numpy_helper
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    tensor = helper.make_tensor("value", code, value.shape(), raw, raw=True)
    return numpy_helper.to_array(tensor)


def run(session: ort.InferenceSession, names: Sequence[str] | None,
        feeds: Mapping[str, Any], options: ort.RunOptions | None = None) -> list[Any]:
    """`session.run(names, feeds, options)` for arrays of any element type: when a feed or
    a fetched output is of a newer type, the run goes through OrtValues (CPU)."""
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    wanted = list(outputs) if names is None else list(names)
    if any(a.dtype.kind in "OSU" for a in arrays.values()) or not (
            any(newer_type(a.dtype) for a in arrays.values())
            or any(outputs.get(n) in ORT_NEWER_TYPES for n in wanted)):
        return session.run(wanted, arrays, options)
    values = session.run_with_ort_values(wanted, {k: to_ortvalue(a) for k, a in arrays.items()},
                                         options)
    return [from_ortvalue(v) for v in values]
