"""Index ops: Gather, GatherElements, ScatterElements, GatherND, ScatterND, TopK, Trilu and
Range (ai.onnx opset-17 semantics). Slice's gradients (irkit.ops.shape) gather too, and find
Gather through the registry, as this module imports irkit.ops.shape.

GatherND and ScatterND are each other's gradient (GatherND's adds g back with ScatterND
reduction "add"); TopK's values gradient adds g at its indices (ScatterElements); Trilu's is
the same triangle of g; Range's values move with start and delta (not with limit, which only
sets how many there are).
"""

from __future__ import annotations

import math

import numpy as np

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node, Value
from irkit.ops.base import (
    OpDef,
    const_array,
    define,
    fmt_shape,
    normalize_axis,
    same_as_input_of_rank,
)
from irkit.ops.registry import attr
from irkit.ops.shape import Concat, Expand, Reshape, Shape, Unsqueeze, zeros_like

__all__ = ["Gather", "GatherElements", "GatherND", "Range", "ScatterElements", "ScatterND",
           "TopK", "Trilu"]


@define
class Gather(OpDef):
    """Slices of x at `indices` along `axis` (repeated indices add up in the gradient)."""

    op_type, since = "Gather", 13
    attributes = {"axis": 0}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, idx = node.inputs
        if x.shape is None or idx.shape is None:
            return [(x.dtype, None)]
        axis = normalize_axis(attr(node, "axis"), len(x.shape), "Gather")
        return [(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]

    def vjp(self, node: Node, grads):
        # flatten the index dims of g into one, then add each slice back at its index: whole
        # rows by ScatterND along axis 0 (30x faster than ScatterElements of an expanded
        # index for a (1000, 256) embedding and 2048 tokens), else element by element
        x, idx = node.inputs
        if x.rank is None:
            raise ShapeError(f"Gather node {node.name!r}: its gradient needs the data's rank")
        axis = normalize_axis(attr(node, "axis"), x.rank, "Gather")
        minus_one = node.graph.constant(np.array([-1], np.int64))
        parts = ([Shape(x, end=axis)] if axis else []) + [minus_one] + (
            [Shape(x, start=axis + 1)] if axis + 1 < x.rank else [])
        g = Reshape(grads[0], Concat(*parts, axis=0) if len(parts) > 1 else minus_one)
        if axis == 0:  # rows: ScatterND adds each whole row at once (an embedding's gradient)
            rows = Reshape(idx, node.graph.constant(np.array([-1, 1], np.int64)))
            return [ScatterND(zeros_like(x), rows, g, reduction="add"), None]
        index = Reshape(idx, minus_one)
        others = [i for i in range(x.rank) if i != axis]
        if others:
            index = Unsqueeze(index, np.array(others, np.int64))
        index = Expand(index, Shape(g))
        return [ScatterElements(zeros_like(x), index, g, axis=axis, reduction="add"), None]

    def compute(self, node: Node, inputs):
        return [np.take(inputs[0], inputs[1].astype(np.int64), axis=attr(node, "axis"))]


def _along(index: np.ndarray, axis: int) -> tuple:
    """A full numpy index that picks `index` (same rank as the data) along `axis`."""
    grid = list(np.indices(index.shape, sparse=True))
    grid[axis] = index
    return tuple(grid)


@define
class GatherElements(OpDef):
    """out[i][j] = x[index[i][j]][j] (axis 0; likewise along any axis)."""

    op_type, since = "GatherElements", 13
    attributes = {"axis": 0}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        return [(node.inputs[0].dtype, node.inputs[1].shape)]

    def vjp(self, node: Node, grads):
        x, index = node.inputs
        axis = normalize_axis(attr(node, "axis"), x.rank, "GatherElements")
        return [ScatterElements(zeros_like(x), index, grads[0], axis=axis, reduction="add"),
                None]

    def compute(self, node: Node, inputs):
        x, index = inputs
        axis = attr(node, "axis") % x.ndim
        return [x[_along(index.astype(np.int64) % x.shape[axis], axis)]]


# a scatter's reductions (max and min came in opset 18: export then declares 18)
SCATTER_REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum,
                      "min": np.minimum}


