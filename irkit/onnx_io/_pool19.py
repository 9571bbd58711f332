"""AveragePool with `dilations` (opset 19) in opset-17 spelling, for `downgrade_to_opset_17`.

Opset 17's AveragePool has no dilations, but an average over dilated windows is a sum over
them divided by how many taps each window counts:

    y = Conv(Pad(x), ones (C, 1, k1, ..., kn), group=C, strides, dilations) / count

Pad adds the pads, and at the end as far as ceil_mode's last windows reach (zeros, which add
nothing to a sum); `count` is a constant (1, 1, o1, ..., on): per output, the taps that fall
inside x (count_include_pad=0) or inside x and its pads (count_include_pad=1), never the
ceil overhang. The channels and spatial sizes must be known at import; the batch may be
symbolic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from irkit.errors import UnsupportedOpError, printable


def dilated_average_pool(rewrite: Any, n: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Pad, Conv and Div nodes computing the dilated AveragePool `n` (see the module)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    label = f"AveragePool node {printable(n.name or n.output[0])}"
    shape = rewrite.shapes.get(n.input[0])
    if shape is None or len(shape) < 3 or None in shape[1:]:
        raise UnsupportedOpError(f"{label}: dilations (opset 19) need the channels and spatial "
                                 f"sizes of input {printable(n.input[0])} known at import "
                                 f"(shape {shape}); give them")
    spatial, channels, kernel = list(shape[2:]), shape[1], list(attrs["kernel_shape"])
    strides, dilations = list(attrs.get("strides", [1] * len(kernel))), list(attrs["dilations"])
    begin, end = _pads(attrs, spatial, kernel, strides, dilations)
    out = [_out_size(size, b, e, k, s, d, bool(attrs.get("ceil_mode", 0)))
           for size, b, e, k, s, d in zip(spatial, begin, end, kernel, strides, dilations)]
    reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out, strides, kernel, dilations)]
    wide = [max(e, r - size - b) for e, r, size, b in zip(end, reach, spatial, begin)]
    dtype = helper.tensor_dtype_to_np_dtype(rewrite.elem_type(n.input[0]))
    count = _counts(spatial, begin, end, out, kernel, strides, dilations,
                    bool(attrs.get("count_include_pad", 0)))
    if (count == 0).any():
        raise UnsupportedOpError(f"{label}: a dilated window holds no tap of the input; "
                                 "use smaller pads")
    base = n.name or n.output[0]
    names = {k: rewrite.fresh(f"{base}_{k}") for k in ("pads", "ones", "count", "padded",
                                                         "sum")}
    rewrite.add_const(names["pads"], np.array([0, 0, *begin, 0, 0, *wide], np.int64))
    rewrite.add_const(names["ones"], np.ones((channels, 1, *kernel), dtype))
    rewrite.add_const(names["count"], count.astype(dtype).reshape((1, 1, *out)))
    nodes = [
        helper.make_node("Pad", [n.input[0], names["pads"]], [names["padded"]],
                         name=rewrite.fresh(f"{base}/Pad")),
        helper.make_node("Conv", [names["padded"], names["ones"]], [names["sum"]],
                         name=rewrite.fresh(f"{base}/Conv"), group=channels,
                         kernel_shape=kernel, strides=strides, dilations=dilations),
        helper.make_node("Div", [names["sum"], names["count"]], [n.output[0]],
                         name=n.name or rewrite.fresh(f"{base}/Div"))]
    for node in nodes:
        rewrite.producers[node.output[0]] = node
    return nodes


def _pads(attrs: dict, spatial: list[int], kernel: list[int], strides: list[int],
          dilations: list[int]) -> tuple[list[int], list[int]]:
    """Begin and end pads: explicit, or those auto_pad SAME_UPPER / SAME_LOWER / VALID set."""
    rank = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    return pads[:rank], pads[rank:]


def _out_size(size: int, begin: int, end: int, k: int, s: int, d: int, ceil: bool) -> int:
    """The windows along one axis (irkit's pooling rule: a ceil window starting beyond the
    input and the begin pad is dropped)."""
    span = size + begin + end - ((k - 1) * d + 1)
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= size + begin else out


def _counts(spatial: list[int], begin: list[int], end: list[int], out: list[int],
            kernel: list[int], strides: list[int], dilations: list[int],
            include_pad: bool) -> np.ndarray:
    """Taps per window that count toward the divisor, as an array of the output's shape."""
    per_axis = []
    for size, b, e, o, k, s, d in zip(spatial, begin, end, out, kernel, strides, dilations):
        low, high = (0, size + b + e) if include_pad else (b, b + size)
        taps = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d  # padded coordinates
        per_axis.append(((taps >= low) & (taps < high)).sum(axis=1))
    count = np.ones(out, np.int64)
    for axis, c in enumerate(per_axis):
        count = count * c.reshape([-1 if i == axis else 1 for i in range(len(out))])
    return count

