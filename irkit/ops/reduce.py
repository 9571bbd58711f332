"""Reductions: ReduceSum (axes as an input, opset 13), the other Reduce* ops (axes attribute,
opsets 13-17; the simple ones in one line each with `reduction`) and CumSum."""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, const_array, define, normalize_axis
from irkit.ops.dtypes import onnx_dtype
from irkit.ops.elementwise import Cast, Div, Equal, Exp, Mul, Neg, Sign, Sub
from irkit.ops.registry import attr, register
from irkit.ops.shape import Expand, Shape, Size, Unsqueeze


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
                raise ShapeError(f"{self.op_type} node {node.name!r}: axes must be a constant "
                                 "(computed axes are read only with keepdims=1)")
            axes = None if data is None else [int(a) for a in np.ravel(data)]
        else:
            axes = node.attributes.get("axes")
        if not axes:
            return None
        rank = node.inputs[0].rank
        return sorted(normalize_axis(a, rank, self.op_type) for a in axes)

    axes_from_input = False

    def computed_axes(self, node: Node) -> bool:
        """Whether the axes are a computed input (ReduceSum only, with keepdims=1: the rank is
        kept and any dim may become 1; autodiff's `unbroadcast` reduces this way to a shape
        known only at run time)."""
        given = node.inputs[1] if self.axes_from_input and len(node.inputs) > 1 else None
        return given is not None and const_array(given, "axes") is None \
            and attr(node, "keepdims") == 1

    def infer(self, node: Node):
        x = node.inputs[0]
        if self.computed_axes(node):
            return [(x.dtype, None if x.shape is None else
                     tuple(1 if d == 1 else None for d in x.shape))]
        axes = self.axes(node)
        if x.shape is None:
            return [(x.dtype, None)]
        keep = attr(node, "keepdims")
        if axes is None:
            if self.axes_from_input and attr(node, "noop_with_empty_axes"):
                return [(x.dtype, x.shape)]
            axes = list(range(len(x.shape)))
        shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
        return [(x.dtype, tuple(shape))]

    def compute(self, node: Node, inputs):
        if self.computed_axes(node):
            axes = sorted(normalize_axis(int(a), inputs[0].ndim) for a in inputs[1].ravel())
            if not axes and attr(node, "noop_with_empty_axes"):
                return [inputs[0]]
            return [self.np_fn(inputs[0], axis=tuple(axes) or None, keepdims=True)]
        axes = self.axes(node)
        if axes is None and self.axes_from_input and attr(node, "noop_with_empty_axes"):
            return [inputs[0]]
        axis = None if axes is None else tuple(axes)
        return [self.np_fn(inputs[0], axis=axis, keepdims=bool(attr(node, "keepdims")))]

    def expand_grad(self, node: Node, g: Value) -> Value:
        """g brought back to the input's shape: re-insert reduced axes, then Expand."""
        if not attr(node, "keepdims") and (axes := self.axes(node)) is not None:
            g = Unsqueeze(g, np.array(axes, dtype=np.int64))
        return Expand(g, Shape(node.inputs[0]))

    def keep_dims(self, node: Node, v: Value) -> Value:
        """An output-shaped value with the reduced axes put back as 1s (broadcasts against x)."""
        axes = self.axes(node)
        if not attr(node, "keepdims") and axes is not None:
            return Unsqueeze(v, np.array(axes, dtype=np.int64))
        return v  # kept dims, or a scalar from reducing every axis: both broadcast as they are


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
        return [Div(self.expand_grad(node, grads[0]), element_ratio(node))]


class _ReduceExtremum(ReduceOp):
    """ReduceMax and ReduceMin: the gradient goes to the elements equal to the result, shared
    evenly by ties (as torch.amax shares it)."""

    attributes = {"axes": None, "keepdims": 1}

    def vjp(self, node: Node, grads):
        x = node.inputs[0]
        hit = Cast(Equal(x, self.keep_dims(node, node.outputs[0])), to=onnx_dtype(x.dtype))
        axes = self.axes(node)
        count = ReduceSum(hit, None if axes is None else np.array(axes, np.int64), keepdims=1)
        return [Mul(self.keep_dims(node, grads[0]), Div(hit, count))]


def _extremum(fn, empty_is_highest: bool):
    """numpy's max or min giving ONNX's value over an empty set, where numpy raises: the
    lowest value of the type for a max, the highest for a min (-inf and +inf for floats)."""
    def reduce(x, axis, keepdims):
        if x.size:
            return fn(x, axis=axis, keepdims=keepdims)
        if x.dtype.kind == "f":
            bound = np.inf if empty_is_highest else -np.inf
        elif x.dtype.kind == "b":
            bound = empty_is_highest
        else:
            info = np.iinfo(x.dtype)
            bound = info.max if empty_is_highest else info.min
        return fn(x, axis=axis, keepdims=keepdims, initial=bound)
    return reduce


