"""The torch runtime's shape, index and constant ops (Reshape ... Tile, Gather and Scatter,
GatherND/ScatterND, TopK, Trilu, Range, Constant, ConstantOfShape, OneHot), with ONNX's
negative indices and attribute defaults; registered in `TORCH_OPS`
(irkit.runtimes.torch_op_table) when `irkit.runtimes.torch_ops` is imported.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from irkit.runtimes.torch_op_table import ints_of, op, positive_axis

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node
from irkit.ops.registry import attr


@op("Reshape")
def _reshape(node, x, shape):
    dims = ints_of(shape)
    if not attr(node, "allowzero"):  # 0 copies the input's dim
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(node, x):
    axis = positive_axis(attr(node, "axis"), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def _transpose(node, x):
    perm = node.attributes.get("perm")
    return x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1)))


@op("Shape")
def _shape(node, x):
    dims = list(x.shape)[slice(attr(node, "start"), attr(node, "end"))]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@op("Size")
def _size(node, x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Unsqueeze")
def _unsqueeze(node, x, axes):
    axes = ints_of(axes)
    rank = x.dim() + len(axes)
    for a in sorted(positive_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Squeeze")
def _squeeze(node, x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(positive_axis(a, x.dim()) for a in ints_of(axes)))


@op("Expand")
def _expand(node, x, shape):
    # bidirectional broadcast: the target may have 1s where x is larger, and a lower rank
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints_of(shape))))


@op("Concat")
def _concat(node, *xs):
    return torch.cat(xs, attr(node, "axis"))


@op("Split")
def _split(node, x, split=None):
    dim, n = positive_axis(attr(node, "axis"), x.dim()), len(node.outputs)
    sizes = ints_of(split) if split is not None else [x.shape[dim] // n] * n
    return list(torch.split(x, sizes, dim))


def _slice_range(dim: int, start: int, end: int, step: int) -> range:
    """ONNX Slice's clamping, which differs from Python's for negative steps."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


@op("Slice")
def _slice(node, x, starts, ends, axes=None, steps=None):
    starts, ends = ints_of(starts), ints_of(ends)
    axes = ints_of(axes) if axes is not None else list(range(len(starts)))
    steps = ints_of(steps) if steps is not None else [1] * len(starts)
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        if st == 0:
            raise ShapeError(f"Slice node {node.name!r}: a step of 0 is invalid")
        dim = positive_axis(a, x.dim())
        r = _slice_range(x.shape[dim], s, e, st)
        if st > 0:
            index = [slice(None)] * dim + [slice(r.start, max(r.stop, r.start), st)]
            x = x[tuple(index)]
        else:
            x = x.index_select(dim, torch.arange(r.start, r.stop, st, device=x.device))
    return x


def _pad_index(size: int, begin: int, end: int, mode: str, device) -> torch.Tensor:
    """Source positions of one padded (or cropped) axis for the modes edge, reflect, wrap."""
    i = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return i.clamp(0, size - 1)
    if mode == "wrap":
        return i.remainder(size)
    period = 2 * (size - 1)  # reflect, without repeating the edge
    if period == 0:
        return torch.zeros_like(i)
    i = i.abs().remainder(period)
    return torch.where(i >= size, period - i, i)


@op("Pad")
def _pad(node, x, pads, value=None, axes=None):
    pads, mode, r = ints_of(pads), attr(node, "mode"), x.dim()
    dims = [positive_axis(a, r) for a in ints_of(axes)] if axes is not None else list(range(r))
    begin, end = dict(zip(dims, pads[:len(dims)])), dict(zip(dims, pads[len(dims):]))
    if mode == "constant":
        flat = [p for d in reversed(range(r)) for p in (begin.get(d, 0), end.get(d, 0))]
        if value is None or (not value.requires_grad and not value.numel()):
            return F.pad(x, flat)
        if not value.requires_grad:
            return F.pad(x, flat, value=value.reshape(-1)[0].item())
        # a differentiable padding value: zeros, plus value where the padding is
        mask = F.pad(torch.zeros_like(x), flat, value=1.0)
        return F.pad(x, flat) + value.reshape(()) * mask
    if mode not in ("edge", "reflect", "wrap"):
        raise UnsupportedOpError(f"Pad node {node.name!r}: unknown mode {mode!r}")
    for d in dims:
        if begin[d] or end[d]:
            x = x.index_select(d, _pad_index(x.shape[d], begin[d], end[d], mode, x.device))
    return x


@op("Tile")
def _tile(node, x, repeats):
    return x.repeat(*ints_of(repeats))


