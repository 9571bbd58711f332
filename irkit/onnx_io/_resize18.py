"""Resize's opset-18 attributes in opset-17 spelling, for `downgrade_to_opset_17`.

1. `axes`: roi, scales and sizes given for the listed axes only become full-rank inputs
   (roi 0..1, scale 1 and the input's own dim on the other axes): constants where they are
   known at import, else a ScatterElements into the full-rank default.
2. `keep_aspect_ratio_policy` not_larger / not_smaller: one scale s (the min / max of
   sizes / dims over the listed axes) and output dims round(s * dim) on those axes. Opset 17
   spells that as scales [s on those axes, 1 elsewhere] when floor(s * dim), what opset 17
   makes of a scale, equals round(s * dim). When it is one less, the input is first padded
   with its edge values (what Resize reads beyond the border) so that the floored dims reach
   the rounded ones, and the output sliced to them: the same samples wherever the sampled
   coordinate does not depend on the input's length (half_pixel, asymmetric; pytorch_half_pixel
   for outputs longer than 1). The sizes and the resized dims must be known at import.
   Otherwise, and for a policy irkit cannot resolve, a one-line UnsupportedOpError.
3. `antialias=0` and the policy `stretch` are the opset-17 behaviour: dropped.
4. `antialias=1` and coordinate_transformation_mode half_pixel_symmetric (19), filters opset
   17's Resize lacks: the linear map they are, as MatMuls by constant weights
   (`irkit.onnx_io._resize_matmul`).

`rewrite` is the `_OpsetRewriter` of the model (constants, folding, shapes, fresh names).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper

from irkit.errors import UnsupportedOpError, printable
from irkit.onnx_io._resize_matmul import resize_as_matmuls


def resize_to_opset_17(rewrite: Any, n: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The nodes that replace `n`: those computing its full-rank inputs, then `n` rewritten in
    place, or the MatMuls of case 4 (see the module)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    policy = _text(attrs.get("keep_aspect_ratio_policy", b"stretch"))
    drop = {"axes", "keep_aspect_ratio_policy"} | ({"antialias"} if not attrs.get(
        "antialias", 0) else set())
    as_matrices = bool(attrs.get("antialias", 0)) or _text(attrs.get(
        "coordinate_transformation_mode", b"")) == "half_pixel_symmetric"
    if not drop & set(attrs) and not as_matrices:
        return [n]
    label = f"Resize node {printable(n.name or n.output[0])}"
    rank = _rank(rewrite, n, label) if "axes" in attrs or policy != "stretch" \
        or as_matrices else 0
    axes = [int(a) % rank for a in attrs["axes"]] if "axes" in attrs else list(range(rank))
    keep = [a for a in n.attribute if a.name not in drop]
    del n.attribute[:]
    n.attribute.extend(keep)
    while len(n.input) < 4:
        n.input.append("")
    before: list[onnx.NodeProto] = []
    if "axes" in attrs and axes != list(range(rank)):
        for index in (1, 2, 3):
            if n.input[index] and not _empty(rewrite, n.input[index]):
                before += _full_rank(rewrite, n, index, axes, rank)
    after: list[onnx.NodeProto] = []
    if policy in ("not_larger", "not_smaller"):
        after = _policy_as_scales(rewrite, n, axes, rank, policy, label, as_matrices, before)
    elif policy != "stretch":
        raise UnsupportedOpError(f"{label}: keep_aspect_ratio_policy {policy!r} is not one of "
                                 "stretch, not_larger, not_smaller")
    while n.input and not n.input[-1]:
        n.input.pop()
    return [*before, *(resize_as_matmuls(rewrite, n, label) if as_matrices else [n]), *after]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rank(rewrite: Any, n: onnx.NodeProto, label: str) -> int:
    shape = rewrite.shapes.get(n.input[0])
    if shape is None:
        raise UnsupportedOpError(f"{label}: its axes / keep_aspect_ratio_policy (opset 18) need "
                                 f"the rank of input {printable(n.input[0])}; give its shape")
    return len(shape)


def _empty(rewrite: Any, name: str) -> bool:
    value = rewrite.fold(name)
    return value is not None and np.size(value) == 0


def _full_rank(rewrite: Any, n: onnx.NodeProto, index: int, axes: list[int],
               rank: int) -> list[onnx.NodeProto]:
    """Input `index` (1 roi, 2 scales, 3 sizes) of the listed axes made full-rank."""
    given = n.input[index]
    dtype = helper.tensor_dtype_to_np_dtype(rewrite.elem_type(given))
    where = np.array(axes + [a + rank for a in axes] if index == 1 else axes, np.int64)
    shape = rewrite.shapes.get(n.input[0])
    if index == 1:
        default = np.array([0] * rank + [1] * rank, dtype)
    elif index == 2:
        default = np.ones(rank, dtype)
    else:
        default = np.array(shape, dtype=object) if shape is not None else None
    value = rewrite.fold(given)
    if value is not None and default is not None and None not in list(default):
        full = default.astype(dtype)
        full[where] = np.ravel(value)
        rewrite.add_input(n, index, full)
        return []
    nodes = []
    if index == 3:  # the input's runtime shape, then the listed dims written over it
        base = rewrite.fresh(f"{given}_input_shape")
        nodes.append(helper.make_node("Shape", [n.input[0]], [base],
                                      name=rewrite.fresh(f"{n.name or 'Resize'}_shape")))
    else:
        base = rewrite.fresh(f"{given}_default")
        rewrite.add_const(base, default)
    index_name = rewrite.fresh(f"{given}_axes")
    rewrite.add_const(index_name, where)
    full_name = rewrite.fresh(f"{given}_all_axes")
    nodes.append(helper.make_node("ScatterElements", [base, index_name, given], [full_name],
                                  name=rewrite.fresh(f"{n.name or 'Resize'}_all_axes")))
    for node in nodes:
        rewrite.producers[node.output[0]] = node
    n.input[index] = full_name
    return nodes


def _policy_as_scales(rewrite: Any, n: onnx.NodeProto, axes: list[int], rank: int,
                      policy: str, label: str, as_matrices: bool,
                      before: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Case 2: the sizes input replaced by the equivalent scales (the edge Pad appended to
    `before`, the Slice returned, where floor falls short of round), or a refusal."""
    sizes = rewrite.fold(n.input[3]) if n.input[3] else None
    shape = rewrite.shapes.get(n.input[0])
    dims = [shape[a] for a in axes] if shape is not None else [None]
    if sizes is None or None in dims:
        raise UnsupportedOpError(f"{label}: keep_aspect_ratio_policy {policy!r} (opset 18) "
                                 "needs sizes and the resized dims known at import; give "
                                 "scales or sizes for every axis instead")
    sizes = np.ravel(sizes)
    ratios = [float(sizes[a]) / shape[a] for a in axes]
    scale = np.float32(min(ratios) if policy == "not_larger" else max(ratios))
    wanted = [int(float(scale) * d + 0.5) for d in dims]  # ONNX rounds half up here
    floors = [math.floor(float(scale) * d) for d in dims]
    mode = _text(next((helper.get_attribute_value(a) for a in n.attribute
                       if a.name == "coordinate_transformation_mode"), b"half_pixel"))
    reach = mode in ("half_pixel", "asymmetric") or (mode == "pytorch_half_pixel"
                                                      and min(wanted) > 1)
    if wanted != floors and (as_matrices or not reach):
        raise UnsupportedOpError(f"{label}: keep_aspect_ratio_policy {policy!r} gives dims "
                                 f"{wanted} (scale {float(scale):g} rounded), which opset-17 "
                                 f"scales (floored: {floors}) cannot reach in mode {mode!r}; "
                                 "give scales or sizes for every axis instead")
    scales = np.ones(rank, np.float32)
    scales[axes] = scale
    rewrite.add_input(n, 2, scales)
    n.input[3] = ""
    return _edge_padded(rewrite, n, axes, rank, float(scale), wanted, before) \
        if wanted != floors else []


