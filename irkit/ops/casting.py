"""Cast's numpy reference for every element type irkit knows, with Cast's `saturate` (opset 19)
and `round_mode` (opset 24).

- to float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz: `saturate` (the default) clamps values beyond the
  type's range, infinities included, to its largest finite value; without it they overflow to
  inf or NaN as the type has them; NaN stays NaN; rounding is to nearest even;
- to float8 e8m0 (powers of two, no sign): the float32 exponent, rounded up, down or to nearest
  by `round_mode` (a tie rounds up except below the smallest normal float32); inf and NaN give
  NaN; `saturate` keeps a round-up below the type's NaN code;
- every other cast is numpy's (`astype`, with ml_dtypes' forms of the newer types: float to
  int4/uint4/int2/uint2 truncates and gives 0 out of range, float4e2m1 saturates).
"""

from __future__ import annotations

import numpy as np

from irkit.ops.dtypes import FLOAT8, FLOAT8E8M0, numpy_dtype

_EXPONENT, _MANTISSA = 0xFF, 0x7FFFFF
_HALF = 0x400000  # the mantissa bit worth half of the exponent's step


def cast_array(x: np.ndarray, to: int, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """`x` cast to ONNX element type `to` as ONNX's Cast defines it."""
    x = np.asarray(x)
    dtype = numpy_dtype(to)
    if to == FLOAT8E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if to in FLOAT8 and saturate and x.dtype.kind == "f":
        import ml_dtypes

        info = ml_dtypes.finfo(dtype)
        with np.errstate(invalid="ignore"):
            x = np.clip(x, np.float32(info.min), np.float32(info.max))
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)


def _to_e8m0(x: np.ndarray, saturate: int, round_mode: str) -> np.ndarray:
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"round_mode {round_mode!r}: use up, down or nearest")
    bits = np.asarray(x, np.float32).view(np.uint32)
    exponent = ((bits >> 23) & _EXPONENT).astype(np.uint16)
    mantissa = bits & _MANTISSA
    special = exponent == _EXPONENT
    if round_mode == "up":
        step = mantissa != 0
    elif round_mode == "down":
        step = np.zeros(bits.shape, bool)
    else:
        step = (mantissa > _HALF) | ((mantissa == _HALF) & (exponent > 0))
    if saturate:
        step &= exponent != _EXPONENT - 1
    code = np.where(special, _EXPONENT, np.minimum(exponent + step, _EXPONENT))
    return code.astype(np.uint8).view(numpy_dtype(FLOAT8E8M0))
