"""Normalization ops: LayerNormalization, BatchNormalization (training mode included),
InstanceNormalization, LRN, and the statistics and gradient helpers they share."""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, Required, define, normalize_axis, same_as_input_of_rank
from irkit.ops.dtypes import numpy_dtype
from irkit.ops.elementwise import Mul, Sub
from irkit.ops.reduce import ReduceSum
from irkit.ops.registry import attr
from irkit.ops.shape import Reshape, Unsqueeze, zeros_like


def batch_statistics(x: Value, axes: list[int], epsilon: float
                     ) -> tuple[Value, Value, Value, Value]:
    """(mean, x - mean, var, 1 / sqrt(var + epsilon)) over `axes`, kept dims (biased
    variance): the one form of them, so that graphs computing them in several places (a
    BatchNorm's gradient, its web lowering) compute them once after common-subexpression
    elimination."""
    from irkit.ops.elementwise import Add, Reciprocal, Sqrt

    mean, centered, var = batch_moments(x, axes)
    return mean, centered, var, Reciprocal(Sqrt(Add(var, epsilon)))


def batch_moments(x: Value, axes: list[int]) -> tuple[Value, Value, Value]:
    """(mean, x - mean, biased variance) over `axes`, kept dims (batch_statistics' first
    three)."""
    from irkit.ops.reduce import ReduceMean

    mean = ReduceMean(x, axes=axes, keepdims=1)
    centered = Sub(x, mean)
    return mean, centered, ReduceMean(Mul(centered, centered), axes=axes, keepdims=1)


def _statistics(x: Value, axes: list[int], epsilon: float) -> tuple[Value, Value]:
    """(x - mean, 1 / sqrt(var + epsilon)) over `axes`, kept dims (biased variance)."""
    _, centered, _, inv_std = batch_statistics(x, axes, epsilon)
    return centered, inv_std


def _normalized(x: Value, axes: list[int], epsilon: float) -> tuple[Value, Value, Value]:
    """(x - mean, 1 / sqrt(var + epsilon), x_hat) over `axes`, kept dims (biased variance)."""
    centered, inv_std = _statistics(x, axes, epsilon)
    return centered, inv_std, Mul(centered, inv_std)


def _normalization_vjp(g_hat: Value, x_hat: Value, inv_std: Value, axes: list[int]) -> Value:
    """d x of x_hat = normalize(x) over axes given d x_hat:
    inv_std * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))."""
    from irkit.ops.reduce import ReduceMean

    mean_g = ReduceMean(g_hat, axes=axes, keepdims=1)
    mean_gx = ReduceMean(Mul(g_hat, x_hat), axes=axes, keepdims=1)
    return Mul(inv_std, Sub(Sub(g_hat, mean_g), Mul(x_hat, mean_gx)))


def _count(x: Value, axes: list[int], like: Value) -> Value:
    """The number of elements of x over `axes`, as a scalar of x's dtype."""
    from irkit.ops.elementwise import Cast, Div
    from irkit.ops.shape import Size, onnx_dtype

    dims = [x.shape[a] for a in axes] if x.shape is not None else [None]
    if all(isinstance(d, int) for d in dims):
        return x.graph.constant(float(np.prod(dims)), dtype=x.dtype)
    to = onnx_dtype(x.dtype)
    return Div(Cast(Size(x), to=to), Cast(Size(like), to=to))


def _used(g: Value | None) -> bool:
    """False for a missing cotangent or an all-zero constant one (an output nobody reads)."""
    return g is not None and (g.const is None or bool(np.any(g.const)))


