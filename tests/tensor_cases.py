"""The irkit.numpy table: one row per namespace function (or method, operator, index form).

A row is `row(name, fn, *inputs, ref=..., grad=..., torch=...)`:
  fn(m, *args)    the expression, written once against a module `m`: irkit.numpy, and also
                  numpy itself unless `ref` is given (then ref(*arrays) is numpy's answer)
  inputs          float64 arrays (differentiated unless `grad` says which) or int arrays
  grad            the inputs to differentiate (indices), () for none
  torch           the same expression in torch, on torch tensors of the inputs
  ort32           onnxruntime's CPU kernels lack float64 for this op: run it there in float32
tests/test_tensors.py runs every check on every row.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch checks skip; the lambdas below are then never called
    torch = F = None


@dataclass(frozen=True)
class Row:
    name: str
    fn: Callable
    inputs: tuple
    ref: Callable | None
    grad: tuple
    torch: Callable | None
    ort32: bool

    def numpy(self, *arrays: np.ndarray) -> np.ndarray:
        return self.ref(*arrays) if self.ref is not None else self.fn(np, *arrays)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def row(name: str, fn: Callable, *shapes: Any, ref: Callable | None = None,
        grad: tuple | None = None, torch: Callable | None = None, gen: str = "normal",
        ort32: bool = False) -> Row:
    """Inputs: a shape gives float64 data drawn by `gen`; an array is used as it is."""
    rng = _rng(name)
    draw = {"normal": lambda s: rng.standard_normal(s),
            "positive": lambda s: rng.uniform(0.5, 2.0, s),
            "away": lambda s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.3, 1.5, s),
            "unit": lambda s: rng.uniform(-0.8, 0.8, s),
            # all values >= 0.1 apart: no ties for max, min, argmax, sort
            "distinct": lambda s: (rng.permutation(int(np.prod(s))) * 0.1 - 1.0).reshape(s)}
    inputs = tuple(np.asarray(s) if isinstance(s, np.ndarray) else draw[gen](s) for s in shapes)
    if grad is None:
        grad = tuple(i for i, a in enumerate(inputs) if a.dtype == np.float64)
    return Row(name, fn, inputs, ref, grad, torch, ort32)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.log(_softmax(x, axis))


def _at_add(x: np.ndarray, index: Any, v: float) -> np.ndarray:
    out = x.copy()
    np.add.at(out, index, v)
    return out


def _at_set(x: np.ndarray, index: Any, v: Any) -> np.ndarray:
    out = x.copy()
    out[index] = v
    return out


LABELS = np.array([2, 0, 1, 2, 3])
MASK = np.array([[True, False, True, False], [False, True, True, True], [True, True, False, False]])

ROWS = [
    # ---- arithmetic, broadcasting and the operators --------------------------------------------
    row("add", lambda m, a, b: m.add(a, b), (3, 4), (3, 4), torch=lambda a, b: a + b),
    row("add_broadcast", lambda m, a, b: a + b, (3, 1), (4,), torch=lambda a, b: a + b),
    row("subtract", lambda m, a, b: m.subtract(a, b), (3, 4), (4,)),
    row("multiply", lambda m, a, b: m.multiply(a, b), (2, 3), (2, 1)),
    row("divide", lambda m, a, b: m.divide(a, b), (3, 4), (3, 4), gen="away"),
    row("operators", lambda m, a, b: (2.0 * a - b / 3.0 + 1.0) * -a, (3, 4), (3, 4),
        torch=lambda a, b: (2.0 * a - b / 3.0 + 1.0) * -a),
    row("rsub_rdiv", lambda m, a: 1.0 - 2.0 / a, (5,), gen="away"),
    row("power_scalar", lambda m, a: a ** 3, (3, 4), torch=lambda a: a ** 3),
    row("power", lambda m, a, b: m.power(a, b), (3, 4), (3, 4), gen="positive"),
    row("maximum", lambda m, a, b: m.maximum(a, b), (12,), (12,)),
    row("minimum", lambda m, a, b: m.minimum(a, b), (12,), (12,)),
    row("negative", lambda m, a: m.negative(a), (3, 4)),
    row("abs", lambda m, a: m.abs(a), (3, 4), gen="away", torch=lambda a: a.abs()),
    row("square", lambda m, a: m.square(a), (3, 4)),
    row("exp", lambda m, a: m.exp(a), (3, 4), torch=lambda a: a.exp()),
    row("log", lambda m, a: m.log(a), (3, 4), gen="positive"),
    row("log1p", lambda m, a: m.log1p(a), (3, 4), gen="positive"),
    row("sqrt", lambda m, a: m.sqrt(a), (3, 4), gen="positive"),
    row("reciprocal", lambda m, a: m.reciprocal(a), (3, 4), gen="away"),
    row("sin", lambda m, a: m.sin(a), (3, 4)),
    row("cos", lambda m, a: m.cos(a), (3, 4)),
    row("tan", lambda m, a: m.tan(a), (3, 4), gen="unit", ort32=True),
    row("arcsin", lambda m, a: m.arcsin(a), (3, 4), gen="unit", ort32=True),
    row("arccos", lambda m, a: m.arccos(a), (3, 4), gen="unit", ort32=True),
    row("arctan", lambda m, a: m.arctan(a), (3, 4), ort32=True),
    row("sinh", lambda m, a: m.sinh(a), (3, 4), ort32=True),
    row("cosh", lambda m, a: m.cosh(a), (3, 4), ort32=True),
    row("tanh", lambda m, a: m.tanh(a), (3, 4), torch=lambda a: a.tanh()),
    row("clip", lambda m, a: m.clip(a, -0.55, 0.45), (20,), gen="distinct"),
    row("where", lambda m, a, b: m.where(a > b, a, b * 2.0), (12,), (12,),
        torch=lambda a, b: torch.where(a > b, a, b * 2.0)),
    row("sign", lambda m, a: m.sign(a), (3, 4), gen="away", grad=()),
    row("floor", lambda m, a: m.floor(a * 3.0), (3, 4), gen="away", grad=()),
    # ---- comparisons and logic -----------------------------------------------------------------
    row("equal", lambda m, a, b: m.equal(a, b), np.array([1.0, 2.0, 3.0]),
        np.array([1.0, 0.0, 3.0])),
    row("eq_operator", lambda m, a: a == 2.0, np.array([1.0, 2.0, 3.0])),
    row("not_equal", lambda m, a: a != 2.0, np.array([1.0, 2.0, 3.0])),
    row("less", lambda m, a, b: m.less(a, b), (3, 4), (4,), grad=()),
    row("less_equal", lambda m, a: a <= 0.0, (3, 4), grad=()),
    row("greater", lambda m, a: a > 0.0, (3, 4), grad=()),
    row("greater_equal", lambda m, a, b: m.greater_equal(a, b), (3, 4), (3, 4), grad=()),
    row("logical", lambda m, a: m.logical_or(m.logical_and(a > -0.5, a < 0.5),
                                             m.logical_not(a > 1.0)), (3, 4), grad=()),
    # ---- matmul ----------------------------------------------------------------------------
    row("matmul", lambda m, a, b: a @ b, (3, 4), (4, 2), torch=lambda a, b: a @ b),
    row("matmul_batched", lambda m, a, b: m.matmul(a, b), (2, 3, 4), (4, 5),
        torch=lambda a, b: a @ b),
    row("matmul_vector", lambda m, a, b: m.matmul(a, b), (3, 4), (4,)),
    row("dot", lambda m, a, b: m.dot(a, b), (5,), (5,)),
    # ---- reductions ------------------------------------------------------------------------
    row("sum", lambda m, a: m.sum(a), (3, 4)),
    row("sum_axis", lambda m, a: a.sum(axis=0), (3, 4)),
    row("sum_axes_keepdims", lambda m, a: m.sum(a, axis=(0, 2), keepdims=True), (2, 3, 4)),
    row("mean", lambda m, a: m.mean(a, axis=1), (3, 4), torch=lambda a: a.mean(1)),
    row("mean_method", lambda m, a: a.mean(), (3, 4)),
    row("max", lambda m, a: m.max(a), (3, 4), gen="distinct", torch=lambda a: a.max()),
    row("max_axis", lambda m, a: a.max(axis=1), (3, 4), gen="distinct",
        torch=lambda a: a.amax(1)),
    row("min_keepdims", lambda m, a: m.min(a, axis=0, keepdims=True), (3, 4), gen="distinct"),
    row("prod", lambda m, a: m.prod(a, axis=1), (3, 4), gen="positive"),
    row("var", lambda m, a: m.var(a, axis=0), (5, 3)),
    row("std", lambda m, a: m.std(a), (5, 3), torch=lambda a: a.std(unbiased=False)),
    row("logsumexp", lambda m, a: m.logsumexp(a, axis=1),
        (3, 4), ref=lambda a: np.log(np.exp(a).sum(axis=1)),
        torch=lambda a: torch.logsumexp(a, 1)),
    row("argmax", lambda m, a: m.argmax(a), (3, 4), gen="distinct"),
    row("argmax_axis", lambda m, a: a.argmax(axis=1), (3, 4), gen="distinct"),
    row("argmin_keepdims", lambda m, a: m.argmin(a, axis=0, keepdims=True), (3, 4),
        gen="distinct"),
    # ---- shapes ----------------------------------------------------------------------------
    row("reshape", lambda m, a: m.reshape(a, (4, 3)), (3, 4)),
    row("reshape_method", lambda m, a: a.reshape(2, -1), (3, 4)),
    row("ravel", lambda m, a: m.ravel(a), (3, 4)),
    row("transpose", lambda m, a: m.transpose(a), (3, 4)),
    row("transpose_axes", lambda m, a: m.transpose(a, (1, 2, 0)), (2, 3, 4)),
    row("T", lambda m, a: a.T, (3, 4)),
    row("swapaxes", lambda m, a: m.swapaxes(a, 0, 2), (2, 3, 4)),
    row("concatenate", lambda m, a, b: m.concatenate([a, b], axis=1), (3, 2), (3, 4),
        torch=lambda a, b: torch.cat([a, b], 1)),
    row("stack", lambda m, a, b: m.stack([a, b], axis=1), (3, 4), (3, 4),
        torch=lambda a, b: torch.stack([a, b], 1)),
    row("expand_dims", lambda m, a: m.expand_dims(a, 1), (3, 4)),
    row("squeeze", lambda m, a: m.squeeze(a), (3, 1, 4, 1)),
    row("squeeze_axis", lambda m, a: m.squeeze(a, axis=1), (3, 1, 4, 1)),
    row("broadcast_to", lambda m, a: m.broadcast_to(a, (3, 4)), (4,)),
    # ---- indexing (reads) ------------------------------------------------------------------
    row("index_int", lambda m, a: a[1], (3, 4)),
    row("index_negative", lambda m, a: a[-1, -2], (3, 4)),
    row("index_slices", lambda m, a: a[:, 1:3], (3, 4), torch=lambda a: a[:, 1:3]),
    row("index_step", lambda m, a: a[::2, ::-1], (5, 4), torch=lambda a: a[::2].flip(1)),
    row("index_none_ellipsis", lambda m, a: a[None, ..., 0], (2, 3, 4)),
    row("index_array", lambda m, a: a[np.array([2, 0, 2])], (3, 4),
        torch=lambda a: a[[2, 0, 2]]),
    row("index_array_axis1", lambda m, a: a[:, np.array([[1, 0], [3, 3]])], (3, 4)),
    row("index_int_and_array", lambda m, a: a[1, np.array([0, 2])], (3, 4)),
    row("iterate", lambda m, a: m.stack([r * float(i + 1) for i, r in enumerate(a)]), (3, 4)),
    # ---- functional writes -------------------------------------------------------------------
    row("at_set", lambda m, a: a.at[1].set(0.0), (3, 4), ref=lambda a: _at_set(a, 1, 0.0)),
    row("at_set_tensor", lambda m, a, b: a.at[:, 1].set(b), (3, 4), (3,),
        ref=lambda a, b: _at_set(a, (slice(None), 1), b)),
    row("at_add_repeated", lambda m, a: a.at[np.array([0, 0, 2])].add(1.5), (3, 4),
        ref=lambda a: _at_add(a, np.array([0, 0, 2]), 1.5)),
    row("at_mask", lambda m, a: a.at[MASK].multiply(3.0), (3, 4),
        ref=lambda a: np.where(MASK, a * 3.0, a)),
    # ---- activations and losses --------------------------------------------------------------
    row("sigmoid", lambda m, a: m.sigmoid(a), (3, 4), ref=lambda a: 1 / (1 + np.exp(-a)),
        torch=lambda a: torch.sigmoid(a)),
    row("relu", lambda m, a: m.relu(a), (3, 4), gen="away", ref=lambda a: np.maximum(a, 0),
        torch=lambda a: torch.relu(a)),
    row("softplus", lambda m, a: m.softplus(a), (3, 4), ref=lambda a: np.log1p(np.exp(a)),
        ort32=True),
    row("softmax", lambda m, a: m.softmax(a), (3, 4), ref=_softmax,
        torch=lambda a: torch.softmax(a, -1)),
    row("softmax_axis0", lambda m, a: m.softmax(a, axis=0), (3, 4),
        ref=lambda a: _softmax(a, 0)),
    row("log_softmax", lambda m, a: m.log_softmax(a), (3, 4), ref=_log_softmax,
        torch=lambda a: torch.log_softmax(a, -1)),
    row("cross_entropy", lambda m, a, y: m.cross_entropy(a, y), (5, 4), LABELS,
        ref=lambda a, y: -_log_softmax(a)[np.arange(5), y].mean(),
        torch=lambda a, y: F.cross_entropy(a, y)),
    row("cross_entropy_soft", lambda m, a, p: m.cross_entropy(a, p), (5, 4),
        _softmax(np.arange(20.0).reshape(5, 4) % 3), grad=(0,),
        ref=lambda a, p: -(p * _log_softmax(a)).sum(-1).mean(),
        torch=lambda a, p: F.cross_entropy(a, p)),
    row("binary_cross_entropy", lambda m, p, y: m.binary_cross_entropy(m.sigmoid(p), y),
        (6,), np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]), grad=(0,),
        ref=lambda p, y: -np.mean(y * np.log(1 / (1 + np.exp(-p)))
                                  + (1 - y) * np.log(1 - 1 / (1 + np.exp(-p)))),
        torch=lambda p, y: F.binary_cross_entropy(torch.sigmoid(p), y)),
]
