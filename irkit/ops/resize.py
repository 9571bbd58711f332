"""Resize (ai.onnx opset 13-17 semantics): modes nearest, linear and cubic, every opset-13
coordinate_transformation_mode, any rank.

Resizing is separable and linear in X: along each resized axis the output is a fixed
(out, in) weight matrix applied to X (`axis_weights`, which follows onnx's reference
implementation), plus `extrapolation_value` where tf_crop_and_resize samples outside X. The numpy
reference applies the matrices; the gradient applies their transposes with MatMul (Einsum for an
axis that is not one of the last two), and for mode nearest adds g back at each output's source
pixel (ScatterElements, reduction add). Gradients need constant scales/sizes (and roi) and the
static sizes of the resized axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, const_array, define, fmt_shape
from irkit.ops.elementwise import Mul
from irkit.ops.index import ScatterElements
from irkit.ops.nn import Einsum, MatMul
from irkit.ops.registry import attr
from irkit.ops.shape import (
    Concat,
    ConstantOfShape,
    Expand,
    Shape,
    shape_of,
    zeros_like,
)

__all__ = ["Resize"]

MODES = ("nearest", "linear", "cubic")
TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
              "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
NEWER = {"antialias": 18, "axes": 18, "keep_aspect_ratio_policy": 18}  # attribute -> opset


@dataclass(frozen=True)
class AxisResize:
    """How one axis is resized: out = weights @ in along `axis`; `extrapolated` marks the
    outputs that take extrapolation_value instead (tf_crop_and_resize), else None."""

    axis: int
    weights: np.ndarray
    extrapolated: np.ndarray | None


@define
class Resize(OpDef):
    """Resize X to `sizes`, or by `scales` (floor(dim * scale)); roi only matters for
    coordinate_transformation_mode tf_crop_and_resize. Give exactly one of scales and sizes."""

    op_type, since = "Resize", 13
    attributes = {"coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
                  "exclude_outside": 0, "extrapolation_value": 0.0, "mode": "nearest",
                  "nearest_mode": "round_prefer_floor"}
    input_dtypes = {2: np.float32, 3: np.int64}

    def check(self, node: Node) -> None:
        """UnsupportedOpError for attributes and values irkit's opset (17) does not have."""
        newer = sorted(set(node.attributes) & set(NEWER))
        if newer:
            raise UnsupportedOpError(f"Resize node {node.name!r}: attribute {newer[0]!r} is from "
                                     f"opset {NEWER[newer[0]]}; irkit models opset 17: give scales "
                                     "or sizes for every axis, without antialias or an aspect "
                                     "ratio policy")
        for name, allowed in (("mode", MODES), ("coordinate_transformation_mode", TRANSFORMS),
                              ("nearest_mode", NEAREST_MODES)):
            if attr(node, name) not in allowed:
                raise UnsupportedOpError(f"Resize node {node.name!r}: {name} "
                                         f"{attr(node, name)!r} is not supported; use one of "
                                         f"{', '.join(allowed)}")

    def infer(self, node: Node):
        self.check(node)
        x = node.inputs[0]
        (scales_how, scales), (sizes_how, sizes) = (_given(node, i) for i in (2, 3))
        if scales_how == sizes_how == "absent":
            raise ShapeError(f"Resize node {node.name!r} needs scales or sizes")
        if scales_how == sizes_how == "constant":
            raise ShapeError(f"Resize node {node.name!r}: give scales or sizes, not both")
        if x.shape is None:
            return [(x.dtype, None)]
        target = sizes if sizes_how == "constant" else scales
        if "computed" in (scales_how, sizes_how):  # known when the graph runs
            return [(x.dtype, (None,) * len(x.shape))]
        if len(target) != len(x.shape):
            raise ShapeError(f"Resize node {node.name!r}: {len(target)} scales/sizes for input "
                             f"{fmt_shape(x.shape)}; give one per axis")
        if sizes_how == "constant":
            return [(x.dtype, tuple(int(s) for s in sizes))]
        return [(x.dtype, tuple(_scaled(d, float(s)) for d, s in zip(x.shape, scales)))]

    def plan(self, node: Node, shape: tuple, roi, scales, sizes) -> list[AxisResize]:
        """The resized axes and their weights, for an input of this (static) shape."""
        rank = len(shape)
        scales, sizes, roi = (None if a is None or np.size(a) == 0 else np.ravel(a)
                              for a in (scales, sizes, roi))
        if sizes is not None:
            out = [int(s) for s in sizes]
            factors = [o / d if isinstance(d, int) and d else 1.0 for o, d in zip(out, shape)]
        elif scales is not None:
            factors = [float(s) for s in scales]
            out = [_scaled(d, f) for d, f in zip(shape, factors)]
        else:
            raise ShapeError(f"Resize node {node.name!r} needs scales or sizes")
        transform = attr(node, "coordinate_transformation_mode")
        plan = []
        for axis in range(rank):
            window = None if roi is None else (float(roi[axis]), float(roi[axis + rank]))
            crops = transform == "tf_crop_and_resize" and window is not None and not (
                math.isclose(window[0], 0.0) and math.isclose(window[1], 1.0))
            if out[axis] == shape[axis] and math.isclose(factors[axis], 1.0) and not crops:
                continue  # this axis is left as it is
            if not isinstance(shape[axis], int):
                raise ShapeError(f"Resize node {node.name!r}: axis {axis} is resized, so it "
                                 "needs a static size here")
            weights, outside = axis_weights(node, shape[axis], out[axis], factors[axis], window)
            plan.append(AxisResize(axis, weights, outside))
        return plan

    def vjp(self, node: Node, grads):
        x, g = node.inputs[0], grads[0]
        given = [const_array(v, "input") if v is not None else None
                 for v in (node.inputs + [None] * 3)[1:4]]
        if any(v is not None and d is None for v, d in zip(node.inputs[1:4], given)):
            raise ShapeError(f"Resize node {node.name!r}: its gradient needs constant roi, "
                             "scales and sizes")
        if x.shape is None:
            raise ShapeError(f"Resize node {node.name!r}: its gradient needs the input's rank")
        plan = self.plan(node, x.shape, *given)
        if any(p.extrapolated is not None and p.extrapolated.any() for p in plan):
            g = Mul(g, node.graph.constant(inside_mask(plan, len(x.shape)).astype(x.dtype)))
        nearest = attr(node, "mode") == "nearest"
        for p in reversed(plan):  # the axes' maps commute; undo them last to first
            g = _scatter_back(g, p) if nearest else _along(g, p.weights.T.astype(x.dtype),
                                                           p.axis)
        rest = [None] * (len(node.inputs) - 1)
        roi = node.inputs[1] if len(node.inputs) > 1 else None
        if roi is not None and attr(node, "coordinate_transformation_mode") != \
                "tf_crop_and_resize":  # roi is read only by tf_crop_and_resize
            rest[0] = zeros_like(roi)
        return [g] + rest  # scales (and tf_crop_and_resize's roi) have no gradient rule

    def compute(self, node: Node, inputs):
        x = inputs[0]
        roi, scales, sizes = (list(inputs) + [None] * 3)[1:4]
        plan = self.plan(node, x.shape, roi, scales, sizes)
        y = x.astype(np.float64)
        for p in plan:
            y = np.moveaxis(np.tensordot(p.weights, y, axes=([1], [p.axis])), 0, p.axis)
        if any(p.extrapolated is not None for p in plan):
            y = np.where(inside_mask(plan, x.ndim), y, attr(node, "extrapolation_value"))
        if x.dtype.kind in "iu":
            y = np.clip(np.rint(y), np.iinfo(x.dtype).min, np.iinfo(x.dtype).max)
        return [y.astype(x.dtype)]


