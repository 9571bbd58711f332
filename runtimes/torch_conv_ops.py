"""The torch runtime's convolution and pooling ops (Conv, ConvTranspose, MaxPool, AveragePool,
the global pools), with ONNX's pads, strides, dilations and ceil_mode; registered in
`TORCH_OPS` (irkit.runtimes.torch_op_table) when `irkit.runtimes.torch_ops` is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from irkit.runtimes.torch_op_table import op

from irkit.errors import UnsupportedOpError
from irkit.ir import Node
from irkit.ops.registry import attr, opdef_of

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class _Window:
    """Kernel, strides, dilations and begin/end pads of a window op on an input's sizes."""

    def __init__(self, node: Node, x: torch.Tensor, kernel: Sequence[int]) -> None:
        n = x.dim() - 2
        if n not in _CONV:
            raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: the torch runtime runs "
                                     f"1-3 spatial dims, not {n}")
        a = node.attributes
        self.kernel = [int(k) for k in kernel]
        self.strides = list(a.get("strides") or [1] * n)
        self.dilations = list(a.get("dilations") or [1] * n)
        self.spatial = list(x.shape[2:])
        pads = list(a.get("pads") or [0] * (2 * n))
        auto_pad = a.get("auto_pad", "NOTSET")
        if auto_pad == "VALID":
            pads = [0] * (2 * n)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            for i, size in enumerate(self.spatial):
                out = -(-size // self.strides[i])
                total = max((out - 1) * self.strides[i] + self.extent(i) - size, 0)
                small, large = total // 2, total - total // 2  # UPPER: the odd one at the end
                upper = auto_pad == "SAME_UPPER"
                pads[i], pads[n + i] = (small, large) if upper else (large, small)
        self.begin, self.end = pads[:n], pads[n:]

    def extent(self, i: int) -> int:
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def out_size(self, i: int, ceil: bool) -> int:
        span = self.spatial[i] + self.begin[i] + self.end[i] - self.extent(i)
        if not ceil:
            return span // self.strides[i] + 1
        out = -(-span // self.strides[i]) + 1
        # a last window that would start beyond the input and the begin pad is dropped
        return out - 1 if (out - 1) * self.strides[i] >= self.spatial[i] + self.begin[i] else out

    def torch_pads(self, ends: Sequence[int]) -> list[int]:
        """F.pad's argument for begin pads and the given end pads (negative ones crop)."""
        return [p for i in reversed(range(len(self.kernel))) for p in (self.begin[i], ends[i])]

    def exact_pads(self, ceil: bool = False) -> list[int]:
        """Pads after which the windows fit exactly: no partial window at the end."""
        out = [self.out_size(i, ceil) for i in range(len(self.kernel))]
        ends = [(o - 1) * s + self.extent(i) - size - b for i, (o, s, size, b) in enumerate(
            zip(out, self.strides, self.spatial, self.begin, strict=True))]
        return self.torch_pads(ends)


def _channel_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y + bias.reshape((-1,) + (1,) * (y.dim() - 2))


def _kernel(node: Node, w: torch.Tensor) -> list[int]:
    return list(node.attributes.get("kernel_shape") or w.shape[2:])


@op("Conv")
def _conv(node, x, w, bias=None):
    win = _Window(node, x, _kernel(node, w))
    x = F.pad(x, win.torch_pads(win.end))
    y = _CONV[x.dim() - 2](x, w, None, win.strides, 0, win.dilations, attr(node, "group"))
    return _channel_bias(y, bias)


@op("ConvTranspose")
def _conv_transpose(node, x, w, bias=None):
    win = _Window(node, x, _kernel(node, w))
    if "output_shape" in node.attributes or node.attributes.get("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):  # the pads that give that output, as the op works them out
        geo = opdef_of(node).geometry(node)
        win.begin, win.end = geo.begin, geo.end
    n = x.dim() - 2
    extra = list(node.attributes.get("output_padding") or [0] * n)
    # the full result, then crop the pads and add output_padding zeros at the end
    y = _CONV_T[n](x, w, None, win.strides, 0, 0, attr(node, "group"), win.dilations)
    crop = [p for i in reversed(range(n)) for p in (-win.begin[i], extra[i] - win.end[i])]
    return _channel_bias(F.pad(y, crop), bias)


def _pool_window(node: Node, x: torch.Tensor) -> _Window:
    if node.attributes.get("storage_order", 0) not in (0, 1):
        raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: storage_order must be 0/1")
    return _Window(node, x, attr(node, "kernel_shape"))


@op("MaxPool")
def _max_pool(node, x):
    win = _pool_window(node, x)
    xp = F.pad(x, win.exact_pads(bool(attr(node, "ceil_mode"))), value=-math.inf)
    y, where = _MAX_POOL[x.dim() - 2](xp, win.kernel, win.strides, 0, win.dilations,
                                      return_indices=True)
    return [y, _input_index(where, xp.shape[2:], win, x.shape, attr(node, "storage_order"))]


def _input_index(where: torch.Tensor, padded: Sequence[int], win: _Window, shape,
                 storage_order: int) -> torch.Tensor:
    """MaxPool's indices into the flattened input (N, C, d1, ...) from torch's indices into
    each padded (d1', ...) plane; storage_order 1 counts the spatial dims column-major."""
    coords, rest = [], where
    for i in reversed(range(len(padded))):
        coords.append(rest % padded[i] - win.begin[i])
        rest = rest // padded[i]
    coords.reverse()
    spatial = list(shape[2:])
    order = range(len(spatial)) if not storage_order else reversed(range(len(spatial)))
    flat = torch.zeros_like(where)
    for i in order:
        flat = flat * spatial[i] + coords[i]
    planes = torch.arange(shape[0] * shape[1], device=where.device).reshape(
        shape[0], shape[1], *([1] * len(spatial)))
    return flat + planes * math.prod(spatial)


@op("AveragePool")
def _average_pool(node, x):
    win = _pool_window(node, x)
    if any(d != 1 for d in win.dilations):
        raise UnsupportedOpError(f"AveragePool node {node.name!r}: dilations are not supported")
    ceil = bool(node.attributes.get("ceil_mode", 0))
    pads = win.exact_pads(ceil)
    n = x.dim() - 2
    pool = _AVG_POOL[n]
    sums = pool(F.pad(x, pads), win.kernel, win.strides, 0)
    # what each window averages over: the input, and the pads with count_include_pad, never
    # the part of a ceil_mode window beyond the pads
    ones = torch.ones([1, 1] + win.spatial, dtype=x.dtype, device=x.device)
    counted = F.pad(ones, win.torch_pads(win.end), value=float(attr(node, "count_include_pad")))
    beyond = [p - q for p, q in zip(pads, win.torch_pads(win.end), strict=True)]
    share = pool(F.pad(counted, [0 if i % 2 == 0 else p for i, p in enumerate(beyond)]),
                 win.kernel, win.strides, 0)
    return sums / share


@op("GlobalAveragePool")
def _global_average_pool(node, x):
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max_pool(node, x):
    return x.amax(tuple(range(2, x.dim())), keepdim=True)
