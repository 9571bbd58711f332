"""Reductions: ReduceSum (axes as an input, opset 13) and ReduceMean/Max/Min (axes attribute)."""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, const_array, define, normalize_axis


class ReduceOp(OpDef):
    """Shared schema, shape inference and numpy reference of the reductions."""

    since = 13
    attributes = {"axes": None, "keepdims": 1, "noop_with_empty_axes": 0}
    np_fn = staticmethod(np.sum)

    def axes(self, node: Node) -> list[int] | None:
        """Normalised axes, or None for "all axes"; ShapeError if they are not constant."""
        if self.axes_from_input:
            given = node.inputs[1] if len(node.inputs) > 1 else None
            data = const_array(given, "axes")
            if given is not None and data is None:
                raise ShapeError(f"{self.op_type} node {node.name!r}: axes must be a constant")
            axes = None if data is None else [int(a) for a in np.ravel(data)]
        else:
            axes = node.attributes.get("axes")
        if not axes:
            return None
        rank = node.inputs[0].rank
        return sorted(normalize_axis(a, rank, self.op_type) for a in axes)

    axes_from_input = False

    def infer(self, node: Node):
        x = node.inputs[0]
        axes = self.axes(node)
        if x.shape is None:
            return [(x.dtype, None)]
        keep = node.attr("keepdims")
        if axes is None:
            if self.axes_from_input and node.attr("noop_with_empty_axes"):
                return [(x.dtype, x.shape)]
            axes = list(range(len(x.shape)))
        shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
        return [(x.dtype, tuple(shape))]

    def compute(self, node: Node, inputs):
        axes = self.axes(node)
        if axes is None and self.axes_from_input and node.attr("noop_with_empty_axes"):
            return [inputs[0]]
        axis = None if axes is None else tuple(axes)
        return [self.np_fn(inputs[0], axis=axis, keepdims=bool(node.attr("keepdims")))]

    def expand_grad(self, node: Node, g: Value) -> Value:
        """g brought back to the input's shape: re-insert reduced axes, then Expand."""
        from irkit.ops.shape import Expand, Shape, Unsqueeze

        axes = self.axes(node)
        if not node.attr("keepdims") and axes is not None:
            g = Unsqueeze(g, np.array(axes, dtype=np.int64))
        return Expand(g, Shape(node.inputs[0]))


@define
class ReduceSum(ReduceOp):
    op_type = "ReduceSum"
    axes_from_input = True
    attributes = {"keepdims": 1, "noop_with_empty_axes": 0}
    input_dtypes = {1: np.int64}

    def vjp(self, node: Node, grads):
        return [self.expand_grad(node, grads[0]), None]


@define
class ReduceMean(ReduceOp):
    op_type = "ReduceMean"
    since = 13
    attributes = {"axes": None, "keepdims": 1}
    np_fn = staticmethod(np.mean)

    def vjp(self, node: Node, grads):
        from irkit.ops.elementwise import Div
        return [Div(self.expand_grad(node, grads[0]), element_ratio(node))]


@define
class ReduceMax(ReduceOp):
    op_type = "ReduceMax"
    attributes = {"axes": None, "keepdims": 1}
    np_fn = staticmethod(np.max)


@define
class ReduceMin(ReduceOp):
    op_type = "ReduceMin"
    attributes = {"axes": None, "keepdims": 1}
    np_fn = staticmethod(np.min)


def element_ratio(node: Node) -> Value:
    """Number of input elements per output element (a constant when shapes are static)."""
    from irkit.ops.elementwise import Cast, Div
    from irkit.ops.shape import Size

    x, y = node.inputs[0], node.outputs[0]
    dtype = x.dtype
    if all(isinstance(d, int) for d in (x.shape or (None,)) + (y.shape or (None,))):
        ratio = int(np.prod(x.shape)) // max(int(np.prod(y.shape)), 1)
        return node.graph.constant(ratio, dtype=dtype)
    to = _onnx_type(dtype)
    return Div(Cast(Size(x), to=to), Cast(Size(y), to=to))


def _onnx_type(dtype) -> int:
    import onnx
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
