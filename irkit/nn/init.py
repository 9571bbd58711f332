"""Weight initializers by name; every one draws from the generator it is given."""

from __future__ import annotations

import numpy as np

from irkit.errors import SpecError


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        return max(shape[0] if shape else 1, 1), max(shape[0] if shape else 1, 1)
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if len(shape) == 2:  # Dense weights are (fan_in, fan_out)
        return shape[0], shape[1]
    return shape[1] * receptive, shape[0] * receptive  # conv weights are (out, in, k...)


def make(kind: str, shape: tuple[int, ...], rng: np.random.Generator,
         what: str = "a weight") -> np.ndarray:
    """An initialised float32 array: zeros, ones, glorot_uniform, he_normal, he_uniform, normal.
    A shape over the elements cap (IRKIT_MAX_ELEMENTS) is refused in one line naming `what`
    before anything is drawn (a recipe's `units = 100000000` reached 5.4 GB)."""
    from irkit.safe_io import limit as cap_of
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > cap_of("elements"):
        raise SpecError(f"{what} of shape {tuple(shape)} would have {count} elements, over the "
                        f"limit of {cap_of('elements')}; lower the layer's units, filters or "
                        "kernel size (or raise IRKIT_MAX_ELEMENTS)")
    fan_in, fan_out = _fans(shape)
    if kind == "zeros":
        a = np.zeros(shape)
    elif kind == "ones":
        a = np.ones(shape)
    elif kind == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        a = rng.uniform(-limit, limit, shape)
    elif kind == "he_normal":
        a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif kind == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        a = rng.uniform(-limit, limit, shape)
    elif kind == "normal":
        a = rng.normal(0.0, 0.05, shape)
    else:
        raise SpecError(f"unknown initializer {kind!r}; use zeros, ones, glorot_uniform, "
                        "he_normal, he_uniform or normal")
    return a.astype(np.float32)