@define
class LayerNormalization(OpDef):
    """Normalize over the axes from `axis` on, then scale and shift; optional Mean and
    InvStdDev outputs in the stash type (float32, as ONNX requires)."""

    op_type, since = "LayerNormalization", 17
    attributes = {"axis": -1, "epsilon": 1e-5, "stash_type": 1}

    def default_num_outputs(self, node: Node) -> int:
        return 1

    def _axes(self, node: Node) -> list[int]:
        rank = node.inputs[0].rank
        if rank is None:
            raise ShapeError(f"LayerNormalization node {node.name!r} needs its input's rank")
        return list(range(normalize_axis(attr(node, "axis"), rank, self.op_type), rank))

    def infer(self, node: Node):
        x = node.inputs[0]
        stash = numpy_dtype(attr(node, "stash_type"))
        if x.shape is None:
            return [(x.dtype, None), (stash, None), (stash, None)]
        axes = self._axes(node)
        stats = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        return [(x.dtype, x.shape), (stash, stats), (stash, stats)]

    def vjp(self, node: Node, grads):
        from irkit.ops.elementwise import Add, Cast, Div
        from irkit.ops.shape import onnx_dtype

        x, scale = node.inputs[:2]
        g, g_mean, g_inv = (list(grads) + [None, None])[:3]
        axes = self._axes(node)
        centered, inv_std, x_hat = _normalized(x, axes, attr(node, "epsilon"))
        dx = _normalization_vjp(Mul(g, scale), x_hat, inv_std, axes)
        to = onnx_dtype(x.dtype)
        if _used(g_mean):  # mean = sum(x) / n
            dx = Add(dx, Div(Cast(g_mean, to=to), _count(x, axes, inv_std)))
        if _used(g_inv):  # d inv_std / d x = -inv_std^2 x_hat / n
            dx = Sub(dx, Div(Mul(Mul(Cast(g_inv, to=to), Mul(inv_std, inv_std)), x_hat),
                             _count(x, axes, inv_std)))
        result = [dx, Mul(g, x_hat)]
        if len(node.inputs) > 2:
            result.append(g)
        return result

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axes = tuple(range(attr(node, "axis") % x.ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        inv_std = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) +
                              attr(node, "epsilon"))
        y = (x - mean) * inv_std * inputs[1]
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2]
        stash = numpy_dtype(attr(node, "stash_type"))
        return [y.astype(x.dtype), mean.astype(stash), inv_std.astype(stash)]


