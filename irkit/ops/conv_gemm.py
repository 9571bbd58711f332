"""2-D convolution and its gradients as matrix products over im2col columns.

onnxruntime's CPU Conv and ConvTranspose run one small matrix product per image and per
group; where a convolution has few output positions (a 64x64 image's last ResNet stages:
4x4 and 2x2) those products have 4-16 columns and run far below the machine's speed, and the
weight gradient's Conv over swapped batch and channels (`conv._weight_grad`) is slow at every
size (benchmarks/README.md, "profile_step.py"). Here the batch joins the columns instead, so
each product is one large Gemm:

- `im2col(x, geo, out)`: (C * K, N * P) columns of x (N, C, s1, s2), K = k1 * k2 kernel taps,
  P = o1 * o2 output positions; row (c, i, j), column (n, p, q) holds
  x_padded[n, c, p * stride + i * dilation, q * stride + j * dilation];
- `conv_as_gemm`: y = W (M, C * K) @ columns, to (N, M, o1, o2);
- `weight_grad`: dW = g (M, N * P) @ columns^T;
- `input_grad`: dx = col2im(W^T @ g): each tap's rows placed (strided) and summed.

Everything is built from standard ops with VJPs, so these forms differentiate again. The
columns are built by one function so that a convolution lowered by `conv_as_gemm` and its
weight gradient share them once common subexpressions are merged.
"""

from __future__ import annotations

import hashlib
import math
from itertools import product

import numpy as np

from irkit.ir import Value
from irkit.ops.elementwise import Add
from irkit.ops.nn import Gemm, MatMul
from irkit.ops.shape import Concat, Pad, Reshape, Slice, Transpose, Unsqueeze

__all__ = ["GEMM_POSITIONS", "conv_as_gemm", "depthwise_as_matmul", "depthwise_input_grad",
           "im2col", "input_grad", "weight_grad"]

# output positions per image (o1 * o2) up to which a convolution itself and its input
# gradient run as Gemms (measured on one CPU thread, batch 32: at 2x2 the Gemm form of a
# 512-channel 3x3 conv took 10 ms against Conv's 32 and ConvTranspose's 70-95; at 8x8 Conv
# and ConvTranspose were faster than the columns cost)
GEMM_POSITIONS = 16
_SWAP = [1, 0, 2, 3]


def _ints(values) -> np.ndarray:
    return np.array(list(values), np.int64)


def im2col(x: Value, geo, out: list[int], channels: int) -> Value:
    """(C * K, N * P) columns of x (N, C, s1, s2), C = channels, for a convolution of
    geometry `geo` (a conv.Geometry) with output sizes `out`: `small_im2col` for at most
    GEMM_POSITIONS output positions, else sliced from the padded input."""
    spatial = list(x.shape[2:]) if x.shape is not None else []
    if len(spatial) == 2 and all(isinstance(d, int) for d in spatial) and \
            math.prod(out) <= GEMM_POSITIONS:
        return small_im2col(x, geo, spatial, out, channels)
    xt = Transpose(x, perm=_SWAP)  # (C, N, s1, s2): the batch joins the columns
    if all(k == 1 for k in geo.kernel) and all(s == 1 for s in geo.strides) and \
            not any(geo.begin + geo.end):  # 1x1: the columns are x itself
        return Reshape(xt, _ints([channels, -1]))
    if any(geo.begin + geo.end):
        xt = Pad(xt, _ints([0, 0, *geo.begin, 0, 0, *geo.end]))
    taps = []
    for k in product(*[range(kk) for kk in geo.kernel]):
        start = [ki * d for ki, d in zip(k, geo.dilations, strict=True)]
        end = [s0 + s * (o - 1) + 1 for s0, s, o in zip(start, geo.strides, out, strict=True)]
        tap = Slice(xt, _ints(start), _ints(end), _ints([2, 3]), _ints(geo.strides))
        taps.append(Unsqueeze(tap, _ints([1])))  # (C, 1, N, o1, o2)
    cols = Concat(*taps, axis=1) if len(taps) > 1 else taps[0]
    return Reshape(cols, _ints([channels * len(taps), -1]))


def _rows(g: Value, m: int) -> Value:
    """g (N, M, o1, o2) as (M, N * P), the columns' order."""
    return Reshape(Transpose(g, perm=_SWAP), _ints([m, -1]))


def conv_as_gemm(x: Value, w: Value, b: Value | None, geo, out: list[int]) -> Value:
    """y = conv(x, W) + B for group 1, as one Gemm over `im2col` columns."""
    m = w.shape[0]
    y = MatMul(Reshape(w, _ints([m, -1])), im2col(x, geo, out, w.shape[1]))  # (M, N * P)
    if b is not None:
        y = Add(y, Unsqueeze(b, _ints([1])))
    return Transpose(Reshape(y, _ints([m, -1, *out])), perm=_SWAP)


def weight_grad(x: Value, g: Value, g_shape, w_shape, geo) -> Value:
    """dW (w_shape) of y = conv(x, W), group 1, given g = dy; x (N, C, s1, s2), g (N, M, o1,
    o2) of shape g_shape: g (M, N * P) @ columns^T."""
    out, m = list(g_shape[2:]), g_shape[1]
    cols = im2col(x, geo, out, w_shape[1])
    return Reshape(Gemm(_rows(g, m), cols, transB=1), _ints(w_shape))