def _given(node: Node, index: int) -> tuple[str, np.ndarray | None]:
    """("absent" | "constant" | "computed", data) of an optional input; empty is absent."""
    v = node.inputs[index] if len(node.inputs) > index else None
    data = None if v is None else const_array(v, "input")
    if v is None or v.shape == (0,) or (data is not None and data.size == 0):
        return "absent", None
    return ("computed", None) if data is None else ("constant", np.ravel(data))


def _scaled(dim, scale: float):
    """floor(dim * scale); a symbolic dim stays when the scale is 1."""
    if isinstance(dim, int):
        return int(math.floor(dim * scale))
    return dim if scale == 1.0 else None


def inside_mask(plan: list[AxisResize], rank: int) -> np.ndarray:
    """True where no axis samples outside X (broadcastable to the output); elsewhere the
    output is extrapolation_value."""
    mask = np.ones((1,) * rank, bool)
    for p in plan:
        if p.extrapolated is not None:
            shape = [1] * rank
            shape[p.axis] = len(p.extrapolated)
            mask = mask & ~p.extrapolated.reshape(shape)
    return mask


# ---- the weights of one axis ------------------------------------------------------------------
def axis_weights(node: Node, n_in: int, n_out: int, scale: float,
                 roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(out, in) weights of one axis and its extrapolated outputs (tf_crop_and_resize): each
    output samples X at a source coordinate and mixes its neighbours (edge-clamped)."""
    x, outside = _source_coordinates(node, n_in, n_out, scale, roi)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)  # in (0, 1]: the pixel left of x is preferred
    coeffs = _coefficients(node, ratio)
    n = coeffs.shape[1]
    pad = math.ceil(n / 2)  # neighbours in edge-padded coordinates, as onnx's reference
    padded = x + pad
    p = np.floor(padded)
    frac = padded - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    index = (p + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if attr(node, "exclude_outside"):
        coeffs = np.where((index < 0) | (index >= n_in), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    weights = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], index.shape)
    np.add.at(weights, (rows, np.clip(index, 0, n_in - 1)), coeffs)
    if outside is not None:
        weights[outside] = 0.0
    return weights, outside


def _source_coordinates(node: Node, n_in: int, n_out: int, scale: float,
                        roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Where in X each output samples (coordinate_transformation_mode), and which outputs fall
    outside X for tf_crop_and_resize."""
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in  # the output length before flooring
    mode = attr(node, "coordinate_transformation_mode")
    if mode == "align_corners":
        return (np.zeros(n_out) if length == 1 else y * (n_in - 1) / (length - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "pytorch_half_pixel":
        return (np.full(n_out, -0.5) if length == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if roi is None:
        raise ShapeError(f"Resize node {node.name!r}: tf_crop_and_resize needs the roi input")
    start, end = roi
    x = np.full(n_out, (end - start) * (n_in - 1) / 2) if length == 1 else \
        y * (end - start) * (n_in - 1) / (length - 1)
    x = x + start * (n_in - 1)
    return x, (x < 0) | (x > n_in - 1)


def _coefficients(node: Node, ratio: np.ndarray) -> np.ndarray:
    """(out, taps) interpolation weights of the neighbours at each ratio in (0, 1]."""
    mode = attr(node, "mode")
    if mode == "linear":
        return np.stack([1 - ratio, ratio], axis=1)
    if mode == "cubic":
        a, r = attr(node, "cubic_coeff_a"), ratio
        s = 1 - r
        return np.stack([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                         ((a + 2) * r - (a + 3)) * r * r + 1,
                         ((a + 2) * s - (a + 3)) * s * s + 1,
                         ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a], axis=1)
    rounding = attr(node, "nearest_mode")
    right = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
             "floor": np.zeros(ratio.shape, bool), "ceil": np.ones(ratio.shape, bool)}[rounding]
    right = right | (ratio == 1.0)  # on a pixel: that pixel (the right neighbour)
    return np.stack([~right, right], axis=1).astype(np.float64)


# ---- gradient helpers -------------------------------------------------------------------------
def _along(v: Value, matrix: np.ndarray, axis: int) -> Value:
    """`matrix` (new, old) applied along `axis` of v: MatMul for the last two axes."""
    rank = v.rank
    m = v.graph.constant(matrix)
    if axis == rank - 2:
        return MatMul(m, v)
    if axis == rank - 1:
        return MatMul(v, v.graph.constant(np.ascontiguousarray(matrix.T)))
    letters = "abcdefghijklmnopqrstuvwxy"[:rank]
    out = letters[:axis] + "z" + letters[axis + 1:]
    return Einsum(m, v, equation=f"z{letters[axis]},{letters}->{out}")


def _scatter_back(g: Value, p: AxisResize) -> Value:
    """Nearest mode along one axis: each output copied one source pixel, so the source pixel
    gets the sum of its copies' gradients (ScatterElements, reduction add)."""
    rank, (n_out, n_in) = g.rank, p.weights.shape
    shape = [1] * rank
    shape[p.axis] = n_out
    source = np.argmax(p.weights, axis=1).astype(np.int64).reshape(shape)
    index = Expand(g.graph.constant(source), shape_of(g))
    return ScatterElements(_zeros(g, p.axis, n_in), index, g, axis=p.axis, reduction="add")


def _zeros(g: Value, axis: int, size: int) -> Value:
    """Zeros shaped like g but `size` long along `axis` (ConstantOfShape: no big constant)."""
    graph, dims = g.graph, g.shape
    if dims is not None and all(isinstance(d, int) for d in dims):
        target = graph.constant(np.array(dims[:axis] + (size,) + dims[axis + 1:], np.int64))
    else:
        parts = ([Shape(g, end=axis)] if axis else []) + [
            graph.constant(np.array([size], np.int64))] + (
            [Shape(g, start=axis + 1)] if axis + 1 < g.rank else [])
        target = Concat(*parts, axis=0) if len(parts) > 1 else parts[0]
    return ConstantOfShape(target, value=np.zeros(1, g.dtype))