@define
class ReduceMax(_ReduceExtremum):
    op_type = "ReduceMax"
    np_fn = staticmethod(_extremum(np.max, empty_is_highest=False))


@define
class ReduceMin(_ReduceExtremum):
    op_type = "ReduceMin"
    np_fn = staticmethod(_extremum(np.min, empty_is_highest=True))


class AttrReduce(ReduceOp):
    """A reduction with the axes attribute, made in one line by `reduction`: numpy
    `fn(x, axis, keepdims)`; its VJP is g (brought back to x's shape) times `local(x, y)`, y the
    output with its reduced axes kept."""

    attributes = {"axes": None, "keepdims": 1}

    def __init__(self, op_type: str, fn, local) -> None:
        self.op_type, self.np_fn, self.local = op_type, fn, local

    def vjp(self, node: Node, grads):
        y = self.keep_dims(node, node.outputs[0])
        return [Mul(self.keep_dims(node, grads[0]), self.local(node.inputs[0], y))]


def reduction(op_type: str, fn, local) -> AttrReduce:
    """Register a reduction in one line: numpy `fn(x, axis, keepdims)`, local derivative
    `local(x, y)` (y with the reduced axes kept, so both broadcast against x)."""
    return register(AttrReduce(op_type, fn, local))


def _sum_of(f):
    """numpy's sum of f(x): the reference of the sum-of-something reductions."""
    return lambda x, axis, keepdims: np.sum(f(x), axis=axis, keepdims=keepdims)


def _log_sum_exp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)  # stably; -inf over an empty set
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


# d/dx of each reduction, elementwise (the VJP multiplies by g brought back to x's shape)
ReduceProd = reduction("ReduceProd", np.prod, lambda x, y: Div(y, x))  # NaN at a zero in x
ReduceSumSquare = reduction("ReduceSumSquare", _sum_of(lambda x: x * x),
                            lambda x, y: Mul(x, 2.0))  # d x^2 = 2x
ReduceL1 = reduction("ReduceL1", _sum_of(np.abs), lambda x, y: Sign(x))
ReduceL2 = reduction("ReduceL2", lambda x, axis, keepdims: np.sqrt(
    np.sum(x * x, axis=axis, keepdims=keepdims)), lambda x, y: Div(x, y))  # NaN at a zero norm
# d log(sum x) = 1 / sum x = exp(-y), made x-shaped
ReduceLogSum = reduction("ReduceLogSum", lambda x, axis, keepdims: np.log(
    np.sum(x, axis=axis, keepdims=keepdims)), lambda x, y: Expand(Exp(Neg(y)), Shape(x)))
# d logsumexp = softmax of x over the axes
ReduceLogSumExp = reduction("ReduceLogSumExp", _log_sum_exp, lambda x, y: Exp(Sub(x, y)))


@define
class CumSum(OpDef):
    """Running sum along `axis` (an input); `exclusive` leaves out the element itself,
    `reverse` sums from the end."""

    op_type, since = "CumSum", 14
    attributes = {"exclusive": 0, "reverse": 0}
    input_dtypes = {1: np.int64}

    def vjp(self, node: Node, grads):
        # each x_j feeds the outputs after it (before it, reversed): sum g the other way round
        return [CumSum(grads[0], node.inputs[1], exclusive=attr(node, "exclusive"),
                       reverse=1 - attr(node, "reverse")), None]

    def compute(self, node: Node, inputs):
        x, axis = inputs[0], int(np.ravel(inputs[1])[0])
        if attr(node, "reverse"):
            x = np.flip(x, axis)
        out = np.cumsum(x, axis=axis)
        if attr(node, "exclusive"):
            out = out - x
        if attr(node, "reverse"):
            out = np.flip(out, axis)
        return [out.astype(inputs[0].dtype)]


def element_ratio(node: Node) -> Value:
    """Number of input elements per output element (a constant when shapes are static)."""
    x, y = node.inputs[0], node.outputs[0]
    dtype = x.dtype
    if all(isinstance(d, int) for d in (x.shape or (None,)) + (y.shape or (None,))):
        ratio = int(np.prod(x.shape)) // max(int(np.prod(y.shape)), 1)
        return node.graph.constant(ratio, dtype=dtype)
    to = onnx_dtype(dtype)
    return Div(Cast(Size(x), to=to), Cast(Size(y), to=to))