def _placement(geo, spatial: list[int], out: list[int], dtype) -> np.ndarray:
    """(K * P, S) 0/1 matrix of a small convolution: row (kernel tap, output position),
    column the input position (of S = s1 * s2) that tap reads there; none where it reads
    padding."""
    taps = list(product(*[range(kk) for kk in geo.kernel]))
    positions = list(product(*[range(o) for o in out]))
    a = np.zeros((len(taps), len(positions), math.prod(spatial)), dtype)
    for t, k in enumerate(taps):
        for p, o in enumerate(positions):
            at = [oi * s + ki * d - b for oi, s, ki, d, b in zip(
                o, geo.strides, k, geo.dilations, geo.begin, strict=True)]
            if all(0 <= q < n for q, n in zip(at, spatial, strict=True)):
                a[t, p, np.ravel_multi_index(at, spatial)] = 1
    return a.reshape(len(taps) * len(positions), -1)


def _shared(graph, array: np.ndarray) -> Value:
    """`array` as a constant of `graph`, one initializer per distinct placement (named after
    a digest of its bytes), so that the columns a lowered Conv and its weight gradient build
    are the same nodes and merge (constants this large are not merged by value otherwise)."""
    digest = hashlib.sha1(array.tobytes() + str((array.shape, array.dtype)).encode())
    name = f"im2col_placement_{digest.hexdigest()[:16]}"
    if graph.has_value(name):
        existing = graph.value(name)
        if existing.const is not None and np.array_equal(existing.const, array):
            return existing
        return graph.constant(array)
    return graph.add_initializer(name, array)


def small_im2col(x: Value, geo, spatial: list[int], out: list[int], channels: int) -> Value:
    """`im2col` for few positions, as one MatMul of x (N, C, S) by the constant 0/1
    `_placement` matrix (no padding, no slices: onnxruntime's Pad and Slice are slow on such
    small rows)."""
    k, p = math.prod(geo.kernel), math.prod(out)
    b = _shared(x.graph, np.ascontiguousarray(_placement(geo, spatial, out, x.dtype).T))
    cols = MatMul(Reshape(x, _ints([-1, channels, math.prod(spatial)])), b)  # (N, C, K * P)
    cols = Transpose(Reshape(cols, _ints([-1, channels, k, p])), perm=[1, 2, 0, 3])
    return Reshape(cols, _ints([channels * k, -1]))  # (C * K, N * P)


def input_grad(g: Value, w: Value, geo, spatial: list[int], out: list[int]) -> Value:
    """dx (N, C, *spatial) of y = conv(x, W), group 1, few output positions, given g = dy:
    the columns' gradient (N * P, C * K) = g^T @ W, each (tap, position) summed into the input
    position it read by one MatMul with the constant `_placement` matrix (col2im)."""
    m, c = w.shape[0], w.shape[1]
    k, p = math.prod(geo.kernel), math.prod(out)
    dcols = Gemm(_rows(g, m), Reshape(w, _ints([m, -1])), transA=1)  # (N * P, C * K)
    dcols = Transpose(Reshape(dcols, _ints([-1, p, c, k])), perm=[0, 2, 3, 1])  # (N, C, K, P)
    dx = MatMul(Reshape(dcols, _ints([-1, c, k * p])),
                _placement(geo, spatial, out, g.dtype))  # (N, C, S)
    return Reshape(dx, _ints([-1, c, *spatial]))


def _depthwise_matrices(w: Value, geo, spatial: list[int], out: list[int],
                        forward: bool) -> Value:
    """Per channel c of a depthwise W (C, 1, k1, k2), sum_t W[c, t] placement_t: (C, S, P)
    (x -> y) when `forward`, else (C, P, S) (g -> dx); one MatMul of W (C, K) by the
    constant placement."""
    c, k = w.shape[0], math.prod(geo.kernel)
    p, size = math.prod(out), math.prod(spatial)
    a = _placement(geo, spatial, out, w.dtype).reshape(k, p, size)  # (K, P, S)
    a = a.transpose(0, 2, 1) if forward else a
    m = MatMul(Reshape(w, _ints([c, k])), a.reshape(k, -1))  # (C, S * P) or (C, P * S)
    return Reshape(m, _ints([c, size, p] if forward else [c, p, size]))


def _per_channel(v: Value, matrices: Value, c: int, sizes: list[int]) -> Value:
    """v (N, C, *) times each channel's matrix: (C, N, a) @ (C, a, b), back to (N, C, *sizes)."""
    vt = Transpose(Reshape(v, _ints([0, c, -1])), perm=[1, 0, 2])  # (C, N, a)
    return Reshape(Transpose(MatMul(vt, matrices), perm=[1, 0, 2]), _ints([-1, c, *sizes]))


def depthwise_as_matmul(x: Value, w: Value, b: Value | None, geo, out: list[int]) -> Value:
    """y = conv(x, W) + B, depthwise (group = C, W (C, 1, k1, k2)), few positions: one
    batched MatMul of x (C, N, S) by the channels' (S, P) matrices (onnxruntime's depthwise
    Conv on a 2x2 or 4x4 map ran 10x slower than torch's)."""
    c, spatial = w.shape[0], list(x.shape[2:])
    y = _per_channel(x, _depthwise_matrices(w, geo, spatial, out, True), c, out)
    return y if b is None else Add(y, Reshape(b, _ints([c, 1, 1])))


def depthwise_input_grad(g: Value, w: Value, geo, spatial: list[int], out: list[int]) -> Value:
    """dx of a depthwise y = conv(x, W) with few positions, given g = dy: g (C, N, P) by the
    channels' (P, S) matrices."""
    return _per_channel(g, _depthwise_matrices(w, geo, spatial, out, False), w.shape[0],
                        spatial)
