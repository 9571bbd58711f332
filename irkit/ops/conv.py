"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool (opset 11-17 semantics, inputs (N, C, d1, ..., dn)).

Gradients need static spatial sizes (the batch may be symbolic). Conv and ConvTranspose are
each other's input gradient, and both take their weight gradient from one Conv over
regrouped tensors (`_weight_grad`), so the rules differentiate again. MaxPool's gradient goes
to the first maximum of each window: for windows that tile the input (strides = kernel, no
pads), found with masks (`_tiled_max_grad`); otherwise added at the argmax indices of the
indices-producing MaxPool (ScatterElements). AveragePool's spreads g with a ConvTranspose of
ones.
"""

from __future__ import annotations

import functools
import math
from itertools import product

import numpy as np

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node, Value
from irkit.ops import conv_gemm
from irkit.ops.base import OpDef, define
from irkit.ops.elementwise import Cast, Div, Equal, Mul
from irkit.ops.index import ScatterElements
from irkit.ops.reduce import ReduceSum, element_ratio
from irkit.ops.registry import attr
from irkit.ops.resize import Resize
from irkit.ops.shape import (
    Expand,
    Pad,
    Reshape,
    Shape,
    Slice,
    Transpose,
    onnx_dtype,
    shape_of,
    zeros_like,
)

__all__ = ["AveragePool", "Conv", "ConvTranspose", "GlobalAveragePool", "GlobalMaxPool",
           "MaxPool"]


class Geometry:
    """Kernel, strides, dilations and explicit begin/end pads of a window op on known sizes."""

    def __init__(self, node: Node, kernel: list[int], spatial: tuple,
                 pads: list[int] | None = None) -> None:
        n = len(kernel)
        self.kernel = list(kernel)
        self.strides = list(attr(node, "strides") or [1] * n)
        # read directly: AveragePool (opset 11) has no dilations
        self.dilations = list(node.attributes.get("dilations") or [1] * n)
        self.ceil = bool(node.attributes.get("ceil_mode", 0))
        if pads is not None:  # worked out by the op (ConvTranspose's output_shape)
            self.begin, self.end = pads[:n], pads[n:]
            return
        auto_pad = attr(node, "auto_pad")
        pads = list(attr(node, "pads") or [0] * (2 * n))
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if not all(isinstance(d, int) for d in spatial):
                raise ShapeError(f"{node.op_type} node {node.name!r}: auto_pad {auto_pad} needs "
                                 "static spatial sizes")
            pads = [0] * (2 * n)
            for i, size in enumerate(spatial):
                out = -(-size // self.strides[i])
                total = max((out - 1) * self.strides[i] + self.extent(i) - size, 0)
                pads[i] = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
                pads[n + i] = total - pads[i]
        elif auto_pad == "VALID":
            pads = [0] * (2 * n)
        self.begin, self.end = pads[:n], pads[n:]

    def extent(self, i: int) -> int:
        """Span of the dilated kernel along spatial axis i."""
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def out_size(self, i: int, size) -> int | None:
        if not isinstance(size, int):
            return None
        span = size + self.begin[i] + self.end[i] - self.extent(i)
        if not self.ceil:
            return span // self.strides[i] + 1
        out = -(-span // self.strides[i]) + 1
        return out - 1 if (out - 1) * self.strides[i] >= size + self.begin[i] else out

    def pads(self) -> list[int]:
        return self.begin + self.end


def _static_spatial(x: Value, node: Node) -> tuple[int, ...]:
    if x.shape is None or not all(isinstance(d, int) for d in x.shape[2:]):
        raise ShapeError(f"{node.op_type} node {node.name!r}: its gradient needs static spatial "
                         f"sizes (input {x.name!r} has shape {x.shape})")
    return tuple(x.shape[2:])


def _windows(xp: np.ndarray, geo: Geometry, out: list[int]):
    """(kernel index, the strided view of padded input xp that kernel tap reads)."""
    for k in product(*[range(kk) for kk in geo.kernel]):
        yield k, xp[(slice(None), slice(None)) + tuple(
            slice(ki * d, ki * d + s * (o - 1) + 1, s)
            for ki, d, s, o in zip(k, geo.dilations, geo.strides, out, strict=True))]


def _pad_np(x: np.ndarray, geo: Geometry, out: list[int], value: float) -> np.ndarray:
    """x padded by the pads, and at the end as far as ceil_mode windows reach."""
    widths = [(0, 0), (0, 0)]
    for i, size in enumerate(x.shape[2:]):
        reach = (out[i] - 1) * geo.strides[i] + geo.extent(i)
        widths.append((geo.begin[i], max(geo.end[i], reach - size - geo.begin[i])))
    return np.pad(x, widths, constant_values=value)


def _accumulator(x: np.ndarray, w: np.ndarray) -> np.dtype:
    """The type sums of products run in: float32 at least, as onnxruntime's float16 kernels
    accumulate (summing in float16 rounds every partial sum); the caller casts back."""
    dtype = np.result_type(x, w)
    return np.promote_types(dtype, np.float32) if dtype.kind == "f" else dtype


def _conv_np(x: np.ndarray, w: np.ndarray, geo: Geometry, group: int) -> np.ndarray:
    n, c = x.shape[:2]
    m = w.shape[0]
    out = [geo.out_size(i, d) for i, d in enumerate(x.shape[2:])]
    acc = _accumulator(x, w)  # products too: einsum of float16 arrays rounds each to float16
    y = np.zeros((n, group, m // group) + tuple(out), dtype=acc)
    for k, patch in _windows(_pad_np(x, geo, out, 0), geo, out):
        patch = patch.reshape((n, group, c // group) + tuple(out)).astype(acc, copy=False)
        wk = w[(slice(None), slice(None)) + k].reshape(group, m // group, c // group)
        y += np.einsum("ngc...,gmc->ngm...", patch, wk.astype(acc, copy=False))
    return y.reshape((n, m) + tuple(out))


class _WindowOp(OpDef):
    """Shared by Conv, ConvTranspose and the pools: attributes and shape inference."""

    since = 11
    attributes = {"auto_pad": "NOTSET", "kernel_shape": None, "pads": None, "strides": None}

    def kernel(self, node: Node) -> list[int]:
        return list(attr(node, "kernel_shape"))

    def geometry(self, node: Node) -> Geometry:
        x = node.inputs[0]
        spatial = x.shape[2:] if x.shape is not None else ()
        return Geometry(node, self.kernel(node), spatial)

    def out_channels(self, node: Node):
        return node.inputs[0].shape[1]

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, None), (np.int64, None)]
        geo = self.geometry(node)
        out = tuple(geo.out_size(i, d) for i, d in enumerate(x.shape[2:]))
        shape = (x.shape[0], self.out_channels(node)) + out
        return [(x.dtype, shape), (np.int64, shape)]


class _ConvBase(_WindowOp):
    attributes = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                  "pads": None, "strides": None}

    def kernel(self, node: Node) -> list[int]:
        given = node.attributes.get("kernel_shape")
        w = node.inputs[1]
        if given is None and (w.shape is None or not all(isinstance(d, int)
                                                         for d in w.shape[2:])):
            raise ShapeError(f"{self.op_type} node {node.name!r}: give kernel_shape or a weight "
                             "of static shape")
        return list(given) if given is not None else list(w.shape[2:])

    def bias_grad(self, g: Value) -> Value:
        return ReduceSum(g, np.array([0] + list(range(2, g.rank)), np.int64), keepdims=0)


@define
class Conv(_ConvBase):
    """y = conv(x, W) + B with W (M, C / group, k1, ..., kn)."""

    op_type = "Conv"

    def out_channels(self, node: Node):
        w = node.inputs[1]
        return w.shape[0] if w.shape is not None else None

    def vjp(self, node: Node, grads):
        x, w = node.inputs[:2]
        g, geo, group = grads[0], self.geometry(node), attr(node, "group")
        spatial = _static_spatial(x, node)
        # ConvTranspose maps back to the input size once output_padding restores the rows and
        # columns the last window never reached
        out_pad = [(size + geo.begin[i] + geo.end[i] - geo.extent(i)) % geo.strides[i]
                   for i, size in enumerate(spatial)]
        out = node.outputs[0].shape[2:]
        small = _gemm_form(w, out, group) and math.prod(out) <= conv_gemm.GEMM_POSITIONS
        if small and group == 1:
            dx = conv_gemm.input_grad(g, w, geo, list(spatial), list(out))
        elif small and group == w.shape[0] == x.shape[1]:  # depthwise
            dx = conv_gemm.depthwise_input_grad(g, w, geo, list(spatial), list(out))
        else:
            dx = ConvTranspose(g, w, strides=geo.strides, dilations=geo.dilations,
                               pads=geo.pads(), group=group, output_padding=out_pad,
                               kernel_shape=geo.kernel)
        dw = _weight_grad(x, g, x.shape, node.outputs[0].shape, w, geo, group)
        return [dx, dw] + ([self.bias_grad(g)] if len(node.inputs) > 2 else [])

    def compute(self, node: Node, inputs):
        x, w = inputs[:2]
        y = _conv_np(x, w, self.geometry(node), attr(node, "group"))
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2].reshape((-1,) + (1,) * (x.ndim - 2))
        return [y.astype(x.dtype)]


@define
class ConvTranspose(_ConvBase):
    """The transpose (input gradient) of Conv: W (C, M / group, k1, ..., kn), pads and
    output_padding, or an output_shape / auto_pad that sets the pads (static sizes)."""

    op_type = "ConvTranspose"
    attributes = dict(_ConvBase.attributes, output_padding=None)

    def geometry(self, node: Node) -> Geometry:
        """Explicit pads, or the pads that give `output_shape` (by auto_pad SAME_* with the
        input size times the strides when not given): total = stride (in - 1) +
        output_padding + extent - out, split with the odd one at the end for SAME_UPPER, at
        the start otherwise; a negative total widens the output with zeros."""
        auto_pad, kernel = attr(node, "auto_pad"), self.kernel(node)
        shape = node.attributes.get("output_shape")
        if shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            return Geometry(node, kernel, ())
        x = node.inputs[0]
        spatial = x.shape[2:] if x.shape is not None else ()
        if len(spatial) != len(kernel) or not all(isinstance(d, int) for d in spatial):
            raise ShapeError(f"ConvTranspose node {node.name!r}: output_shape and auto_pad need "
                             f"static spatial sizes (input {x.name!r} has shape {x.shape})")
        geo = Geometry(node, kernel, (), pads=[0] * (2 * len(kernel)))
        extra = self._output_padding(node)
        shape = list(shape)[-len(kernel):] if shape is not None else [
            d * s for d, s in zip(spatial, geo.strides, strict=True)]
        total = [s * (d - 1) + p + geo.extent(i) - o for i, (s, d, p, o) in enumerate(
            zip(geo.strides, spatial, extra, shape, strict=True))]
        small = [t // 2 for t in total]
        big = [t - h for t, h in zip(total, small, strict=True)]
        geo.begin, geo.end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return geo

    def out_channels(self, node: Node):
        w = node.inputs[1]
        return w.shape[1] * attr(node, "group") if w.shape is not None and isinstance(
            w.shape[1], int) else None

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, None)]
        geo, extra = self.geometry(node), self._output_padding(node)
        out = tuple(None if not isinstance(d, int) else geo.strides[i] * (d - 1) + extra[i] +
                    geo.extent(i) - geo.begin[i] - geo.end[i] for i, d in enumerate(x.shape[2:]))
        return [(x.dtype, (x.shape[0], self.out_channels(node)) + out)]

    def _output_padding(self, node: Node) -> list[int]:
        return list(attr(node, "output_padding") or [0] * len(self.kernel(node)))

    def vjp(self, node: Node, grads):
        x, w = node.inputs[:2]
        g, geo, group = grads[0], self.geometry(node), attr(node, "group")
        _static_spatial(x, node)
        if min(geo.pads()) < 0:
            raise UnsupportedOpError(f"ConvTranspose node {node.name!r}: no gradient where "
                                     f"output_shape is larger than the kernel reaches (pads "
                                     f"{geo.pads()}); give a smaller output_shape")
        dx = Conv(g, w, strides=geo.strides, dilations=geo.dilations, pads=geo.pads(),
                  group=group, kernel_shape=geo.kernel)
        # the conv from the output's size to the input's has this weight
        dw = _weight_grad(g, x, node.outputs[0].shape, x.shape, w, geo, group)
        return [dx, dw] + ([self.bias_grad(g)] if len(node.inputs) > 2 else [])

    def compute(self, node: Node, inputs):
        x, w = inputs[:2]
        geo, group, extra = self.geometry(node), attr(node, "group"), self._output_padding(node)
        n, c = x.shape[:2]
        mg = w.shape[1]
        full = [geo.strides[i] * (d - 1) + geo.extent(i) + extra[i]
                for i, d in enumerate(x.shape[2:])]
        acc = _accumulator(x, w)  # the products in it too, as in Conv
        y = np.zeros((n, group, mg) + tuple(full), dtype=acc)
        xg = x.reshape((n, group, c // group) + x.shape[2:]).astype(acc, copy=False)
        for k in product(*[range(kk) for kk in geo.kernel]):
            wk = w[(slice(None), slice(None)) + k].reshape(group, c // group, mg).astype(acc)
            where = tuple(slice(ki * d, ki * d + s * (size - 1) + 1, s) for ki, d, s, size in
                          zip(k, geo.dilations, geo.strides, x.shape[2:], strict=True))
            y[(slice(None),) * 3 + where] += np.einsum("ngc...,gcm->ngm...", xg, wk)
        y = y.reshape((n, group * mg) + tuple(full))
        if min(geo.pads()) < 0:  # a negative pad adds zero rows on its side
            y = np.pad(y, [(0, 0)] * 2 + [(max(-b, 0), max(-e, 0)) for b, e in zip(
                geo.begin, geo.end, strict=True)])
            full = list(y.shape[2:])
        crop = tuple(slice(max(b, 0), f - max(e, 0)) for b, e, f in zip(
            geo.begin, geo.end, full, strict=True))
        y = y[(slice(None), slice(None)) + crop]
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2].reshape((-1,) + (1,) * (x.ndim - 2))
        return [y.astype(x.dtype)]


def _gemm_form(w: Value, out, group: int) -> bool:
    """Whether a 2-D convolution's gradients can take conv_gemm's matrix-product forms:
    static weight and output sizes, group 1 or one input channel per group (depthwise)."""
    return w.shape is not None and len(w.shape) == 4 and all(
        isinstance(d, int) for d in (*w.shape, *out)) and (group == 1 or w.shape[1] == 1)


def _weight_grad(x: Value, g: Value, x_shape, g_shape, w: Value, geo: Geometry,
                 group: int) -> Value:
    """dW of y = conv(x, W) (geometry geo; x_shape and g_shape the node's shapes) given
    g = dy. 2-D, group 1, kernels up to 3x3: a matrix product over x's im2col columns
    (conv_gemm.weight_grad; on onnxruntime, 1 thread, batch 32, the Conv form below took
    1.1-1.3x as long for 3x3 kernels, 4-21x for 1x1 and for a strided 3-channel stem, but
    half the time for a 7x7 stem and for depthwise convs, which keep it). Otherwise as one
    grouped Conv: batch and channels of x swap places, g becomes the kernel, strides and
    dilations trade roles, and the result is cut to the kernel size.

    dW[m, c, k] = sum_{n, o} g[n, m, o] x_padded[n, c, o * stride + k * dilation]
    """
    rank, m = len(x_shape), g_shape[1]
    spatial, out = list(x_shape[2:]), list(g_shape[2:])
    if not all(isinstance(d, int) for d in spatial + out):
        raise ShapeError(f"the weight gradient of {w.name!r} needs static spatial sizes")
    if group == 1 and _gemm_form(w, out, group) and isinstance(m, int) and \
            math.prod(geo.kernel) <= 9:
        return conv_gemm.weight_grad(x, g, g_shape, w.shape, geo)
    swap = [1, 0] + list(range(2, rank))
    if group == 1:  # x (N, C, *s) -> (C, N, *s); g (N, M, *o) -> (M, N, *o), the kernel
        xs, gs = Transpose(x, perm=swap), Transpose(g, perm=swap)
    else:  # the same, with channels group-major, for a grouped Conv
        if not isinstance(m, int):
            raise ShapeError(f"the weight gradient of {w.name!r} (group {group}) needs a static "
                             "number of output channels")
        tail = list(range(3, rank + 1))
        xs = Reshape(x, np.array([0, group, -1] + spatial, np.int64))  # (N, G, C/G, *s)
        xs = Reshape(Transpose(xs, perm=[2, 1, 0] + tail), np.array([0, -1] + spatial, np.int64))
        gs = Reshape(g, np.array([0, group, -1] + out, np.int64))  # (N, G, M/G, *o)
        gs = Reshape(Transpose(gs, perm=[1, 2, 0] + tail), np.array([m, -1] + out, np.int64))
    dw = Conv(xs, gs, strides=geo.dilations, dilations=geo.strides, pads=geo.pads(), group=group,
              kernel_shape=out)  # (C/G, M, *k'), k' >= k
    reach = [(size + b + e - ((o - 1) * s + 1)) // d + 1 for size, b, e, o, s, d in zip(
        spatial, geo.begin, geo.end, out, geo.strides, geo.dilations, strict=True)]
    if reach != geo.kernel:
        n = len(geo.kernel)
        dw = Slice(dw, np.zeros(n, np.int64), np.array(geo.kernel, np.int64),
                   np.arange(2, 2 + n, dtype=np.int64))
    return Transpose(dw, perm=swap)


@define
class MaxPool(_WindowOp):
    """Max over windows (pads count as -inf); optional Indices output into the flattened
    input (N, C, d1, ...): row-major, or with storage_order=1 column-major within each
    (n, c) plane."""

    op_type, since = "MaxPool", 12
    attributes = dict(_WindowOp.attributes, ceil_mode=0, dilations=None, storage_order=0)

    def default_num_outputs(self, node: Node) -> int:
        return 1

    def vjp(self, node: Node, grads):
        x, g = node.inputs[0], grads[0]
        if len(node.outputs) == 1 and self.tiles(node):
            return [_tiled_max_grad(node, x, g, self.kernel(node))]
        indices = node.outputs[1] if len(node.outputs) > 1 and not attr(
            node, "storage_order") else MaxPool(x, _num_outputs=2, **dict(
                node.attributes, storage_order=0))[1]  # row-major indices, for the scatter
        flat = node.graph.constant(np.array([-1], np.int64))
        dx = ScatterElements(Reshape(zeros_like(x), flat), Reshape(indices, flat),
                             Reshape(g, flat), axis=0, reduction="add")
        return [Reshape(dx, shape_of(x))]

    def tiles(self, node: Node) -> bool:
        """Whether the windows tile the input: strides = kernel, no dilation, no pads, no
        partial windows (ceil_mode on sizes that are no multiple of the kernel)."""
        x = node.inputs[0]
        if x.shape is None or not all(isinstance(d, int) for d in x.shape[2:]):
            return False
        spatial, geo = x.shape[2:], self.geometry(node)
        return (geo.strides == geo.kernel and set(geo.dilations) == {1}
                and not any(geo.pads()) and not (geo.ceil and any(
                    size % k for size, k in zip(spatial, geo.kernel, strict=True))))

    def compute(self, node: Node, inputs):
        x = inputs[0]
        geo = self.geometry(node)
        out = [geo.out_size(i, d) for i, d in enumerate(x.shape[2:])]
        plane = math.prod(x.shape[2:])
        order = "F" if attr(node, "storage_order") else "C"
        flat_index = (np.arange(plane, dtype=np.int64).reshape(x.shape[2:], order=order)
                      + plane * np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(
                          x.shape[:2] + (1,) * (x.ndim - 2)))
        xp = _pad_np(x, geo, out, -np.inf)
        ip = _pad_np(flat_index, geo, out, -1)
        best = np.full(x.shape[:2] + tuple(out), -np.inf, dtype=x.dtype)
        where = np.zeros(best.shape, np.int64)
        for (_, patch), (_, index) in zip(_windows(xp, geo, out), _windows(ip, geo, out),
                                          strict=True):
            better = patch > best  # strictly: the first of tied values wins
            best, where = np.where(better, patch, best), np.where(better, index, where)
        return [best, where]


def _tiled_max_grad(node: Node, x: Value, g: Value, kernel: list[int]) -> Value:
    """dx of a MaxPool whose windows tile x: g goes to the first maximum of each window in
    scan order (the one MaxPool's Indices and torch pick), found with masks, which runs faster
    in a train step than the indices-producing MaxPool and a scatter
    (benchmarks/bench_cnn_step.py):

    1. hit = (x == y upsampled): every maximum of its window;
    2. rank = hit * w, w counting down K..1 over each window in scan order, so the
       first maximum holds the largest rank of its window;
    3. first = (rank == MaxPool(rank) upsampled): one position per window;
    4. dx = first * g upsampled.
    The selections are products with 0/1 masks, not Wheres: onnxruntime runs a Cast and a Mul
    faster than a Where (digits_cnn step 594 -> 559 us). They give the same numbers as long as
    g is finite (an infinite g makes NaNs next to its window's maximum, where a Where would
    give 0s; such a step has diverged either way).
    Rows and columns after the last window (floor mode) are cropped first and get 0.
    """
    graph, spatial = node.graph, _static_spatial(x, node)
    rest = [size % k for size, k in zip(spatial, kernel, strict=True)]
    covered = [size - r for size, r in zip(spatial, rest, strict=True)]
    edge = np.array([0] * (len(spatial) + 4) + rest, np.int64)  # end pads: the rest
    if any(rest):
        x = Pad(x, -edge)
    pooled = [c // k for c, k in zip(covered, kernel, strict=True)]

    def up(v: Value) -> Value:
        return _upsample(v, kernel, pooled)

    position = np.zeros(covered, np.int64)  # of each element in its window, in scan order
    for axis, k in enumerate(kernel):
        index = (np.arange(covered[axis]) % k).reshape([-1] + [1] * (len(kernel) - axis - 1))
        position = position * k + index
    rank = Mul(Cast(Equal(x, up(node.outputs[0])), to=onnx_dtype(x.dtype)),
               graph.constant((math.prod(kernel) - position).astype(x.dtype)))
    first = Equal(rank, up(MaxPool(rank, kernel_shape=kernel, strides=kernel)))
    dx = Mul(Cast(first, to=onnx_dtype(x.dtype)), up(g))
    return Pad(dx, edge) if any(rest) else dx


def _upsample(v: Value, kernel: list[int], spatial: list[int]) -> Value:
    """Each element of v (N, C, *spatial) repeated kernel[i] times along spatial axis i.

    A nearest Resize where onnxruntime has one (float32, float16); for other dtypes (float64)
    a broadcast over interleaved axes: (N, C, d1, 1, d2, 1) expanded to (N, C, d1, k1, d2, k2)
    and merged, which runs everywhere but slower.
    """
    if v.dtype in (np.float32, np.float16):
        return Resize(v, None, np.array([1, 1] + kernel, np.float32), mode="nearest",
                      nearest_mode="floor", coordinate_transformation_mode="asymmetric")
    split = [0, 0] + [d for size in spatial for d in (size, 1)]
    wide = [1, 1] + [d for size, k in zip(spatial, kernel, strict=True) for d in (size, k)]
    merged = [0, 0] + [size * k for size, k in zip(spatial, kernel, strict=True)]
    spread = Expand(Reshape(v, np.array(split, np.int64)), np.array(wide, np.int64))
    return Reshape(spread, np.array(merged, np.int64))


@define
class AveragePool(_WindowOp):
    """Mean over windows; pads count in the mean only with count_include_pad."""

    op_type, since = "AveragePool", 11
    attributes = dict(_WindowOp.attributes, ceil_mode=0, count_include_pad=0)

    def infer(self, node: Node):
        return super().infer(node)[:1]

    def divisor(self, node: Node, spatial: tuple[int, ...]) -> np.ndarray:
        """How many elements each output averages (*out_spatial): a window's taps inside the
        input, and inside the pads too with count_include_pad, never those of a ceil_mode
        window beyond the end pad (as onnxruntime and torch count)."""
        geo, include = self.geometry(node), attr(node, "count_include_pad")
        per_axis = []
        for i, size in enumerate(spatial):
            low, high = (-geo.begin[i], size + geo.end[i]) if include else (0, size)
            starts = np.arange(geo.out_size(i, size)) * geo.strides[i] - geo.begin[i]
            taps = starts[:, None] + np.arange(geo.kernel[i]) * geo.dilations[i]
            per_axis.append(((taps >= low) & (taps < high)).sum(axis=1).astype(np.float64))
        return functools.reduce(np.multiply.outer, per_axis)

    def vjp(self, node: Node, grads):
        x, g = node.inputs[0], grads[0]
        spatial, geo = _static_spatial(x, node), self.geometry(node)
        share = Div(g, node.graph.constant(self.divisor(node, spatial).astype(x.dtype)))
        out = list(node.outputs[0].shape[2:])
        single = Reshape(share, np.array([-1, 1] + out, np.int64))
        ones = node.graph.constant(np.ones((1, 1) + tuple(geo.kernel), x.dtype))
        # the transposed windows reach (o - 1) s + k - begin; a ceil_mode window's part beyond
        # the end pad is cropped with it, and what they do not reach is output padding
        reach = [(o - 1) * s + geo.extent(i) for i, (o, s) in enumerate(zip(out, geo.strides))]
        end = [max(e, r - size - b) for e, r, size, b in zip(geo.end, reach, spatial, geo.begin)]
        out_pad = [size + b + e - r for size, b, e, r in zip(spatial, geo.begin, end, reach)]
        dx = ConvTranspose(single, ones, strides=geo.strides, pads=geo.begin + end,
                           output_padding=out_pad, kernel_shape=geo.kernel)
        return [Reshape(dx, shape_of(x))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        n, c = x.shape[:2]
        kernel = np.ones((1, 1) + tuple(self.geometry(node).kernel), x.dtype)
        sums = _conv_np(x.reshape((n * c, 1) + x.shape[2:]), kernel, self.geometry(node), 1)
        y = sums.reshape((n, c) + sums.shape[2:]) / self.divisor(node, x.shape[2:])
        return [y.astype(x.dtype)]


class _GlobalPool(OpDef):
    """Reduce (N, C, d1, ...) over the spatial axes to (N, C, 1, ...)."""

    since = 1

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, None)]
        return [(x.dtype, x.shape[:2] + (1,) * (len(x.shape) - 2))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        return [self.np_fn(x, axis=tuple(range(2, x.ndim)), keepdims=True)]


@define
class GlobalAveragePool(_GlobalPool):
    """Mean over the spatial axes."""

    op_type = "GlobalAveragePool"
    np_fn = staticmethod(np.mean)

    def vjp(self, node: Node, grads):
        return [Div(Expand(grads[0], Shape(node.inputs[0])), element_ratio(node))]


@define
class GlobalMaxPool(_GlobalPool):
    """Max over the spatial axes; ties share the gradient evenly."""

    op_type = "GlobalMaxPool"
    np_fn = staticmethod(np.max)

    def vjp(self, node: Node, grads):
        x = node.inputs[0]
        hit = Cast(Equal(x, node.outputs[0]), to=onnx_dtype(x.dtype))
        count = ReduceSum(hit, np.arange(2, x.rank, dtype=np.int64), keepdims=1)
        return [Mul(grads[0], Div(hit, count))]