def _edge_padded(rewrite: Any, n: onnx.NodeProto, axes: list[int], rank: int, scale: float,
                 wanted: list[int], before: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Resize `n` reading its input padded at the end of `axes` with edge values, long enough
    that floor(scale * padded) >= wanted; returns the Slice to the wanted dims."""
    extra = math.ceil(1 / scale) + 1  # floor(scale * (d + extra)) >= floor(scale * d) + 1
    pads = np.zeros(2 * rank, np.int64)
    pads[[rank + a for a in axes]] = extra
    padded = rewrite.fresh(f"{n.input[0]}_edge_padded")
    pads_name = rewrite.fresh(f"{padded}_pads")
    rewrite.add_const(pads_name, pads)
    before.append(helper.make_node("Pad", [n.input[0], pads_name], [padded], mode="edge",
                                   name=rewrite.fresh(f"{n.name or 'Resize'}_edge_pad")))
    rewrite.producers[padded] = before[-1]
    n.input[0] = padded
    whole, n.output[0] = n.output[0], rewrite.fresh(f"{n.output[0]}_padded")
    rewrite.producers[n.output[0]] = n
    bounds = [rewrite.fresh(f"{whole}_{what}") for what in ("starts", "ends", "axes")]
    for name, value in zip(bounds, ([0] * len(axes), wanted, axes)):
        rewrite.add_const(name, np.array(value, np.int64))
    cut = helper.make_node("Slice", [n.output[0], *bounds], [whole],
                           name=rewrite.fresh(f"{n.name or 'Resize'}_cut"))
    rewrite.producers[whole] = cut
    return [cut]