def _positive(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.long()
    return torch.where(index < 0, index + size, index)


@op("Gather")
def _gather(node, x, indices):
    dim = positive_axis(attr(node, "axis"), x.dim())
    flat = _positive(indices, x.shape[dim]).reshape(-1)
    out = x.index_select(dim, flat)
    return out.reshape(x.shape[:dim] + indices.shape + x.shape[dim + 1:])


@op("GatherElements")
def _gather_elements(node, x, indices):
    dim = positive_axis(attr(node, "axis"), x.dim())
    return torch.gather(x, dim, _positive(indices, x.shape[dim]))


_SCATTER_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


@op("ScatterElements")
def _scatter_elements(node, data, indices, updates):
    dim = positive_axis(attr(node, "axis"), data.dim())
    index, reduction = _positive(indices, data.shape[dim]), attr(node, "reduction")
    if reduction == "none":
        return torch.scatter(data, dim, index, updates)
    if reduction == "add":
        return torch.scatter_add(data, dim, index, updates)
    if reduction in _SCATTER_REDUCE:
        return torch.scatter_reduce(data, dim, index, updates, _SCATTER_REDUCE[reduction])
    raise UnsupportedOpError(f"ScatterElements node {node.name!r}: unknown reduction "
                             f"{reduction!r}")


def constant_array(node: Node) -> np.ndarray:
    """The value of a Constant node, from whichever value* attribute it has."""
    a = node.attributes
    for key, dtype in (("value", None), ("value_float", np.float32),
                       ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise UnsupportedOpError(f"Constant node {node.name!r}: only value, value_float(s) and "
                             "value_int(s) are supported")


def to_tensor(array: np.ndarray, device=None) -> torch.Tensor:
    """A torch copy of a numpy array (a copy: initializer data is shared read-only)."""
    return torch.from_numpy(np.array(array, copy=True)).to(device)


@op("Constant")
def _constant(node):
    return to_tensor(constant_array(node))


@op("ConstantOfShape")
def _constant_of_shape(node, shape):
    value = node.attributes.get("value")
    fill = to_tensor(np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1))
    return torch.full(ints_of(shape), fill.item(), dtype=fill.dtype, device=shape.device)


@op("OneHot")
def _one_hot(node, indices, depth, values):
    depth = int(depth.reshape(-1)[0].item())
    index = _positive(indices, depth)  # out-of-range indices give an all-`off` row
    hot = index.unsqueeze(-1) == torch.arange(depth, device=index.device)
    out = torch.where(hot, values[1], values[0])
    return out.movedim(-1, positive_axis(attr(node, "axis"), index.dim() + 1))


# ---- indexing ------------------------------------------------------------------------------
def _nd_index(data, indices, batch_dims: int) -> tuple:
    """The advanced index of GatherND/ScatterND: batch aranges, then the index tuples."""
    index, rank = indices.long(), indices.dim()
    where = []
    for a in range(batch_dims):
        shape = [1] * (rank - 1)
        shape[a] = index.shape[a]
        where.append(torch.arange(index.shape[a], device=index.device).reshape(shape))
    where += [_positive(index[..., j], data.shape[batch_dims + j])
              for j in range(index.shape[-1])]
    return tuple(where)


@op("GatherND")
def _gather_nd(node, data, indices):
    return data[_nd_index(data, indices, attr(node, "batch_dims"))]


@op("ScatterND")
def _scatter_nd(node, data, indices, updates):
    where, reduction = _nd_index(data, indices, 0), attr(node, "reduction")
    if reduction in ("none", "add"):
        return data.index_put(where, updates, accumulate=reduction == "add")
    raise UnsupportedOpError(f"ScatterND node {node.name!r}: the torch runtime runs reduction "
                             f"none and add, not {reduction!r}")


@op("TopK")
def _top_k(node, x, k):
    dim = positive_axis(attr(node, "axis"), x.dim())
    # a stable sort keeps equal values in index order, as ONNX asks
    values, index = torch.sort(x, dim=dim, descending=bool(attr(node, "largest")), stable=True)
    n = ints_of(k)[0]
    return [values.narrow(dim, 0, n), index.narrow(dim, 0, n)]


@op("Trilu")
def _trilu(node, x, k=None):
    k = 0 if k is None else ints_of(k)[0]
    return torch.triu(x, k) if attr(node, "upper") else torch.tril(x, k)


@op("Range")
def _range(node, start, limit, delta):
    # ONNX's definition, start + i * delta, so that start and delta have gradients
    count = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
    steps = torch.arange(count, dtype=start.dtype, device=start.device)
    return start.reshape(()) + steps * delta.reshape(())
