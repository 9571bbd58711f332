"""A model's batch inputs from what a user gives: one array, or arrays by input name.

A model with one input takes an array (or a dict with that one name); a model with several
(`input_ids` + `attention_mask`) takes a dict {input name: array}, as an .npz with keys named
after the inputs gives it. Each array keeps its shape ((N, C, H, W), (N, T)) and is converted
to its input's dtype: float inputs get float32 (any numbers), integer inputs (token ids) keep
integers (float arrays must hold whole numbers) in range of the input's type. Everything
downstream handles the inputs as one tuple of arrays in the model's input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from irkit.data import check_finite
from irkit.errors import DataError


class Inputs(tuple):
    """Converted inputs: one array per model input, in input order (as_inputs passes them on
    as they are)."""


def as_inputs(x, specs: Sequence[tuple[str, np.dtype]], what: str) -> Inputs:
    """`x` (an array, or a dict by input name) as one array per input of `specs` ([(name,
    dtype)], the model's inputs in order); DataError naming `what` and the fix otherwise."""
    names = [n for n, _ in specs]
    if isinstance(x, Inputs) and len(x) == len(names):
        return x
    if isinstance(x, Mapping):
        unknown = [k for k in x if k not in names]
        missing = [n for n in names if n not in x]
        if unknown or missing:
            problem = (f"has no input named {unknown[0]!r}" if unknown else
                       f"needs input {missing[0]!r}")
            raise DataError(f"{what}: the model {problem}; give one array per model input, "
                            f"named {', '.join(names)}")
        arrays = [x[n] for n in names]
    elif len(names) == 1:
        arrays = [x]
    else:
        raise DataError(f"{what}: the model has {len(names)} inputs ({', '.join(names)}); "
                        "give a dict of arrays named after them (an .npz with those keys)")
    parts = Inputs(_converted(a, name, np.dtype(dtype), what)
                  for a, (name, dtype) in zip(arrays, specs))
    lengths = {len(p) for p in parts}
    if len(lengths) > 1:
        counts = ", ".join(f"{n} {len(p)}" for n, p in zip(names, parts))
        raise DataError(f"{what}: the inputs have different sample counts ({counts}); give "
                        "one row per sample in each")
    return parts


def _converted(a, name: str, dtype: np.dtype, what: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except (TypeError, ValueError):
        raise DataError(f"{what}: input {name!r} must be numbers") from None
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what}: input {name!r} holds {a.dtype} values; give numbers")
    if a.ndim == 0:
        raise DataError(f"{what}: input {name!r} must have one row per sample, not be a "
                        "scalar")
    if dtype.kind == "f":
        check_finite(a, f"{what} ({name})")
        return np.ascontiguousarray(a, dtype)
    if dtype.kind == "b":
        return np.ascontiguousarray(a != 0)
    if a.dtype.kind == "f" and not np.all(a == np.round(a)):
        raise DataError(f"{what}: input {name!r} is {dtype} (e.g. token ids) but the data "
                        "holds fractions; give whole numbers")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise DataError(f"{what}: input {name!r} holds values beyond {dtype}'s range")
    return np.ascontiguousarray(a, dtype)


def sample_count(parts: Inputs) -> int:
    return len(parts[0])


def take(parts: Inputs, index) -> Inputs:
    """The rows `index` (an index array or a slice) of every input."""
    return Inputs(p[index] for p in parts)


def first_rows(x, k: int):
    """The first `k` samples of raw data as a user gives it (an array or a dict)."""
    if isinstance(x, Mapping):
        return {n: np.asarray(a)[:k] for n, a in x.items()}
    return np.asarray(x)[:k]


def raw_count(x) -> int:
    """Samples in raw data (an array or a dict of arrays)."""
    if isinstance(x, Mapping):
        return len(np.asarray(next(iter(x.values())))) if x else 0
    return len(x)
