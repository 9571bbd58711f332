"""Export-side: a ceil_mode pool whose last window irkit drops, said the way opset 17 says it.

irkit's pools drop a ceil_mode window that would start beyond the input and its begin pad, as
onnxruntime does at every opset and opset 22 specifies; onnx's opset-17 shape inference (the
export checker) keeps it, so the file would contradict itself. Along an axis where that
window is dropped, the windows
left are exactly the floor-mode ones, so a node whose every axis drops it, or has no partial
window at all, is written with ceil_mode=0: the same windows, the same values (no window of
floor mode reaches beyond the pads, so AveragePool's divisors agree too). A node where some
axes keep a partial window and others drop one has no opset-17 spelling: a one-line error.
"""

from __future__ import annotations

import onnx
from onnx import helper

from irkit.errors import UnsupportedOpError, printable


def spell_ceil_pools(model: onnx.ModelProto, shapes: dict[str, tuple | None]) -> None:
    """Rewrite, in place, the ceil_mode pools of `model` as described above; `shapes`: the
    shape of every value name (irkit's IR; a pool with symbolic spatial sizes stays)."""
    for n in model.graph.node:
        if n.op_type not in ("MaxPool", "AveragePool") or n.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        shape = shapes.get(n.input[0])
        if not attrs.get("ceil_mode") or attrs.get("auto_pad", b"NOTSET") not in (
                b"NOTSET", "NOTSET") or shape is None or len(shape) < 3 \
                or not all(isinstance(d, int) for d in shape[2:]):
            continue
        floors = [_floor_is_exact(size, i, attrs) for i, size in enumerate(shape[2:])]
        if True not in floors:
            continue  # no axis drops a window: opset 17's ceil_mode says the same
        if False in floors:
            raise UnsupportedOpError(
                f"{n.op_type} node {printable(n.name or n.output[0])}: ceil_mode drops the "
                "last window (it would start in the end pad) along some axes but keeps a "
                "partial one along others; opset 17 cannot say that; change the pads")
        for a in n.attribute:
            if a.name == "ceil_mode":
                a.i = 0


def _floor_is_exact(size: int, i: int, attrs: dict) -> bool | None:
    """Along spatial axis i: True where the dropped ceil window leaves the floor windows,
    None where ceil and floor agree with nothing dropped, False where ceil keeps a partial
    window (only ceil_mode=1 says that)."""
    kernel = attrs["kernel_shape"]
    rank = len(kernel)
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    stride = list(attrs.get("strides", [1] * rank))[i]
    dilation = list(attrs.get("dilations", [1] * rank))[i]
    span = size + pads[i] + pads[rank + i] - ((kernel[i] - 1) * dilation + 1)
    if span % stride == 0:
        return None
    last_start = (-(-span // stride)) * stride
    return last_start >= size + pads[i]
