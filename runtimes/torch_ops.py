"""The op table of the torch runtime: ONNX op type -> `fn(node, *inputs) -> output(s)`.

Each function follows the ai.onnx semantics irkit's IR has (opset 13-17): broadcasting,
attribute defaults from the op's schema (`node.attr`), optional inputs passed as None. A
function returns one tensor or a list (one per node output; extra ones are dropped). Written
with differentiable torch ops, so torch autograd through a graph is an independent check of
irkit's VJP rules. Importing this module needs torch (irkit.runtimes.torch_runtime says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node
from irkit.ops.registry import attr, opdef_of

OpFn = Callable[..., Any]
TORCH_OPS: dict[str, OpFn] = {}

# ONNX TensorProto element types -> torch dtypes (strings and 4-bit types have none)
_T = onnx.TensorProto
TORCH_DTYPES: dict[int, torch.dtype] = {
    _T.FLOAT: torch.float32, _T.DOUBLE: torch.float64, _T.FLOAT16: torch.float16,
    _T.BFLOAT16: torch.bfloat16, _T.INT8: torch.int8, _T.INT16: torch.int16,
    _T.INT32: torch.int32, _T.INT64: torch.int64, _T.UINT8: torch.uint8, _T.UINT16: torch.uint16,
    _T.UINT32: torch.uint32, _T.UINT64: torch.uint64, _T.BOOL: torch.bool,
    _T.COMPLEX64: torch.complex64, _T.COMPLEX128: torch.complex128,
}


def torch_dtype(onnx_type: int, node: Node | None = None) -> torch.dtype:
    """The torch dtype of an ONNX element type (UnsupportedOpError naming the node if none)."""
    if onnx_type not in TORCH_DTYPES:
        where = f" (node {node.name!r})" if node is not None else ""
        name = onnx.TensorProto.DataType.Name(onnx_type) if onnx_type in \
            onnx.TensorProto.DataType.values() else str(onnx_type)
        raise UnsupportedOpError(f"ONNX type {name}{where} has no torch dtype; the torch runtime "
                                 "cannot run it, use onnxruntime")
    return TORCH_DTYPES[onnx_type]


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Decorator: register `fn` for each op type in `names`."""
    def register(fn: OpFn) -> OpFn:
        for name in names:
            TORCH_OPS[name] = fn
        return fn
    return register


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---- elementwise --------------------------------------------------------------------------------
def _unary(name: str, fn: Callable[[torch.Tensor, Node], torch.Tensor]) -> None:
    TORCH_OPS[name] = lambda node, x: fn(x, node)


