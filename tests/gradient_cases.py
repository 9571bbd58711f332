"""The gradient table: one row per op variant (inputs, attributes, the expression in torch).

`tests/test_ops_gradients.py` runs every check on every row. A row is
`case(op, *inputs, torch=..., name=..., **attributes)` where the inputs are
  X(shape, generator)   a float input that is differentiated,
  Labels(shape, high)   an int64 input (labels, indices), not differentiated,
(both may declare symbolic dims, `declared=("N", 4)`, to exercise the dynamic-shape rules)
  K(value)              a constant passed to the op as a numpy array (None: an absent input),
and `torch` is the same expression on the X and Labels inputs, in order. Generators keep
inputs inside the op's domain and away from kinks and ties, so central differences hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from irkit import ops

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch checks skip; the lambdas below are then never called
    torch = F = None

F32 = np.float32


def f32(value: float) -> float:
    """A float attribute as an exported model holds it (ONNX float attributes are float32)."""
    return float(np.float32(value))


# ---- input generators: (rng, shape) -> float64 array ----------------------------------------
def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(rng, shape):  # for kinks at 0 (Abs, Relu, ...) and divisors
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)


def distinct(rng, shape):  # all values at least 0.2 apart: no ties for Max, Min, argmax
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.2 + rng.uniform(0, 0.05)).reshape(shape)


def shifted(offset: float) -> Callable:
    """`distinct` values moved by `offset`: several such inputs never come within 0.02."""
    return lambda rng, shape: distinct(rng, shape) + offset


def constant(value: float) -> Callable:
    return lambda rng, shape: np.full(shape, value)


def unit_interval(rng, shape):  # inside (-1, 1): Asin, Acos, Atanh
    return rng.uniform(-0.8, 0.8, shape)


def above_one(rng, shape):  # Acosh
    return rng.uniform(1.2, 3.0, shape)


def wide(rng, shape):  # spans the flat and linear parts of hard activations, avoiding kinks
    return rng.choice([-1.0, 1.0], shape) * rng.choice([0.3, 1.1, 2.2, 3.6, 5.0], shape) + \
        rng.uniform(-0.05, 0.05, shape)


def erf_gelu(x):
    """Gelu as importers write it in opset-17 ops: x/2 (1 + erf(x / sqrt 2))."""
    return ops.Mul(ops.Mul(x, 0.5), ops.Add(ops.Erf(ops.Mul(x, float(1 / np.sqrt(2)))), 1.0))


def legacy_erf_gelu(x):
    """Gelu as torch's legacy exporter writes it: (x (erf(x / sqrt 2) + 1)) 0.5."""
    return ops.Mul(ops.Mul(x, ops.Add(ops.Erf(ops.Div(x, float(np.sqrt(2)))), 1.0)), 0.5)


# ---- the table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class X:
    """A float graph input that is differentiated."""

    shape: tuple[int, ...]
    gen: Callable = normal
    declared: tuple | None = None  # the graph input's shape if not `shape` (e.g. ("N", 4))


@dataclass(frozen=True)
class Labels:
    """An int64 graph input with values in [0, high) (class labels, indices); not differentiated."""

    shape: tuple[int, ...]
    high: int
    low: int = 0
    declared: tuple | None = None


@dataclass(frozen=True)
class K:
    """A constant passed to the op as a numpy array (becomes a graph constant)."""

    value: Any


@dataclass(frozen=True)
class Case:
    op: str
    args: tuple
    attrs: dict = field(default_factory=dict)
    torch: Callable | None = None    # the same expression on the X and Labels inputs, in order
    name: str = ""
    build: Callable | None = None    # (*args) -> output(s), when op(*args, **attrs) won't do
    ort_dtype: Any = np.float64      # float32 where onnxruntime's CPU kernels lack float64
    second_order: bool = True

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}" if self.name else self.op


def case(op: str, *args: Any, torch=None, name: str = "", build=None, ort_dtype=np.float64,
         second_order: bool = True, **attrs: Any) -> Case:
    return Case(op, args, attrs, torch, name, build, ort_dtype, second_order)


def xs(*shapes, gen=normal) -> tuple[X, ...]:
    return tuple(X(s, gen) for s in shapes)


DOUBLE = onnx.TensorProto.DOUBLE
LABELS = np.array([0, 1, 3, 1, 2, 0])  # with the ignored label 1, twice
LABELS_KDIM = np.array([[0, 3], [-100, 2], [1, 1], [3, -100], [2, 0], [0, 0]])


def torch_nll(logp, labels, weight=None, ignore=None, reduction="mean"):
    """ONNX NegativeLogLikelihoodLoss in torch, weights differentiable (F.nll_loss's are not)."""
    valid = torch.ones(labels.shape, dtype=torch.bool) if ignore is None else labels != ignore
    safe = torch.where(valid, labels, 0)
    picked = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    coeff = (torch.ones(labels.shape, dtype=logp.dtype) if weight is None else weight[safe])
    coeff = torch.where(valid, coeff, 0.0)
    loss = -picked * coeff
    if reduction == "mean":
        return loss.sum() / coeff.sum()
    return loss.sum() if reduction == "sum" else loss


def torch_batch_norm(x, scale, bias, mean, var, eps=None, momentum=None):
    """ONNX BatchNormalization in torch: inference mode, or training mode (momentum given)."""
    eps = f32(1e-5) if eps is None else eps
    axes = [0] + list(range(2, x.dim()))
    per_channel = (-1,) + (1,) * (x.dim() - 2)
    if momentum is not None:
        batch_mean, batch_var = x.mean(axes), x.var(axes, unbiased=False)
        m = f32(momentum)
        running = (None, None) if mean is None else (
            mean * m + batch_mean * (1 - m), var * m + batch_var * (1 - m))
        mean_, var_ = batch_mean, batch_var
    else:
        mean_, var_ = mean, var
    y = (x - mean_.reshape(per_channel)) / torch.sqrt(var_.reshape(per_channel) + eps)
    y = y * scale.reshape(per_channel) + bias.reshape(per_channel)
    return y if momentum is None else (y, *running)


SCATTER_INDEX = np.array([[2, 0, 1, 0], [0, 2, 0, 1]])  # no repeats in a column
SCATTER_ND_ROWS = np.array([[3], [1]])  # distinct rows: reduction none writes each once
ROI = np.array([0.0, 0.0, 0.2, -0.1, 1.0, 1.0, 0.9, 1.2])  # crops H, reaches outside W


def torch_batched_rows(x, index):
    """x[b, index[b, j, 0]]: GatherND with batch_dims 1 and one-element index tuples."""
    return x[torch.arange(x.shape[0])[:, None], index[..., 0]]
COND = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])

