"""Shape ops: Reshape, Flatten, Transpose, Squeeze/Unsqueeze, Expand, Concat, Gather, Shape,
Size, Constant, ConstantOfShape, OneHot."""

from __future__ import annotations

import numpy as np
import onnx

from irkit.errors import ShapeError
from irkit.ir import Node
from irkit.ops.base import OpDef, Required, const_array, define, normalize_axis


def _const_ints(node: Node, index: int, what: str) -> list[int] | None:
    v = node.inputs[index] if len(node.inputs) > index else None
    data = const_array(v, what)
    return None if data is None else [int(a) for a in np.ravel(data)]


@define
class Reshape(OpDef):
    op_type, since = "Reshape", 14
    attributes = {"allowzero": 0}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x = node.inputs[0]
        target = _const_ints(node, 1, "shape")
        if target is None:
            n = node.inputs[1].shape
            return [(x.dtype, None if n is None or n[0] is None else (None,) * int(n[0]))]
        dims = [x.shape[i] if t == 0 and x.shape is not None and not node.attr("allowzero")
                else (None if t == 0 else t) for i, t in enumerate(target)]
        if -1 in dims:
            known = [d for d in dims if d != -1]
            total = _static_size(x.shape)
            rest = _static_size(tuple(known))
            dims[dims.index(-1)] = total // rest if total is not None and rest else None
        return [(x.dtype, tuple(dims))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], Shape(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x, shape = inputs
        shape = [x.shape[i] if s == 0 and not node.attr("allowzero") else s
                 for i, s in enumerate(shape.tolist())]
        return [x.reshape(shape)]


def _static_size(shape) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape)) if shape else 1


@define
class Flatten(OpDef):
    op_type, since = "Flatten", 13
    attributes = {"axis": 1}

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, (None, None))]
        axis = normalize_axis(node.attr("axis"), len(x.shape) + 1, "Flatten")
        return [(x.dtype, (_static_size(x.shape[:axis]), _static_size(x.shape[axis:])))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], Shape(node.inputs[0]))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axis = node.attr("axis") % (x.ndim + 1)
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@define
class Transpose(OpDef):
    op_type, since = "Transpose", 13
    attributes = {"perm": None}

    def perm(self, node: Node, rank: int) -> list[int]:
        perm = node.attributes.get("perm")
        return list(perm) if perm is not None else list(range(rank))[::-1]

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, None)]
        return [(x.dtype, tuple(x.shape[p] for p in self.perm(node, len(x.shape))))]

    def vjp(self, node: Node, grads):
        perm = self.perm(node, node.inputs[0].rank)
        return [Transpose(grads[0], perm=[int(i) for i in np.argsort(perm)])]

    def compute(self, node: Node, inputs):
        return [np.transpose(inputs[0], self.perm(node, inputs[0].ndim))]


@define
class Shape(OpDef):
    op_type, since, differentiable = "Shape", 15, False
    attributes = {"start": 0, "end": None}

    def infer(self, node: Node):
        rank = node.inputs[0].rank
        return [(np.int64, (None if rank is None else len(self._span(node, rank)),))]

    def _span(self, node: Node, rank: int) -> range:
        start, end = node.attr("start"), node.attr("end")
        return range(rank)[slice(start, end)]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        return [np.array([x.shape[i] for i in self._span(node, x.ndim)], dtype=np.int64)]


@define
class Size(OpDef):
    op_type, since, differentiable = "Size", 13, False

    def infer(self, node: Node):
        return [(np.int64, ())]

    def compute(self, node: Node, inputs):
        return [np.array(inputs[0].size, dtype=np.int64)]


