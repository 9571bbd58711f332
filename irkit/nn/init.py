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


_CHUNK = 1 << 20  # values drawn (in float64) at a time into the float32 result


def check_size(shape: tuple[int, ...], what: str) -> None:
    """Refuse a weight over the elements cap before anything is drawn (a recipe's weights
    also have a bytes budget: irkit.nn.module.weight_budget)."""
    from irkit.safe_io import limit as cap_of
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > cap_of("elements"):
        raise SpecError(f"{what} of shape {tuple(shape)} would have {count} elements, over the "
                        f"limit of {cap_of('elements')}; lower the layer's units, filters or "
                        "kernel size (or raise IRKIT_MAX_ELEMENTS)")


def _draw(shape: tuple[int, ...], sample) -> np.ndarray:
    """A float32 array filled by `sample(n)` (float64 draws) a chunk at a time: the values of
    one whole draw cast to float32, without its float64 copy (twice the weight's bytes)."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        flat[start:start + _CHUNK] = sample(min(_CHUNK, flat.size - start))
    return out


def make(kind: str, shape: tuple[int, ...], rng: np.random.Generator,
         what: str = "a weight") -> np.ndarray:
    """An initialised float32 array: zeros, ones, glorot_uniform, he_normal, he_uniform, normal.
    A shape over the elements cap (IRKIT_MAX_ELEMENTS) is refused in one line naming `what`
    before anything is drawn (a recipe's `units = 100000000` reached 5.4 GB); draws fill the
    float32 result in chunks (a float64 draw held three times the weight's bytes)."""
    check_size(shape, what)
    fan_in, fan_out = _fans(shape)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return _draw(shape, lambda n: rng.uniform(-limit, limit, n))
    if kind == "he_normal":
        return _draw(shape, lambda n: rng.normal(0.0, np.sqrt(2.0 / fan_in), n))
    if kind == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return _draw(shape, lambda n: rng.uniform(-limit, limit, n))
    if kind == "normal":
        return _draw(shape, lambda n: rng.normal(0.0, 0.05, n))
    raise SpecError(f"unknown initializer {kind!r}; use zeros, ones, glorot_uniform, "
                    "he_normal, he_uniform or normal")
