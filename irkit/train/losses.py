"""Losses and the accuracy metric, built as IR on a model output and a target input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit import ops
from irkit.errors import SpecError
from irkit.ir import Value
from irkit.ops.shape import onnx_dtype


@dataclass(frozen=True)
class Loss:
    """A named loss: the target's dtype and how to build loss and correct-count Values."""

    name: str
    sparse_labels: bool  # integer class labels of shape (N,)
    classification: bool

    def target_dtype(self):
        return np.int64 if self.sparse_labels else np.float32

    def build(self, out: Value, target: Value) -> Value:
        """The mean loss over the batch (a scalar)."""
        return _BUILDERS[self.name](out, target)

    def correct(self, out: Value, target: Value) -> Value | None:
        """Number of correct predictions in the batch (float), or None for regression."""
        if not self.classification:
            return None
        if self.name == "binary_crossentropy":
            hit = ops.Equal(ops.Greater(out, 0.0), ops.Greater(target, 0.5))
        else:
            labels = target if self.sparse_labels else ops.ArgMax(target, axis=1, keepdims=0)
            hit = ops.Equal(ops.ArgMax(out, axis=1, keepdims=0), labels)
        return ops.ReduceSum(ops.Cast(hit, to=onnx_dtype(out.dtype)), keepdims=0)


def _sparse_ce(out: Value, target: Value) -> Value:
    loss, _log_prob = ops.SoftmaxCrossEntropyLoss(out, target, reduction="mean", _num_outputs=2)
    return loss


def _ce(out: Value, target: Value) -> Value:
    # -mean_n sum_c t log softmax(z)
    per_sample = ops.ReduceSum(ops.Mul(target, ops.LogSoftmax(out, axis=1)),
                               np.array([1], np.int64), keepdims=0)
    return ops.Neg(ops.ReduceMean(per_sample, keepdims=0))


def _mse(out: Value, target: Value) -> Value:
    diff = ops.Sub(out, target)
    return ops.ReduceMean(ops.Mul(diff, diff), keepdims=0)


def _bce_logits(out: Value, target: Value) -> Value:
    # max(z, 0) - z t + log(1 + exp(-|z|)): stable for any z
    terms = ops.Add(ops.Sub(ops.Relu(out), ops.Mul(out, target)),
                    ops.Softplus(ops.Neg(ops.Abs(out))))
    return ops.ReduceMean(terms, keepdims=0)


_BUILDERS = {"sparse_categorical_crossentropy": _sparse_ce, "categorical_crossentropy": _ce,
             "mse": _mse, "binary_crossentropy": _bce_logits}
LOSSES = {
    "sparse_categorical_crossentropy": Loss("sparse_categorical_crossentropy", True, True),
    "categorical_crossentropy": Loss("categorical_crossentropy", False, True),
    "mse": Loss("mse", False, False),
    "binary_crossentropy": Loss("binary_crossentropy", False, True),
}
ALIASES = {"cross_entropy": "sparse_categorical_crossentropy",
           "sparse_cross_entropy": "sparse_categorical_crossentropy",
           "mean_squared_error": "mse", "bce": "binary_crossentropy",
           "bce_with_logits": "binary_crossentropy"}


def get_loss(name: str | Loss) -> Loss:
    """A loss by name (or alias); SpecError listing the choices otherwise."""
    if isinstance(name, Loss):
        return name
    key = ALIASES.get(name, name)
    if key not in LOSSES:
        raise SpecError(f"unknown loss {name!r}; use one of {', '.join(sorted(LOSSES))} "
                        f"(aliases: {', '.join(sorted(ALIASES))})")
    return LOSSES[key]