@define
class BatchNormalization(OpDef):
    """Per-channel (axis 1) normalization. Inference mode uses input_mean and input_var;
    training_mode=1 uses the batch's statistics and adds the outputs running_mean and
    running_var (momentum-weighted, with the biased batch variance)."""

    op_type, since = "BatchNormalization", 15
    attributes = {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0}

    def default_num_outputs(self, node: Node) -> int:
        return 3 if attr(node, "training_mode") else 1

    def infer(self, node: Node):
        x, mean = node.inputs[0], node.inputs[3]
        return [(x.dtype, x.shape), (mean.dtype, mean.shape), (mean.dtype, mean.shape)]

    @staticmethod
    def _other_axes(x: Value) -> list[int]:
        if x.rank is None or x.rank < 2:
            raise ShapeError(f"BatchNormalization of {x.name!r} needs an input of known rank >= 2")
        return [0] + list(range(2, x.rank))

    @staticmethod
    def _per_channel(v: Value, rank: int) -> Value:
        """A (C,) parameter as (C, 1, ..., 1), to broadcast against (N, C, d1, ...)."""
        return Unsqueeze(v, np.arange(1, rank - 1, dtype=np.int64)) if rank > 2 else v

    def vjp(self, node: Node, grads):
        if attr(node, "training_mode"):
            return self._training_vjp(node, grads)
        # y = (x - mean) * inv_std * scale + B with inv_std = 1 / sqrt(var + epsilon)
        from irkit.ops.elementwise import Add, Neg, Reciprocal, Sqrt
        x, scale, _, mean, var = node.inputs
        g, others, c = grads[0], self._other_axes(x), lambda v: self._per_channel(v, x.rank)
        axes = np.array(others, np.int64)
        inv_std = Reciprocal(Sqrt(Add(var, attr(node, "epsilon"))))
        scaled = Mul(scale, inv_std)
        g_sum = ReduceSum(g, axes, keepdims=0)
        g_centered = ReduceSum(Mul(g, Sub(x, c(mean))), axes, keepdims=0)
        d_var = Mul(Mul(g_centered, scaled), Mul(Mul(inv_std, inv_std), -0.5))
        return [Mul(g, c(scaled)), Mul(g_centered, inv_std), g_sum, Neg(Mul(g_sum, scaled)),
                d_var]

    def _training_vjp(self, node: Node, grads):
        """With x_hat the batch-normalized x and M the elements per channel:
        d scale = sum(g x_hat), d B = sum(g) and
        dx = scale inv_std (g - d B / M - x_hat d scale / M),
        the two means taken from the sums the scale and B gradients need anyway (7 passes over
        x's size in all, with the batch statistics recomputed)."""
        from irkit.ops.elementwise import Add, Div
        x, scale = node.inputs[:2]
        g, g_rmean, g_rvar = (list(grads) + [None, None])[:3]
        others = self._other_axes(x)
        axes = np.array(others, np.int64)
        # x_hat = centered inv_std is never made: inv_std goes into the per-channel factors
        centered, inv_std = _statistics(x, others, attr(node, "epsilon"))
        c = lambda v: self._per_channel(v, x.rank)  # noqa: E731
        count = _count(x, others, inv_std)
        d_scale = Mul(ReduceSum(Mul(g, centered), axes, keepdims=0),
                      Reshape(inv_std, np.array([-1], np.int64)))
        d_bias = ReduceSum(g, axes, keepdims=0)
        shifted = Sub(g, Add(c(Div(d_bias, count)),
                             Mul(centered, Mul(inv_std, c(Div(d_scale, count))))))
        dx = Mul(shifted, Mul(c(scale), inv_std))
        momentum = attr(node, "momentum")
        # Y reads the batch's statistics: without their outputs, the running ones move nothing
        d_mean, d_var = zeros_like(node.inputs[3]), zeros_like(node.inputs[4])
        if _used(g_rmean):  # running_mean = input_mean * m + batch_mean * (1 - m)
            d_mean = Mul(g_rmean, momentum)
            dx = Add(dx, Div(c(Mul(g_rmean, 1 - momentum)), count))
        if _used(g_rvar):  # running_var = input_var * m + batch_var * (1 - m)
            d_var = Mul(g_rvar, momentum)
            dx = Add(dx, Div(Mul(c(Mul(g_rvar, 2 * (1 - momentum))), centered), count))
        return [dx, d_scale, d_bias, d_mean, d_var]

    def compute(self, node: Node, inputs):
        x, scale, bias, mean, var = inputs
        shape = (-1,) + (1,) * (x.ndim - 2)
        eps, m = attr(node, "epsilon"), attr(node, "momentum")
        if not attr(node, "training_mode"):
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]
        axes = (0,) + tuple(range(2, x.ndim))
        batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
        y = (x - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + eps)
        y = y * scale.reshape(shape) + bias.reshape(shape)
        return [y.astype(x.dtype), (mean * m + batch_mean * (1 - m)).astype(mean.dtype),
                (var * m + batch_var * (1 - m)).astype(var.dtype)]


@define
class InstanceNormalization(OpDef):
    """Per-sample, per-channel normalization over the spatial axes of (N, C, d1, ...), then
    y = scale * x_hat + B with (C,) scale and B (biased variance, epsilon inside the root)."""

    op_type, since = "InstanceNormalization", 6
    attributes = {"epsilon": 1e-5}

    def infer(self, node: Node):
        return same_as_input_of_rank(node, 3, "N, C, d1, ...")

    def vjp(self, node: Node, grads):
        x, scale = node.inputs[:2]
        if x.rank is None:
            raise ShapeError(f"InstanceNormalization node {node.name!r}: its gradient needs the "
                             "input's rank")
        g, spatial = grads[0], list(range(2, x.rank))
        c = lambda v: BatchNormalization._per_channel(v, x.rank)  # noqa: E731
        _, inv_std, x_hat = _normalized(x, spatial, attr(node, "epsilon"))
        others = np.array([0] + spatial, np.int64)
        return [_normalization_vjp(Mul(g, c(scale)), x_hat, inv_std, spatial),
                ReduceSum(Mul(g, x_hat), others, keepdims=0), ReduceSum(g, others, keepdims=0)]

    def compute(self, node: Node, inputs):
        x, scale, bias = inputs
        axes = tuple(range(2, x.ndim))
        per_channel = (-1,) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + attr(node, "epsilon"))
        return [(y * scale.reshape(per_channel) + bias.reshape(per_channel)).astype(x.dtype)]