@define
class Unsqueeze(OpDef):
    op_type, since = "Unsqueeze", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, axes = node.inputs[0], _const_ints(node, 1, "axes")
        if x.shape is None or axes is None:
            return [(x.dtype, None)]
        rank = len(x.shape) + len(axes)
        axes = sorted(normalize_axis(a, rank, "Unsqueeze") for a in axes)
        dims = iter(x.shape)
        return [(x.dtype, tuple(1 if i in axes else next(dims) for i in range(rank)))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], Shape(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x, axes = inputs
        rank = x.ndim + len(axes)
        return [np.expand_dims(x, tuple(sorted(int(a) % rank for a in axes)))]


@define
class Squeeze(OpDef):
    op_type, since = "Squeeze", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, axes = node.inputs[0], _const_ints(node, 1, "axes")
        if x.shape is None:
            return [(x.dtype, None)]
        if axes is None:
            if len(node.inputs) > 1:
                return [(x.dtype, None)]
            return [(x.dtype, tuple(d for d in x.shape if d != 1))]
        axes = {normalize_axis(a, len(x.shape), "Squeeze") for a in axes}
        return [(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], Shape(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axes = None if len(inputs) < 2 or inputs[1] is None else tuple(
            int(a) % x.ndim for a in inputs[1])
        return [np.squeeze(x, axis=axes)]


@define
class Expand(OpDef):
    op_type, since = "Expand", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        from irkit.ops.base import broadcast_shapes
        x, target = node.inputs[0], _const_ints(node, 1, "shape")
        if target is None:
            n = node.inputs[1].shape
            if x.shape is None or n is None or n[0] is None:
                return [(x.dtype, None)]
            return [(x.dtype, broadcast_shapes(x.shape, (None,) * int(n[0]), op="Expand"))]
        return [(x.dtype, broadcast_shapes(x.shape, tuple(target), op=f"Expand {node.name!r}"))]

    def vjp(self, node: Node, grads):
        return [grads[0], None]  # autodiff sums the broadcast axes back (un-broadcast)

    def compute(self, node: Node, inputs):
        x, shape = inputs
        return [x * np.ones(shape.astype(np.int64), dtype=x.dtype)]


@define
class Concat(OpDef):
    op_type, since = "Concat", 13
    attributes = {"axis": Required(int)}

    def infer(self, node: Node):
        xs = node.inputs
        if any(x.shape is None for x in xs):
            return [(xs[0].dtype, None)]
        axis = normalize_axis(node.attr("axis"), len(xs[0].shape), "Concat")
        dims = [x.shape[axis] for x in xs]
        total = sum(dims) if all(isinstance(d, int) for d in dims) else None
        shape = list(xs[0].shape)
        shape[axis] = total
        return [(xs[0].dtype, tuple(shape))]

    def vjp(self, node: Node, grads):
        from irkit.ops.elementwise import Add
        axis = node.attr("axis")
        starts = [0]
        sizes = [Shape(x, start=axis % x.rank, end=axis % x.rank + 1) for x in node.inputs]
        for s in sizes[:-1]:
            starts.append(s if isinstance(starts[-1], int) else Add(starts[-1], s))
        axes = np.array([axis], dtype=np.int64)
        out = []
        for start, size in zip(starts, sizes):
            begin = node.graph.constant([0], dtype=np.int64) if isinstance(start, int) else start
            out.append(Slice(grads[0], begin, Add(begin, size), axes))
        return out

    def compute(self, node: Node, inputs):
        return [np.concatenate(inputs, axis=node.attr("axis"))]


@define
class Slice(OpDef):
    op_type, since = "Slice", 13
    input_dtypes = {1: np.int64, 2: np.int64, 3: np.int64, 4: np.int64}

    def infer(self, node: Node):
        x = node.inputs[0]
        return [(x.dtype, None if x.shape is None else (None,) * len(x.shape))]

    def compute(self, node: Node, inputs):
        x, starts, ends = inputs[:3]
        axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[int(a)] = slice(int(s), int(e), int(st))
        return [x[tuple(index)]]


@define
class Gather(OpDef):
    op_type, since = "Gather", 13
    attributes = {"axis": 0}

    def infer(self, node: Node):
        x, idx = node.inputs
        if x.shape is None or idx.shape is None:
            return [(x.dtype, None)]
        axis = normalize_axis(node.attr("axis"), len(x.shape), "Gather")
        return [(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]

    def compute(self, node: Node, inputs):
        return [np.take(inputs[0], inputs[1].astype(np.int64), axis=node.attr("axis"))]


@define
class Constant(OpDef):
    op_type, since, differentiable = "Constant", 13, False
    attributes = {"value": Required(np.ndarray)}

    def infer(self, node: Node):
        value = np.asarray(node.attr("value"))
        return [(value.dtype, value.shape)]

    def compute(self, node: Node, inputs):
        return [np.asarray(node.attr("value"))]


@define
class ConstantOfShape(OpDef):
    op_type, since, differentiable = "ConstantOfShape", 9, False
    attributes = {"value": None}

    def _fill(self, node: Node) -> np.ndarray:
        value = node.attributes.get("value")
        return np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1)

    def infer(self, node: Node):
        dims = _const_ints(node, 0, "shape")
        n = node.inputs[0].shape
        shape = tuple(dims) if dims is not None else (
            None if n is None or n[0] is None else (None,) * int(n[0]))
        return [(self._fill(node).dtype, shape)]

    def compute(self, node: Node, inputs):
        return [np.full(inputs[0].astype(np.int64), self._fill(node)[0])]


@define
class OneHot(OpDef):
    op_type, since, differentiable = "OneHot", 11, False
    attributes = {"axis": -1}

    def infer(self, node: Node):
        idx, depth, values = node.inputs
        depth_v = _const_ints(node, 1, "depth")
        if idx.shape is None:
            return [(values.dtype, None)]
        rank = len(idx.shape) + 1
        axis = normalize_axis(node.attr("axis"), rank, "OneHot")
        shape = list(idx.shape)
        shape.insert(axis, depth_v[0] if depth_v else None)
        return [(values.dtype, tuple(shape))]

    def compute(self, node: Node, inputs):
        idx, depth, values = inputs
        depth = int(np.ravel(depth)[0])
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + depth, idx)
        hot = idx[..., None] == np.arange(depth)
        out = np.where(hot, values[1], values[0]).astype(values.dtype)
        axis = node.attr("axis") % (idx.ndim + 1)
        return [np.moveaxis(out, -1, axis)]


def onnx_dtype(dtype) -> int:
    """The TensorProto enum of a numpy dtype."""
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except KeyError:
        raise ShapeError(f"dtype {dtype} has no ONNX equivalent") from None