CASES: list[Case] = [
    # -- elementwise unary
    case("Neg", X((3, 4)), torch=lambda x: -x),
    case("Exp", X((3, 4)), torch=lambda x: torch.exp(x)),
    case("Log", X((3, 4), positive), torch=lambda x: torch.log(x)),
    case("Sqrt", X((3, 4), positive), torch=lambda x: torch.sqrt(x)),
    case("Reciprocal", X((3, 4), away_from_zero), torch=lambda x: 1 / x),
    case("Abs", X((3, 4), away_from_zero), torch=lambda x: x.abs()),
    case("Relu", X((3, 4), away_from_zero), torch=lambda x: F.relu(x)),
    case("LeakyRelu", X((3, 4), away_from_zero), torch=lambda x: F.leaky_relu(x, f32(0.01))),
    case("LeakyRelu", X((3, 4), away_from_zero), alpha=0.3, name="alpha",
         torch=lambda x: F.leaky_relu(x, f32(0.3))),
    case("Sigmoid", X((3, 4)), torch=lambda x: torch.sigmoid(x)),
    case("Tanh", X((3, 4)), torch=lambda x: torch.tanh(x)),
    case("Softplus", X((3, 4)), torch=lambda x: F.softplus(x), ort_dtype=F32),
    case("Softsign", X((3, 4), away_from_zero), torch=lambda x: F.softsign(x), ort_dtype=F32),
    case("Sin", X((3, 4)), torch=lambda x: torch.sin(x)),
    case("Cos", X((3, 4)), torch=lambda x: torch.cos(x)),
    case("Erf", X((3, 4)), torch=lambda x: torch.erf(x), ort_dtype=F32),
    case("Mul", X((3, 5), wide), name="erf-gelu", build=lambda x: erf_gelu(x),
         torch=lambda x: F.gelu(x), ort_dtype=F32),  # passes/composite_gradients.py's rule
    case("Mul", X((3, 5), wide), name="erf-gelu-legacy", build=lambda x: legacy_erf_gelu(x),
         torch=lambda x: F.gelu(x), ort_dtype=F32),
    case("Elu", X((3, 4), away_from_zero), torch=lambda x: F.elu(x), ort_dtype=F32),
    case("Elu", X((3, 4), away_from_zero), alpha=0.5, name="alpha",
         torch=lambda x: F.elu(x, 0.5), ort_dtype=F32),
    case("Identity", X((3, 4)), torch=lambda x: x),
    case("Cast", X((3, 4)), to=DOUBLE, torch=lambda x: x),
    case("CastLike", X((3, 4)), K(np.zeros((), np.float64)), torch=lambda x: x),
    case("Dropout", X((3, 4)), K(0.3), name="inference", torch=lambda x: x),
    case("Tan", X((3, 4), unit_interval), torch=lambda x: torch.tan(x), ort_dtype=F32),
    case("Asin", X((3, 4), unit_interval), torch=lambda x: torch.asin(x), ort_dtype=F32),
    case("Acos", X((3, 4), unit_interval), torch=lambda x: torch.acos(x), ort_dtype=F32),
    case("Atan", X((3, 4)), torch=lambda x: torch.atan(x), ort_dtype=F32),
    case("Sinh", X((3, 4)), torch=lambda x: torch.sinh(x), ort_dtype=F32),
    case("Cosh", X((3, 4)), torch=lambda x: torch.cosh(x), ort_dtype=F32),
    case("Asinh", X((3, 4)), torch=lambda x: torch.asinh(x), ort_dtype=F32),
    case("Acosh", X((3, 4), above_one), torch=lambda x: torch.acosh(x), ort_dtype=F32),
    case("Atanh", X((3, 4), unit_interval), torch=lambda x: torch.atanh(x), ort_dtype=F32),
    case("Selu", X((3, 4), away_from_zero), ort_dtype=F32, torch=lambda x: 1.05070102214813232421875
         * torch.where(x > 0, x, 1.67326319217681884765625 * torch.expm1(x))),
    case("Selu", X((3, 4), away_from_zero), alpha=1.5, gamma=0.75, name="attrs", ort_dtype=F32,
         torch=lambda x: 0.75 * torch.where(x > 0, x, 1.5 * torch.expm1(x))),
    case("Celu", X((3, 4), away_from_zero), torch=lambda x: F.celu(x), ort_dtype=F32),
    case("Celu", X((3, 4), away_from_zero), alpha=0.5, name="alpha", ort_dtype=F32,
         torch=lambda x: F.celu(x, 0.5)),
    case("HardSigmoid", X((4, 5), wide), ort_dtype=F32,
         torch=lambda x: torch.clamp(f32(0.2) * x + 0.5, 0, 1)),
    case("HardSigmoid", X((4, 5), wide), alpha=0.5, beta=0.25, name="attrs", ort_dtype=F32,
         torch=lambda x: torch.clamp(0.5 * x + 0.25, 0, 1)),
    case("HardSwish", X((4, 5), wide), torch=lambda x: F.hardswish(x), ort_dtype=F32),
    case("ThresholdedRelu", X((4, 5), wide), ort_dtype=F32,
         torch=lambda x: torch.where(x > 1.0, x, 0.0)),
    case("Clip", X((3, 4), distinct), K(-0.5), K(0.7), torch=lambda x: x.clamp(-0.5, 0.7)),
    case("Clip", X((3, 4), distinct), K(None), K(0.3), name="max-only",
         torch=lambda x: x.clamp(max=0.3)),
    case("Clip", X((3, 4), distinct), X((), constant(-0.33)), X((), constant(0.51)),
         name="bounds-differentiated", torch=lambda x, lo, hi: torch.clamp(x, lo, hi)),
    # -- elementwise binary and variadic, with broadcasting
    case("Add", *xs((3, 4), (3, 4)), torch=lambda a, b: a + b),
    case("Add", *xs((3, 4), (4,)), name="bcast-row", torch=lambda a, b: a + b),
    case("Add", *xs((3, 1), (1, 4)), name="bcast-outer", torch=lambda a, b: a + b),
    case("Sub", *xs((2, 3, 4), (3, 1)), name="bcast", torch=lambda a, b: a - b),
    case("Mul", *xs((3, 4), (3, 4)), torch=lambda a, b: a * b),
    case("Mul", *xs((2, 1, 4), (3, 1)), name="bcast", torch=lambda a, b: a * b),
    case("Mul", X((3, 4)), K(2.5), name="const", torch=lambda a: a * 2.5),
    case("Div", X((3, 4)), X((3, 4), away_from_zero), torch=lambda a, b: a / b),
    case("Div", X((3, 4)), X((4,), away_from_zero), name="bcast", torch=lambda a, b: a / b),
    case("Pow", X((3, 4), positive), X((3, 4)), torch=lambda a, b: a ** b),
    case("Pow", X((3, 4), positive), X(()), name="scalar-exp", torch=lambda a, b: a ** b),
    case("Where", K(COND), *xs((3, 4), (3, 4)), torch=lambda a, b: torch.where(
        torch.tensor(COND), a, b)),
    case("Where", K(COND[:, :1]), *xs((3, 4), (4,)), name="bcast",
         torch=lambda a, b: torch.where(torch.tensor(COND[:, :1]), a, b)),
    case("Sum", *xs((3, 4), (4,), (3, 1)), torch=lambda a, b, c: a + b + c),
    case("Mean", *xs((3, 4), (4,), (3, 1)), torch=lambda a, b, c: (a + b + c) / 3,
         ort_dtype=F32),
    case("Max", X((3, 4), distinct), X((4,), shifted(0.1)), torch=lambda a, b: torch.maximum(
        a, b)),
    case("Max", X((3, 4)), name="tie", build=lambda x: ops.Max(x, x),
         torch=lambda x: torch.maximum(x, x)),
    case("Min", X((3, 4), distinct), X((3, 1), shifted(0.07)), X((4,), shifted(0.14)),
         torch=lambda a, b, c: torch.minimum(torch.minimum(a, b), c)),
    case("PRelu", X((2, 3, 4), away_from_zero), X((3, 1)),
         torch=lambda x, s: torch.where(x < 0, x * s, x)),
    case("PRelu", X((3, 4), away_from_zero), K(0.25), name="const-slope",
         torch=lambda x: F.leaky_relu(x, 0.25)),
    # -- matrix products
    case("MatMul", *xs((3, 4), (4, 5)), torch=lambda a, b: a @ b),
    case("MatMul", *xs((2, 3, 4), (2, 4, 5)), name="batched", torch=lambda a, b: a @ b),
    case("MatMul", *xs((2, 3, 4), (4, 5)), name="bcast", torch=lambda a, b: a @ b),
    case("MatMul", X((2, 2, 3, 4), declared=("N", 2, 3, 4)), X((4, 5)), name="rows-symbolic",
         torch=lambda a, b: a @ b),  # dW as one Gemm over the flattened rows
    case("MatMul", *xs((4,), (4, 5)), name="vec-mat", torch=lambda a, b: a @ b),
    case("MatMul", *xs((2, 3, 4), (4,)), name="mat-vec", torch=lambda a, b: a @ b),
    case("MatMul", *xs((4,), (4,)), name="vec-vec", torch=lambda a, b: a @ b),
    case("Gemm", *xs((3, 4), (4, 5)), torch=lambda a, b: a @ b),
    case("Gemm", *xs((3, 4), (5, 4), (5,)), transB=1, name="transB-bias",
         torch=lambda a, b, c: a @ b.T + c),
    case("Gemm", *xs((4, 3), (4, 5), (3, 5)), transA=1, alpha=0.5, beta=2.0,
         name="transA-alpha-beta", torch=lambda a, b, c: 0.5 * a.T @ b + 2.0 * c),
    case("Gemm", *xs((4, 3), (5, 4), (1, 5)), transA=1, transB=1, name="transAB",
         torch=lambda a, b, c: a.T @ b.T + c),
    # -- normalization
    case("LayerNormalization", *xs((3, 5), (5,), (5,)), torch=lambda x, s, b: F.layer_norm(
        x, (5,), s, b, f32(1e-5))),
    case("LayerNormalization", *xs((2, 3, 4), (3, 4)), axis=1, epsilon=0.25, name="axis1-no-bias",
         torch=lambda x, s: F.layer_norm(x, (3, 4), s, None, 0.25)),
    case("BatchNormalization", X((2, 3, 2, 2)), *xs((3,), (3,), (3,)), X((3,), positive),
         name="inference", torch=lambda x, s, b, m, v: torch_batch_norm(x, s, b, m, v)),
    case("BatchNormalization", X((4, 3)), *xs((3,), (3,), (3,)), X((3,), positive),
         epsilon=0.125, name="inference-2d",
         torch=lambda x, s, b, m, v: torch_batch_norm(x, s, b, m, v, eps=0.125)),
    case("BatchNormalization", X((3, 2, 2, 2)), *xs((2,), (2,), (2,)), X((2,), positive),
         training_mode=1, momentum=0.75, name="training",
         torch=lambda x, s, b, m, v: torch_batch_norm(x, s, b, m, v, momentum=0.75)),
    case("BatchNormalization", X((3, 2, 2, 2)), *xs((2,), (2,)), K([0.0, 0.5]), K([1.0, 2.0]),
         training_mode=1, name="training-y-only", build=lambda *a: ops.BatchNormalization(
             *a, training_mode=1)[0],
         torch=lambda x, s, b: torch_batch_norm(x, s, b, None, None, momentum=0.9)[0]),
    # -- convolution and pooling (onnxruntime's CPU kernels are float32 only)
    case("Conv", *xs((2, 3, 5, 5), (4, 3, 3, 3), (4,)), ort_dtype=F32,
         torch=lambda x, w, b: F.conv2d(x, w, b)),
    case("Conv", *xs((1, 2, 6, 6), (3, 2, 3, 3)), strides=[2, 2], pads=[1, 1, 1, 1],
         name="stride-pad", ort_dtype=F32, torch=lambda x, w: F.conv2d(x, w, None, 2, 1)),
    case("Conv", *xs((1, 2, 6, 6), (3, 2, 3, 3)), strides=[2, 2], name="stride-leftover",
         ort_dtype=F32, torch=lambda x, w: F.conv2d(x, w, None, 2)),
    case("Conv", *xs((1, 2, 7, 7), (3, 2, 2, 2)), dilations=[2, 2], name="dilation",
         ort_dtype=F32, torch=lambda x, w: F.conv2d(x, w, dilation=2)),
    case("Conv", *xs((2, 4, 5, 5), (6, 2, 3, 3), (6,)), group=2, strides=[2, 1],
         name="groups", ort_dtype=F32, torch=lambda x, w, b: F.conv2d(x, w, b, (2, 1), groups=2)),
    case("Conv", *xs((1, 3, 5, 5), (3, 1, 3, 3)), group=3, pads=[1, 1, 1, 1], name="depthwise",
         ort_dtype=F32, torch=lambda x, w: F.conv2d(x, w, padding=1, groups=3)),
    case("Conv", *xs((2, 3, 4, 4), (3, 1, 3, 3), (3,)), group=3, pads=[1, 1, 1, 1],
         name="depthwise-16-positions", ort_dtype=F32,
         torch=lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=3)),
    case("Conv", *xs((1, 3, 6, 6), (3, 1, 3, 3)), group=3, strides=[2, 2], pads=[1, 1, 1, 1],
         name="depthwise-stride", ort_dtype=F32,
         torch=lambda x, w: F.conv2d(x, w, None, 2, 1, groups=3)),
    # more than conv_gemm.GEMM_POSITIONS (16) output positions: sliced im2col columns and
    # ConvTranspose for dx (the cases above have at most 9: one-Gemm forms, 0/1 col2im)
    case("Conv", *xs((2, 2, 6, 6), (3, 2, 3, 3), (3,)), pads=[1, 1, 1, 1], name="36-positions",
         ort_dtype=F32, torch=lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    case("Conv", *xs((1, 2, 13, 13), (3, 2, 3, 3)), strides=[2, 2], dilations=[2, 2],
         pads=[1, 0, 1, 0], name="36-positions-stride-dilation", ort_dtype=F32,
         torch=lambda x, w: F.conv2d(F.pad(x, (0, 0, 1, 1)), w, None, 2, 0, 2)),
    case("Conv", *xs((1, 3, 6, 6), (3, 1, 3, 3)), group=3, pads=[1, 1, 1, 1],
         name="depthwise-36-positions", ort_dtype=F32,
         torch=lambda x, w: F.conv2d(x, w, padding=1, groups=3)),
    case("Conv", *xs((2, 3, 7), (2, 3, 3)), strides=[2], pads=[1, 2], name="1d-asymmetric",
         ort_dtype=F32, torch=lambda x, w: F.conv1d(F.pad(x, (1, 2)), w, stride=2)),
    case("Conv", *xs((1, 2, 5, 5), (2, 2, 3, 3)), strides=[2, 2], auto_pad="SAME_UPPER",
         name="same-upper", ort_dtype=F32, torch=lambda x, w: F.conv2d(x, w, None, 2, 1)),
    case("Conv", *xs((1, 2, 5, 5), (2, 2, 2, 2)), auto_pad="SAME_LOWER", name="same-lower",
         ort_dtype=F32, torch=lambda x, w: F.conv2d(F.pad(x, (1, 0, 1, 0)), w)),
    case("Conv", *xs((1, 2, 3, 4, 4), (2, 2, 2, 2, 2)), name="3d", ort_dtype=F32,
         torch=lambda x, w: F.conv3d(x, w)),
    case("ConvTranspose", *xs((2, 3, 4, 4), (3, 2, 3, 3), (2,)), ort_dtype=F32,
         torch=lambda x, w, b: F.conv_transpose2d(x, w, b)),
    case("ConvTranspose", *xs((1, 2, 3, 3), (2, 3, 3, 3)), strides=[2, 2], pads=[1, 1, 1, 1],
         output_padding=[1, 1], name="stride-pad", ort_dtype=F32,
         torch=lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1)),
    case("ConvTranspose", *xs((1, 4, 3, 3), (4, 1, 2, 2)), group=2, dilations=[2, 2],
         name="groups-dilation", ort_dtype=F32,
         torch=lambda x, w: F.conv_transpose2d(x, w, groups=2, dilation=2)),
    case("ConvTranspose", *xs((1, 2, 3, 3), (2, 3, 3, 3)), strides=[2, 2], output_shape=[6, 6],
         name="output-shape", ort_dtype=F32,  # pads (1, 0): torch's padding 1, output_padding 1
         torch=lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1)),
    case("ConvTranspose", *xs((1, 2, 3, 3), (2, 3, 3, 3)), strides=[2, 2], auto_pad="SAME_UPPER",
         name="same-upper", ort_dtype=F32,  # output 3 * 2, the odd pad at the end
         torch=lambda x, w: F.conv_transpose2d(x, w, None, 2)[..., :6, :6]),
    case("MaxPool", X((2, 3, 5, 5), distinct), kernel_shape=[2, 2],
         torch=lambda x: F.max_pool2d(x, 2, 1)),
    case("MaxPool", X((1, 2, 6, 6), distinct), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], _num_outputs=2, name="stride-pad-indices",
         torch=lambda x: F.max_pool2d(x, 3, 2, 1)),
    case("MaxPool", X((1, 2, 6, 5), distinct), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], _num_outputs=2, storage_order=1, name="column-major-indices",
         torch=lambda x: F.max_pool2d(x, 3, 2, 1)),
    case("MaxPool", X((1, 2, 5, 5), distinct), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
         name="ceil", torch=lambda x: F.max_pool2d(x, 2, 2, ceil_mode=True)),
    case("MaxPool", X((1, 2, 5, 5), distinct), kernel_shape=[2, 2], dilations=[2, 2],
         name="dilation", torch=lambda x: F.max_pool2d(x, 2, 1, dilation=2)),
    case("MaxPool", X((2, 2, 7), distinct), kernel_shape=[3], strides=[2], name="1d",
         torch=lambda x: F.max_pool1d(x, 3, 2)),
    # windows that tile the input take the mask rule: upsampled by Resize in float32 (rows run
    # on onnxruntime in float32), by Expand in float64 (the others)
    case("MaxPool", X((2, 3, 4, 6), distinct), kernel_shape=[2, 2], strides=[2, 2],
         name="tiled", ort_dtype=F32, torch=lambda x: F.max_pool2d(x, 2, 2)),
    case("MaxPool", X((1, 2, 7, 5), distinct), kernel_shape=[3, 2], strides=[3, 2],
         name="tiled-floor", torch=lambda x: F.max_pool2d(x, (3, 2), (3, 2))),
    case("MaxPool", X((1, 2, 6, 4), distinct), kernel_shape=[3, 2], strides=[3, 2],
         ceil_mode=1, pads=[0, 0, 0, 0], name="tiled-ceil-exact",
         torch=lambda x: F.max_pool2d(x, (3, 2), (3, 2), ceil_mode=True)),
    case("MaxPool", X((2, 2, 9), distinct), kernel_shape=[4], strides=[4], name="tiled-1d",
         torch=lambda x: F.max_pool1d(x, 4, 4)),
    case("MaxPool", X((1, 2, 4, 4, 6), distinct), kernel_shape=[2, 2, 3], strides=[2, 2, 3],
         name="tiled-3d", ort_dtype=F32, torch=lambda x: F.max_pool3d(x, (2, 2, 3), (2, 2, 3))),
    case("AveragePool", X((2, 3, 5, 5)), kernel_shape=[2, 2], ort_dtype=F32,
         torch=lambda x: F.avg_pool2d(x, 2, 1)),
    case("AveragePool", X((1, 2, 6, 6)), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], name="pad-excluded", ort_dtype=F32,
         torch=lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    case("AveragePool", X((1, 2, 6, 6)), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], count_include_pad=1, name="pad-included", ort_dtype=F32,
         torch=lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True)),
    case("AveragePool", X((1, 2, 5, 5)), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
         name="ceil", ort_dtype=F32, torch=lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True)),
    case("AveragePool", X((1, 2, 6, 7)), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1, name="ceil-pad-included",
         ort_dtype=F32, torch=lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    case("AveragePool", X((1, 2, 6, 7)), kernel_shape=[3, 2], strides=[2, 3],
         pads=[1, 0, 1, 0], ceil_mode=1, name="ceil-pad-excluded", ort_dtype=F32,
         torch=lambda x: F.avg_pool2d(x, (3, 2), (2, 3), (1, 0), ceil_mode=True,
                                      count_include_pad=False)),
    case("GlobalAveragePool", X((2, 3, 4, 5)), ort_dtype=F32,
         torch=lambda x: x.mean((2, 3), keepdim=True)),
    case("GlobalMaxPool", X((2, 3, 4, 5), distinct), ort_dtype=F32,
         torch=lambda x: x.amax((2, 3), keepdim=True)),
    case("InstanceNormalization", *xs((2, 3, 4, 5), (3,), (3,)), ort_dtype=F32,
         torch=lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=f32(1e-5))),
    case("InstanceNormalization", *xs((2, 3, 6), (3,), (3,)), epsilon=0.25, name="1d-epsilon",
         ort_dtype=F32, torch=lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=0.25)),
    case("LRN", X((2, 5, 3, 3)), size=3, ort_dtype=F32,
         torch=lambda x: F.local_response_norm(x, 3, f32(1e-4), f32(0.75), 1.0)),
    case("LRN", X((2, 6, 2, 2)), size=5, alpha=0.6, beta=0.9, bias=1.5, name="attrs",
         ort_dtype=F32, torch=lambda x: F.local_response_norm(x, 5, f32(0.6), f32(0.9), 1.5)),
    # -- softmax family
    case("Softmax", X((3, 4)), torch=lambda x: torch.softmax(x, -1)),
    case("Softmax", X((3, 4, 2)), axis=1, name="axis1", torch=lambda x: torch.softmax(x, 1)),
    case("LogSoftmax", X((3, 4)), torch=lambda x: torch.log_softmax(x, -1)),
    case("LogSoftmax", X((3, 4)), axis=0, name="axis0",
         torch=lambda x: torch.log_softmax(x, 0)),
    # -- shapes
    case("Reshape", X((3, 4)), K([2, -1, 3]), torch=lambda x: x.reshape(2, -1, 3)),
    case("Reshape", X((3, 4)), K([0, 2, 2]), name="copy-dim", torch=lambda x: x.reshape(3, 2, 2)),
    case("Flatten", X((2, 3, 4)), torch=lambda x: x.reshape(2, 12)),
    case("Flatten", X((2, 3, 4)), axis=2, name="axis2", torch=lambda x: x.reshape(6, 4)),
    case("Flatten", X((2, 3, 4)), axis=-2, name="negative-axis",
         torch=lambda x: x.reshape(2, 12)),
    case("Transpose", X((2, 3, 4)), torch=lambda x: x.permute(2, 1, 0)),
    case("Transpose", X((2, 3, 4)), perm=[1, 2, 0], name="perm",
         torch=lambda x: x.permute(1, 2, 0)),
    case("Squeeze", X((3, 1, 4)), K([1]), torch=lambda x: x.squeeze(1)),
    case("Squeeze", X((1, 3, 1)), name="all", torch=lambda x: x.reshape(3)),
    case("Unsqueeze", X((3, 4)), K([0, -1]), torch=lambda x: x[None, :, :, None]),
    case("Expand", X((3, 1)), K([2, 3, 4]), torch=lambda x: x.expand(2, 3, 4)),
    case("Concat", *xs((2, 4), (3, 4), (1, 4)), axis=0, torch=lambda a, b, c: torch.cat(
        [a, b, c], 0)),
    case("Concat", *xs((2, 3), (2, 1)), axis=-1, name="last", torch=lambda a, b: torch.cat(
        [a, b], -1)),
    case("Split", X((4, 6)), K([2, 4]), axis=1, torch=lambda x: torch.split(x, [2, 4], 1)),
    case("Split", X((6, 3)), _num_outputs=3, name="equal", torch=lambda x: x.chunk(3, 0)),
    case("Split", X((3, 4)), name="one-used", build=lambda x: ops.Split(
        x, np.array([1, 2]), axis=0)[1], torch=lambda x: x[1:]),
    case("Slice", X((4, 5)), K([1]), K([3]), torch=lambda x: x[1:3]),
    case("Slice", X((4, 6)), K([0, 5]), K([4, 0]), K([0, 1]), K([2, -2]), name="steps",
         torch=lambda x: x[0:4:2].index_select(1, torch.tensor([5, 3, 1]))),
    case("Slice", X((3, 5)), K([-3]), K([2 ** 62]), K([-1]), name="clamped-end",
         torch=lambda x: x[:, -3:]),
    case("Pad", X((3, 4)), K([1, 0, 0, 2]), torch=lambda x: F.pad(x, (0, 2, 1, 0))),
    case("Pad", X((3, 4)), K([1, -1, -1, 2]), name="crop", torch=lambda x: F.pad(
        x, (-1, 2, 1, -1))),
    case("Pad", X((3, 4)), K([1, 2, 0, 1]), X(()), name="value", torch=lambda x, v: F.pad(
        x, (2, 1, 1, 0)) + v * F.pad(torch.zeros_like(x), (2, 1, 1, 0), value=1.0)),
    case("Tile", X((2, 3)), K([2, 3]), torch=lambda x: x.repeat(2, 3)),
    case("Tile", X((2, 1, 3)), K([1, 4, 2]), name="3d", torch=lambda x: x.repeat(1, 4, 2)),
    case("Gather", X((5, 3)), Labels((4,), 5), torch=lambda x, i: x[i]),
    case("Gather", X((2, 5, 3)), Labels((2, 2), 5), axis=1, name="axis1-2d",
         torch=lambda x, i: x[:, i]),
    case("Gather", X((4, 3)), K(np.array(2)), name="scalar", torch=lambda x: x[2]),
    case("Gather", X((5, 2, 3)), Labels((2, 6), 5, low=-5), name="rows-negative",
         torch=lambda x, i: x[i]),  # axis 0: ScatterND adds rows, repeated and negative
    case("Gather", X((2, 3)), Labels((4,), 0, low=-3), axis=-1, name="negative",
         torch=lambda x, i: x[:, i]),
    case("GatherElements", X((3, 4)), Labels((2, 4), 3), torch=lambda x, i: x.gather(0, i)),
    case("GatherElements", X((3, 4)), Labels((3, 2), 4), axis=1, name="axis1",
         torch=lambda x, i: x.gather(1, i)),
    case("ScatterElements", X((3, 4)), Labels((2, 4), 3), X((2, 4)), reduction="add",
         torch=lambda x, i, u: x.scatter_add(0, i, u)),
    case("ScatterElements", X((3, 4)), K(SCATTER_INDEX), X((2, 4)), name="none",
         torch=lambda x, u: x.scatter(0, torch.tensor(SCATTER_INDEX), u)),
    case("GatherND", X((3, 4, 2)), Labels((5, 2), 3), name="elements",
         torch=lambda x, i: x[i[:, 0], i[:, 1]]),
    case("GatherND", X((3, 4)), K([[1], [0], [1]]), name="rows-repeated",
         torch=lambda x: x[[1, 0, 1]]),
    case("GatherND", X((2, 3, 4)), Labels((2, 5, 1), 3), batch_dims=1, name="batch-dims",
         torch=torch_batched_rows),
    case("ScatterND", X((4, 3)), K(SCATTER_ND_ROWS), X((2, 3)), name="none-rows",
         torch=lambda x, u: x.index_put((torch.tensor([3, 1]),), u)),
    case("ScatterND", X((3, 4)), Labels((5, 2), 3), X((5,)), reduction="add",
         name="add-repeated", torch=lambda x, i, u: x.index_put((i[:, 0], i[:, 1]), u,
                                                                  accumulate=True)),
    case("Trilu", X((4, 5)), torch=lambda x: torch.triu(x)),
    case("Trilu", X((2, 4, 5)), K(1), upper=0, name="lower-k", torch=lambda x: torch.tril(x, 1)),
    case("Trilu", X((4, 5)), K(-2), name="upper-negative-k", torch=lambda x: torch.triu(x, -2)),
    case("TopK", X((3, 5), distinct), K([2]), torch=lambda x: torch.topk(x, 2).values),
    case("TopK", X((4, 3), distinct), K([3]), axis=0, largest=0, name="smallest-axis0",
         torch=lambda x: torch.topk(x, 3, dim=0, largest=False).values),
    case("TopK", X((2, 6), distinct), K([3]), name="unsorted-sum", build=lambda x, k: ops.ReduceSum(
        ops.TopK(x, k, sorted=0)[0], np.array([1]), keepdims=0),  # ORT's order is its own
         torch=lambda x: torch.topk(x, 3, sorted=False).values.sum(1)),
    case("Range", X((), constant(0.25)), K(3.0), X((), constant(0.4)),  # 7 values
         torch=lambda s, d: s + torch.arange(7, dtype=s.dtype) * d),
    # -- einsum
    case("Einsum", *xs((3, 4), (4, 5)), equation="ij,jk->ik", name="matmul",
         torch=lambda a, b: torch.einsum("ij,jk->ik", a, b)),
    case("Einsum", *xs((2, 3, 4), (2, 4, 5)), equation="bij, bjk -> bik", name="batch-spaces",
         torch=lambda a, b: a @ b),
    case("Einsum", *xs((3, 4), (4,)), equation="ij,j", name="implicit",
         torch=lambda a, b: a @ b),
    case("Einsum", X((2, 3, 4)), equation="ijk->kj", name="sum-transpose",
         torch=lambda x: x.sum(0).T),
    case("Einsum", X((2, 3, 3)), equation="bii->bi", name="diagonal",
         torch=lambda x: torch.diagonal(x, dim1=1, dim2=2)),
    case("Einsum", X((3, 3)), equation="ii", name="trace-implicit", torch=lambda x: torch.trace(x)),
    case("Einsum", *xs((3,), (4,)), equation="i,j->ij", name="outer",
         torch=lambda a, b: torch.outer(a, b)),
    case("Einsum", *xs((2, 3), (3, 4), (4,)), equation="ij,jk,k->i", name="three-operands",
         torch=lambda a, b, c: a @ (b @ c)),
    case("Einsum", *xs((2, 1, 3, 4), (1, 5, 4, 3)), equation="...ij,...ji->...",
         name="ellipsis-broadcast", torch=lambda a, b: torch.einsum("...ij,...ji->...", a, b)),
    # the equations torch exports for attention and batched products
    case("Einsum", *xs((2, 3, 4, 5), (2, 3, 6, 5)), equation="bhqd,bhkd->bhqk",
         name="attention-scores", torch=lambda q, k: q @ k.transpose(-1, -2)),
    case("Einsum", *xs((2, 3, 4, 6), (2, 3, 6, 5)), equation="bhqk,bhkd->bhqd",
         name="attention-values", torch=lambda p, v: p @ v),
    case("Einsum", *xs((2, 4, 3), (2, 5, 3)), equation="bik,bjk->bij", name="batch-transposed",
         torch=lambda a, b: a @ b.transpose(1, 2)),
    case("Einsum", X((2, 3, 4)), equation="bij->bji", name="transpose",
         torch=lambda x: x.transpose(1, 2)),
    case("Einsum", X((3, 4)), equation="ij->i", name="row-sums", torch=lambda x: x.sum(1)),
    case("Einsum", *xs((5,), (5,)), equation="i,i->", name="dot", torch=lambda a, b: a @ b),
    # -- resize (onnxruntime's CPU kernel is float32 only)
    case("Resize", X((1, 2, 3, 4)), K(None), K([1.0, 1.0, 2.0, 2.0]), name="nearest-scales",
         ort_dtype=F32, torch=lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact")),
    case("Resize", X((1, 2, 4, 8)), K(None), K(None), K([1, 2, 6, 4]),
         coordinate_transformation_mode="asymmetric", nearest_mode="floor",
         name="nearest-sizes-floor", ort_dtype=F32,
         torch=lambda x: F.interpolate(x, size=(6, 4), mode="nearest")),
    case("Resize", X((1, 2, 5, 4)), K(None), K(None), K([1, 2, 3, 7]),
         coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_ceil",
         name="nearest-align-corners", ort_dtype=F32),
    case("Resize", X((1, 2, 3, 4)), K(None), K([1.0, 1.0, 2.0, 2.0]), mode="linear",
         name="linear-half-pixel", ort_dtype=F32, torch=lambda x: F.interpolate(
             x, scale_factor=2, mode="bilinear", align_corners=False)),
    case("Resize", X((2, 1, 5, 6)), K(None), K(None), K([2, 1, 3, 4]), mode="linear",
         coordinate_transformation_mode="align_corners", name="linear-align-corners-down",
         ort_dtype=F32, torch=lambda x: F.interpolate(x, size=(3, 4), mode="bilinear",
                                                      align_corners=True)),
    case("Resize", X((1, 2, 6, 8)), K(None), K(None), K([1, 2, 4, 3]), mode="linear",
         name="linear-sizes-down", ort_dtype=F32, torch=lambda x: F.interpolate(
             x, size=(4, 3), mode="bilinear", align_corners=False)),
    case("Resize", X((1, 2, 3, 4)), K(None), K([1.0, 1.0, 1.5, 2.5]), mode="linear",
         coordinate_transformation_mode="asymmetric", name="linear-asymmetric", ort_dtype=F32),
    case("Resize", X((1, 2, 4, 4)), K(ROI), K(None), K([1, 2, 3, 5]), mode="linear",
         coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5,
         name="linear-crop-extrapolate", ort_dtype=F32),
    case("Resize", X((1, 1, 4, 4)), K(None), K([1.0, 1.0, 2.0, 2.0]), mode="cubic",
         name="cubic", ort_dtype=F32, torch=lambda x: F.interpolate(
             x, scale_factor=2, mode="bicubic", align_corners=False)),
    # -- reductions
    case("ReduceSum", X((3, 4)), K([1]), keepdims=0, torch=lambda x: x.sum(1)),
    case("ReduceSum", X((2, 3, 4)), K([0, 2]), name="keepdims",
         torch=lambda x: x.sum((0, 2), keepdim=True)),
    case("ReduceSum", X((2, 3, 4)), name="all", torch=lambda x: x.sum().reshape(1, 1, 1)),
    case("ReduceMean", X((2, 3, 4)), axes=[0, 2], keepdims=0, torch=lambda x: x.mean((0, 2))),
    case("ReduceMean", X((3, 4)), name="all-keepdims",
         torch=lambda x: x.mean().reshape(1, 1)),
    case("ReduceMax", X((3, 4), distinct), axes=[1], keepdims=0, torch=lambda x: x.amax(1)),
    case("ReduceMax", X((3, 4), distinct), name="all", torch=lambda x: x.amax().reshape(1, 1)),
    case("ReduceMax", X((2, 3)), name="tie", build=lambda x: ops.ReduceMax(
        ops.Concat(x, x, axis=1), axes=[1]),
         torch=lambda x: torch.cat([x, x], 1).amax(1, keepdim=True)),
    case("ReduceMin", X((2, 3, 4), distinct), axes=[0, 2],
         torch=lambda x: x.amin((0, 2), keepdim=True)),
    case("ReduceProd", X((3, 4), away_from_zero), axes=[1],
         torch=lambda x: x.prod(1, keepdim=True)),
    case("ReduceProd", X((2, 3), away_from_zero), keepdims=0, name="all",
         torch=lambda x: x.prod()),
    case("ReduceSumSquare", X((3, 4)), axes=[0], torch=lambda x: (x * x).sum(0, keepdim=True)),
    case("ReduceL1", X((3, 4), away_from_zero), axes=[-1], keepdims=0,
         torch=lambda x: x.abs().sum(-1)),
    case("ReduceL2", X((3, 4)), axes=[1], torch=lambda x: x.norm(dim=1, keepdim=True)),
    case("ReduceLogSum", X((3, 4), positive), axes=[1],
         torch=lambda x: x.sum(1, keepdim=True).log()),
    case("ReduceLogSumExp", X((3, 4)), axes=[1], torch=lambda x: x.logsumexp(1, keepdim=True)),
    case("ReduceLogSumExp", X((2, 3, 4)), axes=[0, 2], keepdims=0, name="two-axes",
         torch=lambda x: x.logsumexp((0, 2))),
    case("CumSum", X((3, 4)), K(1), torch=lambda x: x.cumsum(1)),
    case("CumSum", X((3, 4)), K(0), reverse=1, name="reverse",
         torch=lambda x: x.flip(0).cumsum(0).flip(0)),
    case("CumSum", X((3, 4)), K(-1), exclusive=1, name="exclusive",
         torch=lambda x: x.cumsum(-1) - x),
    case("CumSum", X((3, 4)), K(0), exclusive=1, reverse=1, name="exclusive-reverse",
         torch=lambda x: x.flip(0).cumsum(0).flip(0) - x),
    # -- losses
    case("NegativeLogLikelihoodLoss", X((5, 4)), Labels((5,), 4), torch=lambda x, t: torch_nll(
        x, t)),
    case("NegativeLogLikelihoodLoss", X((5, 4, 3)), Labels((5, 3), 4), reduction="sum",
         name="sum-kdim", torch=lambda x, t: torch_nll(x, t, reduction="sum")),
    case("NegativeLogLikelihoodLoss", X((5, 4)), Labels((5,), 4), X((4,), positive),
         name="weights", torch=lambda x, t, w: torch_nll(x, t, w)),
    case("NegativeLogLikelihoodLoss", X((6, 4)), K(LABELS), X((4,), positive), ignore_index=1,
         name="weights-ignore", torch=lambda x, w: torch_nll(x, torch.tensor(LABELS), w,
                                                             ignore=1)),
    case("NegativeLogLikelihoodLoss", X((6, 4, 2)), K(LABELS_KDIM), ignore_index=-100,
         reduction="none", name="ignore-none-kdim",
         torch=lambda x: torch_nll(x, torch.tensor(LABELS_KDIM), ignore=-100, reduction="none")),
    case("SoftmaxCrossEntropyLoss", X((5, 4)), Labels((5,), 4),
         torch=lambda s, t: F.cross_entropy(s, t)),
    case("SoftmaxCrossEntropyLoss", X((5, 4)), Labels((5,), 4), reduction="sum", name="sum",
         torch=lambda s, t: F.cross_entropy(s, t, reduction="sum")),
    case("SoftmaxCrossEntropyLoss", X((5, 4, 2)), Labels((5, 2), 4), reduction="none",
         name="none-kdim", torch=lambda s, t: F.cross_entropy(s, t, reduction="none")),
    case("SoftmaxCrossEntropyLoss", X((6, 4)), K(LABELS), X((4,), positive), ignore_index=1,
         name="weights-ignore", torch=lambda s, w: torch_nll(
             torch.log_softmax(s, 1), torch.tensor(LABELS), w, ignore=1)),
    case("SoftmaxCrossEntropyLoss", X((6, 4, 2)), K(LABELS_KDIM), ignore_index=-100,
         name="ignore-kdim", torch=lambda s: F.cross_entropy(  # per token, GPT-2's loss
             s, torch.tensor(LABELS_KDIM), ignore_index=-100)),
    case("SoftmaxCrossEntropyLoss", X((6, 4)), K(LABELS), ignore_index=1, reduction="sum",
         name="ignore-sum", torch=lambda s: F.cross_entropy(
             s, torch.tensor(LABELS), ignore_index=1, reduction="sum")),
    case("SoftmaxCrossEntropyLoss", X((6, 4, 2)), K(LABELS_KDIM), ignore_index=-100,
         reduction="none", name="ignore-none-kdim", torch=lambda s: F.cross_entropy(
             s, torch.tensor(LABELS_KDIM), ignore_index=-100, reduction="none")),
    case("SoftmaxCrossEntropyLoss", X((5, 4, 2)), Labels((5, 2), 4), X((4,), positive),
         reduction="sum", name="weights-sum-kdim", torch=lambda s, t, w: torch_nll(
             torch.log_softmax(s, 1), t, w, reduction="sum")),
    case("SoftmaxCrossEntropyLoss", X((5, 4)), Labels((5,), 4), _num_outputs=2,
         name="log-prob-used", torch=lambda s, t: (F.cross_entropy(s, t),
                                                   torch.log_softmax(s, 1))),
    # -- symbolic dims: the rules' dynamic-shape paths (Shape, Size, ConstantOfShape)
    case("Mul", X((2, 3, 4), declared=("B", 3, 4)), X((3, 1)), name="symbolic",
         torch=lambda a, b: a * b),
    case("Max", X((3, 4), distinct, declared=("N", 4)), X((4,), shifted(0.1)), name="symbolic",
         torch=lambda a, b: torch.maximum(a, b)),
    case("Reshape", X((3, 4), declared=("N", 4)), K([-1, 2, 2]), name="symbolic",
         torch=lambda x: x.reshape(-1, 2, 2)),
    case("Concat", X((2, 4), declared=("N", 4)), X((3, 4), declared=("M", 4)), axis=0,
         name="symbolic", torch=lambda a, b: torch.cat([a, b], 0)),
    case("Split", X((4, 6), declared=("N", 6)), K([2, 4]), axis=1, name="symbolic",
         torch=lambda x: torch.split(x, [2, 4], 1)),
    case("Slice", X((4, 5), declared=("N", 5)), K([1]), K([4]), K([1]), name="symbolic",
         torch=lambda x: x[:, 1:4]),
    case("Pad", X((3, 4), declared=("N", 4)), K([0, 1, 0, 2]), name="symbolic",
         torch=lambda x: F.pad(x, (1, 2))),
    case("Tile", X((2, 3), declared=("N", 3)), K([2, 1]), name="symbolic",
         torch=lambda x: x.repeat(2, 1)),
    case("Gather", X((5, 3), declared=("V", 3)), Labels((4,), 5, declared=("N",)),
         name="symbolic", torch=lambda x, i: x[i]),
    case("GatherElements", X((3, 4), declared=("N", 4)), Labels((2, 4), 3), name="symbolic",
         torch=lambda x, i: x.gather(0, i)),
    case("GatherND", X((3, 4, 2), declared=("N", 4, 2)), Labels((5, 2), 3), name="symbolic",
         torch=lambda x, i: x[i[:, 0], i[:, 1]]),
    case("TopK", X((3, 5), distinct, declared=("N", 5)), K([2]), name="symbolic",
         torch=lambda x: torch.topk(x, 2).values),
    case("Einsum", X((3, 4), declared=("N", 4)), X((4, 5)), equation="ij,jk->k", name="symbolic",
         torch=lambda a, b: (a @ b).sum(0)),
    case("Resize", X((2, 2, 3, 4), declared=("N", 2, 3, 4)), K(None), K([1.0, 1.0, 2.0, 2.0]),
         mode="linear", name="linear-symbolic", ort_dtype=F32, torch=lambda x: F.interpolate(
             x, scale_factor=2, mode="bilinear", align_corners=False)),
    case("Resize", X((2, 2, 3, 4), declared=("N", 2, 3, 4)), K(None), K([1.0, 1.0, 2.0, 2.0]),
         name="nearest-symbolic", ort_dtype=F32,
         torch=lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact")),
    case("InstanceNormalization", X((2, 3, 4), declared=("N", 3, 4)), *xs((3,), (3,)),
         name="symbolic", ort_dtype=F32,
         torch=lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=f32(1e-5))),
    case("ReduceMean", X((3, 4), declared=("N", 4)), axes=[0], name="symbolic",
         torch=lambda x: x.mean(0, keepdim=True)),
    case("ReduceMax", X((3, 4), distinct, declared=("N", 4)), axes=[1], name="symbolic",
         torch=lambda x: x.amax(1, keepdim=True)),
    case("SoftmaxCrossEntropyLoss", X((5, 4), declared=("N", 4)),
         Labels((5,), 4, declared=("N",)), name="symbolic",
         torch=lambda s, t: F.cross_entropy(s, t)),
    case("NegativeLogLikelihoodLoss", X((5, 4), declared=("N", 4)),
         Labels((5,), 4, declared=("N",)), X((4,), positive), name="weights-symbolic",
         torch=lambda x, t, w: torch_nll(x, t, w)),
    case("LayerNormalization", X((3, 5), declared=("N", 5)), *xs((5,), (5,)), name="symbolic",
         torch=lambda x, s, b: F.layer_norm(x, (5,), s, b, f32(1e-5))),
    case("BatchNormalization", X((3, 2, 2, 2), declared=("N", 2, 2, 2)),
         *xs((2,), (2,), (2,)), X((2,), positive), training_mode=1, name="training-symbolic",
         torch=lambda x, s, b, m, v: torch_batch_norm(x, s, b, m, v, momentum=0.9)),
    case("Conv", X((2, 3, 5, 5), declared=("N", 3, 5, 5)), X((4, 3, 3, 3)), ort_dtype=F32,
         name="symbolic", torch=lambda x, w: F.conv2d(x, w)),
    case("Conv", X((2, 2, 6, 6), declared=("N", 2, 6, 6)), X((3, 2, 3, 3)), pads=[1, 1, 1, 1],
         ort_dtype=F32, name="symbolic-36-positions",
         torch=lambda x, w: F.conv2d(x, w, padding=1)),
    case("MaxPool", X((2, 3, 5, 5), distinct, declared=("N", 3, 5, 5)), kernel_shape=[2, 2],
         name="symbolic", torch=lambda x: F.max_pool2d(x, 2, 1)),
    case("MaxPool", X((2, 3, 5, 4), distinct, declared=("N", 3, 5, 4)), kernel_shape=[2, 2],
         strides=[2, 2], name="tiled-symbolic", torch=lambda x: F.max_pool2d(x, 2, 2)),
    case("AveragePool", X((2, 3, 5, 5), declared=("N", 3, 5, 5)), kernel_shape=[2, 2],
         strides=[2, 2], name="symbolic", ort_dtype=F32, torch=lambda x: F.avg_pool2d(x, 2, 2)),
    case("GlobalAveragePool", X((2, 3, 4, 5), declared=("N", "C", 4, 5)), ort_dtype=F32,
         name="symbolic", torch=lambda x: x.mean((2, 3), keepdim=True)),
]


def case_inputs(c: Case, graph, dtype, rng) -> tuple[list, dict, list]:
    """A row's call arguments as inputs of `graph` (X: float inputs to differentiate, Labels:
    int64 inputs, anything else a constant), their feeds, and the differentiated inputs."""
    call_args, feeds, wrt = [], {}, []
    for i, a in enumerate(c.args):
        if isinstance(a, X):
            v = graph.add_input(f"x{i}", dtype, a.declared or a.shape)
            feeds[v.name] = np.asarray(a.gen(rng, a.shape), np.float64).astype(dtype)
            wrt.append(v)
        elif isinstance(a, Labels):
            v = graph.add_input(f"labels{i}", np.int64, a.declared or a.shape)
            feeds[v.name] = rng.integers(a.low, a.high, a.shape).astype(np.int64)
        else:
            v = None if a.value is None else np.asarray(a.value)
        call_args.append(v)
    return call_args, feeds, wrt