# ---- LRN --------------------------------------------------------------------------------------
def _channel_window_sum(v: Value, before: int, after: int) -> Value:
    """s[:, c] = sum of v[:, c - before .. c + after] over the channel axis (axis 1; zeros
    beyond it): v padded on axis 1, then the sum of before + after + 1 shifted slices."""
    from irkit.ops.elementwise import Sum
    from irkit.ops.shape import Pad, Slice

    if v.rank is None:
        raise ShapeError(f"LRN of {v.name!r} needs an input of known rank")
    pads = np.zeros(2 * v.rank, np.int64)
    pads[1], pads[v.rank + 1] = before, after
    padded = Pad(v, pads) if before or after else v
    width = before + after + 1
    if width == 1:
        return padded
    ends = [k - width + 1 if k < width - 1 else np.iinfo(np.int64).max for k in range(width)]
    parts = [Slice(padded, np.array([k], np.int64), np.array([e], np.int64),
                   np.array([1], np.int64)) for k, e in enumerate(ends)]
    return Sum(*parts) if len(parts) > 2 else parts[0] + parts[1]


def _lrn_window(node: Node) -> tuple[int, int]:
    """The channels before and after c that c's square sum covers (ONNX: floor and ceil of
    (size - 1) / 2)."""
    size = attr(node, "size")
    if size < 1:
        raise ShapeError(f"LRN node {node.name!r}: size must be at least 1, got {size}")
    return (size - 1) // 2, size // 2


@define
class LRN(OpDef):
    """Local response normalization across channels of (N, C, d1, ...) (AlexNet, Inception):
    y = x / (bias + alpha / size * square_sum)^beta, square_sum[:, c] the sum of x^2 over the
    channels c - floor((size-1)/2) .. c + ceil((size-1)/2)."""

    op_type, since = "LRN", 13
    attributes = {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": Required(int)}

    def infer(self, node: Node):
        return same_as_input_of_rank(node, 3, "N, C, d1, ...")

    def _base(self, node: Node, x: Value) -> Value:
        from irkit.ops.elementwise import Add

        before, after = _lrn_window(node)
        square_sum = _channel_window_sum(Mul(x, x), before, after)
        return Add(Mul(square_sum, attr(node, "alpha") / attr(node, "size")), attr(node, "bias"))

    def vjp(self, node: Node, grads):
        # with b = bias + a/n S(x^2) and y = x b^-beta:
        # dx = g b^-beta - 2 a beta / n * x * S^T(g y / b), S^T the window mirrored
        from irkit.ops.elementwise import Div, Pow

        x, y, g = node.inputs[0], node.outputs[0], grads[0]
        base = self._base(node, x)
        before, after = _lrn_window(node)
        factor = 2.0 * attr(node, "alpha") * attr(node, "beta") / attr(node, "size")
        back = _channel_window_sum(Div(Mul(g, y), base), after, before)
        return [Sub(Mul(g, Pow(base, -attr(node, "beta"))), Mul(Mul(x, back), factor))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        before, after = _lrn_window(node)
        widths = [(0, 0)] * x.ndim
        widths[1] = (before, after)
        sq = np.pad(x.astype(np.float64) ** 2, widths)
        square_sum = sum(sq[:, k:k + x.shape[1]] for k in range(before + after + 1))
        base = attr(node, "bias") + attr(node, "alpha") / attr(node, "size") * square_sum
        return [(x / base ** attr(node, "beta")).astype(x.dtype)]