for _name, _fn in {
    "Neg": lambda x, n: -x, "Exp": lambda x, n: torch.exp(x), "Log": lambda x, n: torch.log(x),
    "Sqrt": lambda x, n: torch.sqrt(x), "Reciprocal": lambda x, n: torch.reciprocal(x),
    "Sign": lambda x, n: torch.sign(x), "Abs": lambda x, n: torch.abs(x),
    "Floor": lambda x, n: torch.floor(x), "Ceil": lambda x, n: torch.ceil(x),
    "Round": lambda x, n: torch.round(x),  # halves to even, as ONNX
    "Relu": lambda x, n: torch.relu(x), "Sigmoid": lambda x, n: torch.sigmoid(x),
    "Tanh": lambda x, n: torch.tanh(x), "Softplus": lambda x, n: F.softplus(x),
    "Softsign": lambda x, n: x / (1 + torch.abs(x)), "Erf": lambda x, n: torch.erf(x),
    "Sin": lambda x, n: torch.sin(x), "Cos": lambda x, n: torch.cos(x),
    "Tan": lambda x, n: torch.tan(x), "Asin": lambda x, n: torch.asin(x),
    "Acos": lambda x, n: torch.acos(x), "Atan": lambda x, n: torch.atan(x),
    "Sinh": lambda x, n: torch.sinh(x), "Cosh": lambda x, n: torch.cosh(x),
    "Asinh": lambda x, n: torch.asinh(x), "Acosh": lambda x, n: torch.acosh(x),
    "Atanh": lambda x, n: torch.atanh(x), "Not": lambda x, n: torch.logical_not(x),
    "LeakyRelu": lambda x, n: F.leaky_relu(x, attr(n, "alpha")),
    "Elu": lambda x, n: F.elu(x, attr(n, "alpha")),
    "Celu": lambda x, n: F.celu(x, attr(n, "alpha")),
    "Selu": lambda x, n: attr(n, "gamma") * torch.where(x > 0, x, attr(n, "alpha") *
                                                       torch.expm1(x)),
    "HardSigmoid": lambda x, n: torch.clamp(attr(n, "alpha") * x + attr(n, "beta"), 0, 1),
    "HardSwish": lambda x, n: F.hardswish(x),  # x max(0, min(1, x / 6 + 1/2))
    "ThresholdedRelu": lambda x, n: torch.where(x > attr(n, "alpha"), x, torch.zeros_like(x)),
    "Identity": lambda x, n: x,
}.items():
    _unary(_name, _fn)


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not a.is_floating_point() and not a.is_complex():
        return torch.div(a, b, rounding_mode="trunc")  # ONNX integer Div truncates
    return a / b


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b).to(a.dtype)  # the result has the base's type


for _name, _fn in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": _pow,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "PRelu": lambda a, b: torch.where(a < 0, a * b, a),
}.items():
    TORCH_OPS[_name] = (lambda f: lambda node, a, b: f(a, b))(_fn)


@op("Where")
def _where(node, c, x, y):
    return torch.where(c, x, y)


@op("Cast")
def _cast(node, x):
    return x.to(torch_dtype(attr(node, "to"), node))  # float -> int truncates, as ONNX


@op("CastLike")
def _cast_like(node, x, like):
    return x.to(like.dtype)


@op("IsNaN")
def _isnan(node, x):
    return torch.isnan(x)


@op("IsInf")
def _isinf(node, x):
    up, down = attr(node, "detect_positive"), attr(node, "detect_negative")
    return torch.isinf(x) & (((x > 0) & bool(up)) | ((x < 0) & bool(down)))


@op("Sum")
def _sum(node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


@op("Mean")
def _mean(node, *xs):
    return _sum(node, *xs) / len(xs)


@op("Max", "Min")
def _extremum(node, *xs):
    # all inputs at once: ties share the gradient evenly, however many inputs tie
    stacked = torch.stack(torch.broadcast_tensors(*xs))
    return stacked.amax(0) if node.op_type == "Max" else stacked.amin(0)


@op("Clip")
def _clip(node, x, low=None, high=None):
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)  # min > max gives max, as ONNX


# ---- reductions ---------------------------------------------------------------------------------
def _reduce_axes(node: Node, x: torch.Tensor, axes_input: torch.Tensor | None) -> list[int] | None:
    """Sorted axes to reduce; [] for "none" (noop_with_empty_axes); None for all axes."""
    axes = _ints(axes_input) if axes_input is not None else node.attributes.get("axes")
    if not axes:
        return [] if node.attributes.get("noop_with_empty_axes", 0) else None
    return sorted({_axis(int(a), x.dim()) for a in axes})


def _reduction(fn: Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]) -> OpFn:
    def run(node, x, axes=None):
        dims = _reduce_axes(node, x, axes)
        if dims == []:
            return x
        dims = tuple(range(x.dim())) if dims is None else tuple(dims)
        keep = bool(attr(node, "keepdims"))
        if not dims:  # a 0-d input: nothing to reduce over
            return fn(x.reshape(1), (0,), False)
        return fn(x, dims, keep)
    return run


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keepdim=keep)
    return x


for _name, _fn in {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, d, keepdim=k),  # ties share the gradient
    "ReduceMin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, d, keepdim=k),
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}.items():
    TORCH_OPS[_name] = _reduction(_fn)


