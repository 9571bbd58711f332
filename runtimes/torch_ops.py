"""The op table of the torch runtime: ONNX op type -> `fn(node, *inputs) -> output(s)`.

Each function follows the ai.onnx semantics irkit's IR has (opset 13-17): broadcasting,
attribute defaults from the op's schema (`node.attr`), optional inputs passed as None. A
function returns one tensor or a list (one per node output; extra ones are dropped). Written
with differentiable torch ops, so torch autograd through a graph is an independent check of
irkit's VJP rules. Importing this module needs torch (irkit.runtimes.torch_runtime says so);
it also registers the convolution and pooling ops of `torch_conv_ops` and the shape, index
and constant ops of `torch_shape_ops`; the table itself is in `torch_op_table`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from irkit.runtimes import (
    torch_conv_ops,  # noqa: F401 (registers the conv and pooling ops)
    torch_shape_ops,  # noqa: F401 (registers the shape and index ops)
)
from irkit.runtimes.torch_op_table import (  # noqa: F401 (TORCH_OPS is this module's table)
    TORCH_OPS,
    OpFn,
    ints_of,
    op,
    positive_axis,
    torch_dtype,
)

from irkit.errors import ShapeError
from irkit.ir import Node
from irkit.ops.registry import attr, opdef_of


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
    axes = ints_of(axes_input) if axes_input is not None else node.attributes.get("axes")
    if not axes:
        return [] if node.attributes.get("noop_with_empty_axes", 0) else None
    return sorted({positive_axis(int(a), x.dim()) for a in axes})


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
    dim = positive_axis(ints_of(axis)[0], x.dim())
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
    dims = tuple(range(positive_axis(attr(node, "axis"), x.dim()), x.dim()))
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
    dim, keep = positive_axis(attr(node, "axis"), x.dim()), bool(attr(node, "keepdims"))
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


# ---- Einsum, LRN, InstanceNormalization, Resize ----------------------------------------
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