def scatter_infer(node: Node) -> list:
    """A scatter's output (the data's type and shape), once its reduction is one ONNX has
    (UnsupportedOpError naming the node otherwise)."""
    reduction = attr(node, "reduction")
    if reduction not in SCATTER_REDUCTIONS:
        raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: reduction {reduction!r} "
                                 f"is not one of {', '.join(SCATTER_REDUCTIONS)}")
    data = node.inputs[0]
    return [(data.dtype, data.shape)]


@define
class ScatterElements(OpDef):
    """data with `updates` written (reduction none), added (add), multiplied (mul) or
    combined by max or min (opset 18) at `indices` along axis."""

    op_type, since = "ScatterElements", 16
    attributes = {"axis": 0, "reduction": "none"}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        return scatter_infer(node)

    def vjp(self, node: Node, grads):
        data, index, updates = node.inputs
        g, axis = grads[0], normalize_axis(attr(node, "axis"), data.rank, "ScatterElements")
        picked = GatherElements(g, index, axis=axis)
        if attr(node, "reduction") == "add":
            return [g, None, picked]
        if attr(node, "reduction") == "none":  # overwritten data gets no gradient
            return [ScatterElements(g, index, zeros_like(updates), axis=axis), None, picked]
        raise UnsupportedOpError(f"ScatterElements node {node.name!r}: no gradient for reduction "
                                 f"{attr(node, 'reduction')!r}")

    def compute(self, node: Node, inputs):
        data, index, updates = inputs
        axis = attr(node, "axis") % data.ndim
        where = _along(index.astype(np.int64) % data.shape[axis], axis)
        return [_scatter(data, where, updates, attr(node, "reduction"))]