@op("CumSum")
def _cumsum(node, x, axis):
    dim = _axis(_ints(axis)[0], x.dim())
    if attr(node, "reverse"):
        x = torch.flip(x, (dim,))
    out = torch.cumsum(x, dim)
    if attr(node, "exclusive"):  # shift by one along dim, a zero first
        out = torch.cat([torch.zeros_like(out.narrow(dim, 0, 1)), out.narrow(
            dim, 0, out.shape[dim] - 1)], dim) if out.shape[dim] else out
    return torch.flip(out, (dim,)) if attr(node, "reverse") else out


# ---- matrix products and normalization --------------------------------------------------------
@op("MatMul")
def _matmul(node, a, b):
    return torch.matmul(a, b)


@op("Gemm")
def _gemm(node, a, b, c=None):
    a = a.transpose(0, 1) if attr(node, "transA") else a
    b = b.transpose(0, 1) if attr(node, "transB") else b
    y = a @ b
    alpha, beta = attr(node, "alpha"), attr(node, "beta")
    y = y if alpha == 1.0 else alpha * y
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return y


@op("Softmax")
def _softmax(node, x):
    return torch.softmax(x, attr(node, "axis"))


@op("LogSoftmax")
def _log_softmax(node, x):
    return torch.log_softmax(x, attr(node, "axis"))


@op("Dropout")
def _dropout(node, x, ratio=None, training_mode=None):
    p = 0.5 if ratio is None else float(ratio)
    if training_mode is None or not bool(training_mode) or p == 0.0:
        return [x, torch.ones(x.shape, dtype=torch.bool, device=x.device)]
    seed = node.attributes.get("seed")
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device).manual_seed(int(seed))
    keep = torch.rand(x.shape, generator=gen, device=x.device) >= p
    return [x * keep / (1.0 - p), keep]


def _stats_dtype(x: torch.Tensor, stash: torch.dtype) -> torch.dtype:
    """Normalization statistics are computed in the wider of x's type and the stash type."""
    return torch.promote_types(x.dtype, stash)


@op("LayerNormalization")
def _layer_norm(node, x, scale, bias=None):
    stash = torch_dtype(attr(node, "stash_type"), node)
    dims = tuple(range(_axis(attr(node, "axis"), x.dim()), x.dim()))
    xs = x.to(_stats_dtype(x, stash))
    mean = xs.mean(dims, keepdim=True)
    centered = xs - mean
    inv_std = torch.rsqrt((centered * centered).mean(dims, keepdim=True) + attr(node, "epsilon"))
    y = (centered * inv_std).to(x.dtype) * scale
    y = y if bias is None else y + bias
    return [y, mean.to(stash), inv_std.to(stash)]


@op("BatchNormalization")
def _batch_norm(node, x, scale, bias, mean, var):
    per_channel = (-1,) + (1,) * (x.dim() - 2)
    eps, m = attr(node, "epsilon"), attr(node, "momentum")
    if not attr(node, "training_mode"):
        inv_std = torch.rsqrt(var + eps)
        return (x - mean.reshape(per_channel)) * (inv_std * scale).reshape(per_channel) + \
            bias.reshape(per_channel)
    dims = (0,) + tuple(range(2, x.dim()))
    batch_mean = x.mean(dims)
    batch_var = x.var(dims, unbiased=False)  # biased, for y and the running variance alike
    y = (x - batch_mean.reshape(per_channel)) * torch.rsqrt(batch_var + eps).reshape(per_channel)
    y = y * scale.reshape(per_channel) + bias.reshape(per_channel)
    return [y, mean * m + batch_mean * (1 - m), var * m + batch_var * (1 - m)]


