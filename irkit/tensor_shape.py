"""Shapes and indexing for `irkit.numpy`: reshape, transpose, concatenate, stack,
expand_dims, squeeze, broadcast_to; `x[...]` reads (basic indexing and one integer array) and
the functional writes `x.at[...].set(v)` / `.add(v)`, eagerly and inside traces.

Reads are Slice (all slices at once), Gather (an int or an integer array), Unsqueeze (None);
writes are one ScatterND at the flat positions numpy's own indexing picks, so `.at[...]`
takes every numpy index (masks, several arrays) on a static shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.errors import ShapeError, TraceError
from irkit.tensors import Tensor, apply, coerce, is_traced, result_dtype

_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _t(x: Any) -> Tensor:
    from irkit.ir import Value
    if isinstance(x, Tensor):
        return x
    return Tensor._traced(x) if isinstance(x, Value) else Tensor(x)


def _ints(values: Sequence[int]) -> np.ndarray:
    return np.array([int(v) for v in values], np.int64)


def reshape(x: Any, *shape: Any) -> Tensor:
    """x with a new shape (one dim may be -1); `reshape(x, 2, 3)` or `reshape(x, (2, 3))`."""
    dims = shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape
    return apply("Reshape", [_t(x), _ints(np.atleast_1d(dims) if np.isscalar(dims) else dims)])


def ravel(x: Any) -> Tensor:
    """x as one dimension."""
    return reshape(x, -1)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """x with its axes permuted (reversed when `axes` is None)."""
    x = _t(x)
    perm = None if axes is None else [int(a) % max(x.ndim, 1) for a in axes]
    return apply("Transpose", [x], {"perm": perm})


def swapaxes(x: Any, a: int, b: int) -> Tensor:
    """x with axes a and b exchanged."""
    x = _t(x)
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def concatenate(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """The tensors joined along an existing `axis` (dtypes promoted)."""
    if not xs:
        raise ShapeError("concatenate needs at least one tensor")
    dtype = result_dtype(*xs)
    return apply("Concat", [_t(coerce(x, dtype)) for x in xs], {"axis": int(axis)})


def expand_dims(x: Any, axis: int | Sequence[int]) -> Tensor:
    """x with a new axis of size 1 at `axis` (an int or several)."""
    return apply("Unsqueeze", [_t(x), _ints(np.atleast_1d(axis))])


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """x without its size-1 axes (only `axis`, if given)."""
    x = _t(x)
    if axis is None:
        dims = x.shape
        if not all(isinstance(d, int) for d in dims):
            raise ShapeError(f"squeeze of shape {dims}: name the axes (its dims are symbolic)")
        axis = [i for i, d in enumerate(dims) if d == 1]
        if not axis:
            return x
    return apply("Squeeze", [x, _ints(np.atleast_1d(axis))])


def stack(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """The tensors joined along a new `axis`."""
    if not xs:
        raise ShapeError("stack needs at least one tensor")
    rank = _t(xs[0]).ndim
    axis = int(axis) % (rank + 1)
    return concatenate([expand_dims(x, axis) for x in xs], axis=axis)


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """x broadcast to `shape`."""
    return apply("Expand", [_t(x), _ints(shape)])


# ---- reading: x[index] ------------------------------------------------------------------------
def _entries(x: Tensor, index: Any) -> list[Any]:
    """The index as a list with one entry per axis of x (Ellipsis expanded, masks turned into
    integer arrays) plus None entries; arrays become int64 numpy arrays or traced Tensors."""
    index = index if isinstance(index, tuple) else (index,)
    out: list[Any] = []
    for e in index:
        if isinstance(e, Tensor) and e.is_traced:
            if e.dtype == np.bool_:
                raise TraceError("indexing with a traced boolean mask gives a shape known only "
                                 "at run time; use inp.where(mask, x, 0) instead")
            out.append(e)
        elif isinstance(e, (list, np.ndarray, Tensor)):
            a = np.asarray(e.numpy() if isinstance(e, Tensor) else e)
            if a.dtype == np.bool_:
                out.extend(np.nonzero(a))
            elif a.dtype.kind in "iu":
                out.append(a.astype(np.int64))
            else:
                raise ShapeError(f"an index must be ints, slices or None, not {a.dtype} data")
        elif e is None or e is Ellipsis or isinstance(e, (slice, int, np.integer)):
            out.append(int(e) if isinstance(e, np.integer) else e)
        else:
            raise ShapeError(f"an index must be ints, slices or None, not {type(e).__name__}")
    if sum(e is Ellipsis for e in out) > 1:
        raise ShapeError("an index can have only one ellipsis (...)")
    used = sum(e is not None and e is not Ellipsis for e in out)
    if used > x.ndim:
        raise ShapeError(f"too many indices ({used}) for a tensor of rank {x.ndim}")
    if Ellipsis in [e for e in out if not isinstance(e, (np.ndarray, Tensor))]:
        i = next(k for k, e in enumerate(out) if e is Ellipsis)
        out[i:i + 1] = [slice(None)] * (x.ndim - used)
    return out + [slice(None)] * (x.ndim - sum(e is not None for e in out))


def _check_range(i: Any, dim: Any, axis: int) -> None:
    if not isinstance(dim, int):
        return
    lo, hi = (i, i) if isinstance(i, int) else (
        (int(i.min()), int(i.max())) if isinstance(i, np.ndarray) and i.size else (0, 0))
    if lo < -dim or hi >= dim:
        bad = lo if lo < -dim else hi
        raise ShapeError(f"index {bad} is out of range for axis {axis} of size {dim}")


def getitem(x: Any, index: Any) -> Tensor:
    """x[index]: ints, slices, None, ... and one integer array (numpy's semantics)."""
    x = _t(x)
    entries = _entries(x, index)
    axis_entries = [e for e in entries if e is not None]
    arrays = [k for k, e in enumerate(axis_entries) if isinstance(e, (np.ndarray, Tensor))]
    picks = [k for k, e in enumerate(axis_entries) if not isinstance(e, slice)]
    if len(arrays) > 1:
        raise ShapeError("x[...] takes one integer array per index; index again (x[a][:, b]) "
                         "or use x.at[...] for writes")
    if arrays and picks != list(range(picks[0], picks[-1] + 1)):
        raise ShapeError("x[...]: an integer array and ints separated by a slice; index in two "
                         "steps")
    slices = [(k, e) for k, e in enumerate(axis_entries)
              if isinstance(e, slice) and e != slice(None)]
    if slices:
        x = _slice(x, slices)
    for k in reversed(picks):
        e = axis_entries[k]
        if not isinstance(e, Tensor):
            _check_range(e, x.shape[k], k)
        idx = e if isinstance(e, Tensor) else np.asarray(e, np.int64)
        x = apply("Gather", [x, coerce(idx, np.int64) if isinstance(idx, Tensor) else idx],
                  {"axis": k})
    nones, pos = [], 0
    for e in entries:
        if e is None:
            nones.append(pos)
            pos += 1
        elif isinstance(e, slice):
            pos += 1
        elif not isinstance(e, int):
            pos += e.ndim
    return expand_dims(x, nones) if nones else x


def _slice(x: Tensor, slices: list[tuple[int, slice]]) -> Tensor:
    starts, ends, axes, steps = [], [], [], []
    for axis, s in slices:
        step = 1 if s.step is None else int(s.step)
        if step == 0:
            raise ShapeError("a slice step cannot be zero")
        starts.append((0 if step > 0 else _INT64_MAX) if s.start is None else int(s.start))
        ends.append((_INT64_MAX if step > 0 else _INT64_MIN) if s.stop is None else int(s.stop))
        axes.append(axis)
        steps.append(step)
    return apply("Slice", [x, _ints(starts), _ints(ends), _ints(axes), _ints(steps)])


# ---- writing: x.at[index].set(v) ------------------------------------------------------------
class At:
    """`x.at[index]`: the functional writes of JAX (`.set(v)`, `.add(v)`, `.multiply(v)`),
    each a new tensor; `x` is unchanged."""

    def __init__(self, x: Tensor) -> None:
        self._x = x

    def __getitem__(self, index: Any) -> IndexUpdate:
        return IndexUpdate(self._x, index)


class IndexUpdate:
    """One `x.at[index]`; call `.set`, `.add`, `.multiply` or `.get`."""

    def __init__(self, x: Tensor, index: Any) -> None:
        self._x, self._index = x, index

    def get(self) -> Tensor:
        """x[index]."""
        return getitem(self._x, self._index)

    def set(self, v: Any) -> Tensor:
        """x with x[index] replaced by v (broadcast)."""
        return self._scatter(v, "none")

    def add(self, v: Any) -> Tensor:
        """x with v added at x[index] (repeated positions add up)."""
        return self._scatter(v, "add")

    def multiply(self, v: Any) -> Tensor:
        """x with x[index] multiplied by v (a position named twice is multiplied once)."""
        ones = Tensor(np.ones(self._x.shape, self._x.dtype))
        return apply("Mul", [self._x, IndexUpdate(ones, self._index).set(v)])

    def _scatter(self, v: Any, reduction: str) -> Tensor:
        x = self._x
        if not all(isinstance(d, int) for d in x.shape):
            raise ShapeError(f"x.at[...] needs a static shape, not {x.shape}")
        index = self._index if isinstance(self._index, tuple) else (self._index,)
        if any(is_traced(e) for e in index):
            raise TraceError("x.at[...] takes constant indices; a traced index is not supported")
        index = tuple(e.numpy() if isinstance(e, Tensor) else e for e in index)
        try:
            positions = np.arange(x.size).reshape(x.shape)[index]
        except IndexError as e:
            raise ShapeError(f"x.at[...] on shape {x.shape}: {e}") from None
        where = np.stack(np.unravel_index(np.ravel(positions), x.shape), axis=-1)
        updates = broadcast_to(_t(coerce(v, x.dtype)), np.shape(positions))
        updates = reshape(updates, -1)
        return apply("ScatterND", [x, where.astype(np.int64), updates],
                     {"reduction": reduction})