def _scatter(data: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """A copy of data with updates written or combined at `where` (an index tuple)."""
    out = data.copy()
    combine = SCATTER_REDUCTIONS[reduction]
    if combine is None:
        out[where] = updates
    else:
        combine.at(out, where, updates)
    return out


def _scalar_int(node: Node, index: int, what: str) -> int | None:
    """The value of a constant one-element int input, or None if it is computed."""
    v = node.inputs[index] if len(node.inputs) > index else None
    data = const_array(v, what)
    if data is None:
        return None
    if data.size != 1:
        raise ShapeError(f"{node.op_type} node {node.name!r}: {what} must hold one value, got "
                         f"shape {data.shape}")
    return int(np.ravel(data)[0])


# ---- GatherND / ScatterND ---------------------------------------------------------------------
def _gather_nd(data: np.ndarray, indices: np.ndarray, batch_dims: int) -> np.ndarray:
    """out[b..., i...] = data[b..., *indices[b..., i..., :]] (negative indices count back)."""
    grid = np.indices(indices.shape[:batch_dims], sparse=True) if batch_dims else ()
    pad = (1,) * (indices.ndim - 1 - batch_dims)
    where = [g.reshape(g.shape + pad) for g in grid]
    where += [indices[..., j] for j in range(indices.shape[-1])]
    return data[tuple(where)]


@define
class GatherND(OpDef):
    """Slices of data at the index tuples in the last axis of `indices`; the first
    `batch_dims` axes of data and indices are matched, not indexed."""

    op_type, since = "GatherND", 13
    attributes = {"batch_dims": 0}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        data, indices = node.inputs
        b = attr(node, "batch_dims")
        if data.shape is None or indices.shape is None:
            return [(data.dtype, None)]
        k = indices.shape[-1] if indices.shape else None
        if not isinstance(k, int):
            return [(data.dtype, None)]
        if b + k > len(data.shape) or b >= len(indices.shape):
            raise ShapeError(f"GatherND node {node.name!r}: index tuples of length {k} with "
                             f"batch_dims {b} do not fit data {fmt_shape(data.shape)}")
        return [(data.dtype, indices.shape[:-1] + data.shape[b + k:])]

    def vjp(self, node: Node, grads):
        # every gathered slice adds its gradient back where it came from
        data, indices = node.inputs
        full = _with_batch_coordinates(node, indices, attr(node, "batch_dims"))
        return [ScatterND(zeros_like(data), full, grads[0], reduction="add"), None]

    def compute(self, node: Node, inputs):
        data, indices = inputs
        return [_gather_nd(data, indices.astype(np.int64), attr(node, "batch_dims"))]


def _with_batch_coordinates(node: Node, indices: Value, batch_dims: int) -> Value:
    """Index tuples that also name the batch position (what ScatterND, without batch_dims,
    needs): concat(grid of the batch axes, indices) along the last axis."""
    if batch_dims == 0:
        return indices
    shape = indices.shape
    if shape is None or not all(isinstance(d, int) for d in shape[:batch_dims]):
        raise ShapeError(f"GatherND node {node.name!r}: the gradient with batch_dims "
                         f"{batch_dims} needs static batch dims of the indices")
    batch = shape[:batch_dims]
    grid = np.moveaxis(np.indices(batch, dtype=np.int64), 0, -1)
    grid = grid.reshape(batch + (1,) * (len(shape) - batch_dims - 1) + (batch_dims,))
    if all(isinstance(d, int) for d in shape):
        target = node.graph.constant(np.array(shape[:-1] + (batch_dims,), np.int64))
    else:
        target = Concat(Shape(indices, end=-1),
                        node.graph.constant(np.array([batch_dims], np.int64)), axis=0)
    return Concat(Expand(node.graph.constant(grid), target), indices, axis=-1)


@define
class ScatterND(OpDef):
    """data with `updates` written (reduction none), added (add), multiplied (mul) or
    combined by max or min (opset 18) at the index tuples in the last axis of `indices`
    (with none, repeated tuples are undefined in ONNX, and so is the gradient)."""

    op_type, since = "ScatterND", 16
    attributes = {"reduction": "none"}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        return scatter_infer(node)

    def vjp(self, node: Node, grads):
        data, indices, updates = node.inputs
        g, reduction = grads[0], attr(node, "reduction")
        if reduction not in ("none", "add"):
            raise UnsupportedOpError(f"ScatterND node {node.name!r}: no gradient for reduction "
                                     f"{reduction!r}; use 'none' or 'add'")
        picked = GatherND(g, indices)  # each update's element of g
        if reduction == "add":
            return [g, None, picked]
        # reduction none: overwritten elements of data get no gradient
        return [ScatterND(g, indices, zeros_like(updates)), None, picked]

    def compute(self, node: Node, inputs):
        data, indices, updates = inputs
        indices = indices.astype(np.int64)
        where = tuple(indices[..., j] for j in range(indices.shape[-1]))
        return [_scatter(data, where, updates, attr(node, "reduction"))]


# ---- TopK -------------------------------------------------------------------------------------
@define
class TopK(OpDef):
    """The k largest (or smallest) values along `axis` and their int64 indices; equal values
    keep their order (the lower index first). The values' gradient goes to the indices."""

    op_type, since = "TopK", 11
    attributes = {"axis": -1, "largest": 1, "sorted": 1}
    num_outputs = 2
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x = node.inputs[0]
        k = _scalar_int(node, 1, "K")
        if x.shape is None:
            return [(x.dtype, None), (np.int64, None)]
        axis = normalize_axis(attr(node, "axis"), len(x.shape), "TopK")
        dim = x.shape[axis]
        if k is not None and isinstance(dim, int) and not 0 <= k <= dim:
            raise ShapeError(f"TopK node {node.name!r}: K={k} is out of range for axis {axis} "
                             f"of size {dim}")
        shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
        return [(x.dtype, shape), (np.int64, shape)]

    def vjp(self, node: Node, grads):
        x = node.inputs[0]
        if len(node.outputs) < 2:
            raise ShapeError(f"TopK node {node.name!r}: its gradient needs the indices output")
        axis = normalize_axis(attr(node, "axis"), x.rank, "TopK")
        return [ScatterElements(zeros_like(x), node.outputs[1], grads[0], axis=axis,
                                reduction="add"), None]

    def compute(self, node: Node, inputs):
        x, k = inputs[0], int(np.ravel(inputs[1])[0])
        axis = attr(node, "axis") % x.ndim
        if attr(node, "largest"):  # descending with ties in index order: sort the flipped
            n = x.shape[axis]      # axis stably, reverse, and map positions back
            order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        else:  # a stable sort keeps ties in index order
            order = np.argsort(x, axis=axis, kind="stable")
        index = np.take(order, np.arange(k), axis=axis)
        return [np.take_along_axis(x, index, axis=axis), index.astype(np.int64)]


# ---- Trilu ------------------------------------------------------------------------------------
@define
class Trilu(OpDef):
    """The upper (upper=1) or lower triangle of the last two axes, from diagonal k on; the
    rest zero. Linear, so its gradient is the same triangle of g."""

    op_type, since = "Trilu", 14
    attributes = {"upper": 1}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        return same_as_input_of_rank(node, 2)

    def vjp(self, node: Node, grads):
        k = node.inputs[1] if len(node.inputs) > 1 else None
        return [Trilu(grads[0], k, upper=attr(node, "upper")), None]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        k = 0 if len(inputs) < 2 or inputs[1] is None else int(np.ravel(inputs[1])[0])
        return [np.triu(x, k) if attr(node, "upper") else np.tril(x, k)]


# ---- Range ------------------------------------------------------------------------------------
@define
class Range(OpDef):
    """start, start + delta, ... up to (not including) limit; max(ceil((limit - start) /
    delta), 0) elements of start's dtype. y_i = start + i delta: d start = sum(g),
    d delta = sum(i g); limit only sets the count, a step function: no gradient."""

    op_type, since = "Range", 11

    def infer(self, node: Node):
        start = node.inputs[0]
        if any(v.shape not in (None, (), (1,)) for v in node.inputs):  # ORT takes (1,) too
            raise ShapeError(f"Range node {node.name!r}: start, limit and delta must be scalars, "
                             f"got shapes {', '.join(fmt_shape(v.shape) for v in node.inputs)}")
        if len({v.dtype for v in node.inputs}) > 1:
            raise ShapeError(f"Range node {node.name!r}: start, limit and delta must have one "
                             "dtype")
        values = [const_array(v, "range") for v in node.inputs]
        if any(v is None for v in values):
            return [(start.dtype, (None,))]
        return [(start.dtype, (_range_length(*values),))]

    def vjp(self, node: Node, grads):
        from irkit.ops.elementwise import Cast, Mul
        from irkit.ops.reduce import ReduceSum
        from irkit.ops.shape import Size, onnx_dtype, shape_of

        start, _, delta = node.inputs
        g, graph = grads[0], node.graph
        count = Cast(Size(node.outputs[0]), to=onnx_dtype(start.dtype))
        index = Range(graph.constant(0.0, dtype=start.dtype), count,
                      graph.constant(1.0, dtype=start.dtype))
        return [Reshape(ReduceSum(g, keepdims=0), shape_of(start)), None,
                Reshape(ReduceSum(Mul(g, index), keepdims=0), shape_of(delta))]

    def compute(self, node: Node, inputs):
        start, limit, delta = inputs
        n = _range_length(start, limit, delta)
        return [(start + np.arange(n) * delta).astype(start.dtype)]


def _range_length(start, limit, delta) -> int:
    start, limit, delta = (np.ravel(v)[0].item() for v in (start, limit, delta))
    if delta == 0:
        raise ShapeError("Range: delta must not be 0")
    if all(isinstance(v, int) for v in (start, limit, delta)):  # exact for large integers
        return max(-((start - limit) // delta), 0)
    return max(int(math.ceil((limit - start) / delta)), 0)