@op("ArgMax", "ArgMin")
def _arg_extremum(node, x):
    dim, keep = _axis(attr(node, "axis"), x.dim()), bool(attr(node, "keepdims"))
    fn = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    if attr(node, "select_last_index"):  # the last of tied values: search the flipped axis
        return x.shape[dim] - 1 - fn(torch.flip(x, (dim,)), dim, keepdim=keep)
    return fn(x, dim, keepdim=keep)  # the first of tied values


# ---- losses -------------------------------------------------------------------------------------
def _nll(node: Node, logp: torch.Tensor, labels: torch.Tensor,
         weight: torch.Tensor | None) -> torch.Tensor:
    """loss_n = -w[label_n] logp[n, label_n] (0 where label_n is ignore_index), reduced."""
    ignore = attr(node, "ignore_index")
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    coeff = torch.ones_like(picked) if weight is None else weight[safe]
    coeff = torch.where(valid, coeff, torch.zeros_like(coeff))
    loss = -picked * coeff
    reduction = attr(node, "reduction")
    if reduction == "mean":
        return loss.sum() / coeff.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ShapeError(f"{node.op_type} node {node.name!r}: unknown reduction {reduction!r}; "
                     "use none, sum or mean")


@op("NegativeLogLikelihoodLoss")
def _nll_loss(node, logp, labels, weight=None):
    return _nll(node, logp, labels.long(), weight)


@op("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(node, scores, labels, weight=None):
    logp = torch.log_softmax(scores, 1)
    return [_nll(node, logp, labels.long(), weight), logp]


# ---- shapes -------------------------------------------------------------------------------------
@op("Reshape")
def _reshape(node, x, shape):
    dims = _ints(shape)
    if not attr(node, "allowzero"):  # 0 copies the input's dim
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(node, x):
    axis = _axis(attr(node, "axis"), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def _transpose(node, x):
    perm = node.attributes.get("perm")
    return x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1)))


@op("Shape")
def _shape(node, x):
    dims = list(x.shape)[slice(attr(node, "start"), attr(node, "end"))]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@op("Size")
def _size(node, x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Unsqueeze")
def _unsqueeze(node, x, axes):
    axes = _ints(axes)
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Squeeze")
def _squeeze(node, x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in _ints(axes)))


@op("Expand")
def _expand(node, x, shape):
    # bidirectional broadcast: the target may have 1s where x is larger, and a lower rank
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))


@op("Concat")
def _concat(node, *xs):
    return torch.cat(xs, attr(node, "axis"))


@op("Split")
def _split(node, x, split=None):
    dim, n = _axis(attr(node, "axis"), x.dim()), len(node.outputs)
    sizes = _ints(split) if split is not None else [x.shape[dim] // n] * n
    return list(torch.split(x, sizes, dim))


def _slice_range(dim: int, start: int, end: int, step: int) -> range:
    """ONNX Slice's clamping, which differs from Python's for negative steps."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


@op("Slice")
def _slice(node, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        if st == 0:
            raise ShapeError(f"Slice node {node.name!r}: a step of 0 is invalid")
        dim = _axis(a, x.dim())
        r = _slice_range(x.shape[dim], s, e, st)
        if st > 0:
            index = [slice(None)] * dim + [slice(r.start, max(r.stop, r.start), st)]
            x = x[tuple(index)]
        else:
            x = x.index_select(dim, torch.arange(r.start, r.stop, st, device=x.device))
    return x


def _pad_index(size: int, begin: int, end: int, mode: str, device) -> torch.Tensor:
    """Source positions of one padded (or cropped) axis for the modes edge, reflect, wrap."""
    i = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return i.clamp(0, size - 1)
    if mode == "wrap":
        return i.remainder(size)
    period = 2 * (size - 1)  # reflect, without repeating the edge
    if period == 0:
        return torch.zeros_like(i)
    i = i.abs().remainder(period)
    return torch.where(i >= size, period - i, i)


@op("Pad")
def _pad(node, x, pads, value=None, axes=None):
    pads, mode, r = _ints(pads), attr(node, "mode"), x.dim()
    dims = [_axis(a, r) for a in _ints(axes)] if axes is not None else list(range(r))
    begin, end = dict(zip(dims, pads[:len(dims)])), dict(zip(dims, pads[len(dims):]))
    if mode == "constant":
        flat = [p for d in reversed(range(r)) for p in (begin.get(d, 0), end.get(d, 0))]
        if value is None or (not value.requires_grad and not value.numel()):
            return F.pad(x, flat)
        if not value.requires_grad:
            return F.pad(x, flat, value=value.reshape(-1)[0].item())
        # a differentiable padding value: zeros, plus value where the padding is
        mask = F.pad(torch.zeros_like(x), flat, value=1.0)
        return F.pad(x, flat) + value.reshape(()) * mask
    if mode not in ("edge", "reflect", "wrap"):
        raise UnsupportedOpError(f"Pad node {node.name!r}: unknown mode {mode!r}")
    for d in dims:
        if begin[d] or end[d]:
            x = x.index_select(d, _pad_index(x.shape[d], begin[d], end[d], mode, x.device))
    return x


@op("Tile")
def _tile(node, x, repeats):
    return x.repeat(*_ints(repeats))


def _positive(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.long()
    return torch.where(index < 0, index + size, index)


@op("Gather")
def _gather(node, x, indices):
    dim = _axis(attr(node, "axis"), x.dim())
    flat = _positive(indices, x.shape[dim]).reshape(-1)
    out = x.index_select(dim, flat)
    return out.reshape(x.shape[:dim] + indices.shape + x.shape[dim + 1:])


@op("GatherElements")
def _gather_elements(node, x, indices):
    dim = _axis(attr(node, "axis"), x.dim())
    return torch.gather(x, dim, _positive(indices, x.shape[dim]))


_SCATTER_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


@op("ScatterElements")
def _scatter_elements(node, data, indices, updates):
    dim = _axis(attr(node, "axis"), data.dim())
    index, reduction = _positive(indices, data.shape[dim]), attr(node, "reduction")
    if reduction == "none":
        return torch.scatter(data, dim, index, updates)
    if reduction == "add":
        return torch.scatter_add(data, dim, index, updates)
    if reduction in _SCATTER_REDUCE:
        return torch.scatter_reduce(data, dim, index, updates, _SCATTER_REDUCE[reduction])
    raise UnsupportedOpError(f"ScatterElements node {node.name!r}: unknown reduction "
                             f"{reduction!r}")


def constant_array(node: Node) -> np.ndarray:
    """The value of a Constant node, from whichever value* attribute it has."""
    a = node.attributes
    for key, dtype in (("value", None), ("value_float", np.float32),
                       ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise UnsupportedOpError(f"Constant node {node.name!r}: only value, value_float(s) and "
                             "value_int(s) are supported")


def to_tensor(array: np.ndarray, device=None) -> torch.Tensor:
    """A torch copy of a numpy array (a copy: initializer data is shared read-only)."""
    return torch.from_numpy(np.array(array, copy=True)).to(device)


@op("Constant")
def _constant(node):
    return to_tensor(constant_array(node))


@op("ConstantOfShape")
def _constant_of_shape(node, shape):
    value = node.attributes.get("value")
    fill = to_tensor(np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1))
    return torch.full(_ints(shape), fill.item(), dtype=fill.dtype, device=shape.device)


@op("OneHot")
def _one_hot(node, indices, depth, values):
    depth = int(depth.reshape(-1)[0].item())
    index = _positive(indices, depth)  # out-of-range indices give an all-`off` row
    hot = index.unsqueeze(-1) == torch.arange(depth, device=index.device)
    out = torch.where(hot, values[1], values[0])
    return out.movedim(-1, _axis(attr(node, "axis"), index.dim() + 1))


# ---- convolution and pooling ------------------------------------------------------------------
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
    if "output_shape" in node.attributes or node.attributes.get("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):
        raise UnsupportedOpError(f"ConvTranspose node {node.name!r}: output_shape and auto_pad "
                                 "SAME are not supported; give pads and output_padding")
    win = _Window(node, x, _kernel(node, w))
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


# ---- indexing, Einsum, InstanceNormalization, Resize, Range -------------------------------
@op("Einsum")
def _einsum(node, *xs):
    from irkit.ops.nn import einsum_spec
    spec = einsum_spec(attr(node, "equation"), [tuple(x.shape) for x in xs],
                       f"Einsum node {node.name!r}")
    return torch.einsum(spec.equation, *xs)


@op("LRN")
def _lrn(node, x):
    size = attr(node, "size")
    widths = [0, 0] * (x.dim() - 2) + [(size - 1) // 2, size // 2]  # F.pad: last axis first
    square = F.pad(x * x, widths)
    square_sum = sum(square.narrow(1, k, x.shape[1]) for k in range(size))
    return x / (attr(node, "bias") + attr(node, "alpha") / size * square_sum) ** attr(node, "beta")


@op("InstanceNormalization")
def _instance_normalization(node, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=attr(node, "epsilon"))


def _nd_index(data, indices, batch_dims: int) -> tuple:
    """The advanced index of GatherND/ScatterND: batch aranges, then the index tuples."""
    index, rank = indices.long(), indices.dim()
    where = []
    for a in range(batch_dims):
        shape = [1] * (rank - 1)
        shape[a] = index.shape[a]
        where.append(torch.arange(index.shape[a], device=index.device).reshape(shape))
    where += [_positive(index[..., j], data.shape[batch_dims + j])
              for j in range(index.shape[-1])]
    return tuple(where)


@op("GatherND")
def _gather_nd(node, data, indices):
    return data[_nd_index(data, indices, attr(node, "batch_dims"))]


@op("ScatterND")
def _scatter_nd(node, data, indices, updates):
    where, reduction = _nd_index(data, indices, 0), attr(node, "reduction")
    if reduction in ("none", "add"):
        return data.index_put(where, updates, accumulate=reduction == "add")
    raise UnsupportedOpError(f"ScatterND node {node.name!r}: the torch runtime runs reduction "
                             f"none and add, not {reduction!r}")


@op("TopK")
def _top_k(node, x, k):
    dim = _axis(attr(node, "axis"), x.dim())
    # a stable sort keeps equal values in index order, as ONNX asks
    values, index = torch.sort(x, dim=dim, descending=bool(attr(node, "largest")), stable=True)
    n = _ints(k)[0]
    return [values.narrow(dim, 0, n), index.narrow(dim, 0, n)]


@op("Trilu")
def _trilu(node, x, k=None):
    k = 0 if k is None else _ints(k)[0]
    return torch.triu(x, k) if attr(node, "upper") else torch.tril(x, k)


@op("Range")
def _range(node, start, limit, delta):
    # ONNX's definition, start + i * delta, so that start and delta have gradients
    count = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
    steps = torch.arange(count, dtype=start.dtype, device=start.device)
    return start.reshape(()) + steps * delta.reshape(())


@op("Resize")
def _resize(node, x, roi=None, scales=None, sizes=None):
    # irkit's per-axis weights (onnx's rules), applied with torch ops
    from irkit.ops.resize import inside_mask
    given = [None if t is None else t.detach().cpu().numpy() for t in (roi, scales, sizes)]
    plan = opdef_of(node).plan(node, tuple(x.shape), *given)
    y = x
    for p in plan:
        w = torch.as_tensor(p.weights, dtype=x.dtype, device=x.device)
        y = torch.tensordot(w, y, dims=([1], [p.axis])).movedim(0, p.axis)
    if any(p.extrapolated is not None for p in plan):
        keep = torch.as_tensor(inside_mask(plan, x.dim()), device=x.device)
        y = torch.where(keep, y, attr(node, "extrapolation_value"))
    return y
