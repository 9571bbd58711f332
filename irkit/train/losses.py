"""Losses and the accuracy metric, built as IR on a model output and a target input.

One class per loss, as in Keras (`keras/src/losses/loss.py`): a loss owns its targets (the
dtype and shape of the target input, and `targets`, which checks and shapes the data before
it is staged), the activations it applies itself (`fuses`), the graph of its value and of the
correct count. `LOSSES` below is the one list: the command line's help, the settings, the
predictor's task rule and `Model` read it. Adding a loss is one class and one line there (or
`register_loss(Cls())` at run time).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from irkit import ops
from irkit.data import check_finite, check_labels
from irkit.errors import DataError, ShapeError, SpecError
from irkit.ir import Graph, Value
from irkit.ops.dtypes import onnx_dtype


class Loss:
    """Base: float targets shaped like the model's output (regression-style)."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    classification: ClassVar[bool] = False
    sparse_labels: ClassVar[bool] = False  # integer class labels of shape (N,)
    # activations in front of the loss that it applies itself (it reads their input, logits)
    fuses: ClassVar[tuple[str, ...]] = ()
    reads_target: ClassVar[bool] = True  # False: the step has no target input

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def prediction(self, graph: Graph) -> Value:
        """The model output the loss reads (the first)."""
        return graph.outputs[0]

    def class_axis(self, rank: int) -> int:
        """The class axis of an output of `rank` (where a fused Softmax must apply)."""
        return 1

    def count(self, out: Value, target: Value) -> Value | None:
        """How many predictions `correct` counts over (float), or None: one per sample."""
        return None

    def target_dtype(self):
        return np.float32

    def target_shape(self, out: Value) -> tuple | None:
        """The shape of the step's target input for model output `out`."""
        return out.shape

    def build(self, out: Value, target: Value) -> Value:
        """The mean loss over the batch (a scalar)."""
        raise NotImplementedError

    def labels(self, y: np.ndarray, what: str) -> np.ndarray:
        """`y` as a whole, checked before the data is split (the habits of Keras users, e.g.
        labels shaped (N, 1)); per-batch conversion is `targets`."""
        return y

    def correct(self, out: Value, target: Value) -> Value | None:
        """Number of correct predictions in the batch (float), or None for regression."""
        return None

    def targets(self, y: np.ndarray, shape: tuple | None, num_classes: int | None,
                what: str) -> np.ndarray:
        """`y` checked and converted for the target input of `shape`; DataError naming
        `what` (e.g. "training data") and the fix otherwise."""
        check_finite(y, what)
        y = y.astype(np.float32)
        if shape is not None and len(shape) == 2 and y.ndim == 1:
            y = y.reshape(-1, 1)
        _check_target_shape(y, shape, self, what)
        return y


def _count(hit: Value, like: Value) -> Value:
    return ops.ReduceSum(ops.Cast(hit, to=onnx_dtype(like.dtype)), keepdims=0)


IGNORE_INDEX = -100  # a label that counts in no loss or accuracy (torch's default)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy of logits against integer class labels: scores (N, C) and labels (N,),
    or, per token, scores (N, T, ..., V) (classes last, as a language model's logits) and
    labels (N, T, ...) where IGNORE_INDEX (-100, as torch) marks labels that count in neither
    the loss (the mean over the tokens that count) nor the accuracy (correct / counted)."""

    name = "sparse_categorical_crossentropy"
    aliases = ("cross_entropy", "sparse_cross_entropy")
    classification = True
    sparse_labels = True
    fuses = ("Softmax", "LogSoftmax")

    def target_dtype(self):
        return np.int64

    def class_axis(self, rank: int) -> int:
        return 1 if rank <= 2 else rank - 1

    def target_shape(self, out: Value) -> tuple:
        if out.shape is not None and len(out.shape) > 2:
            return tuple(out.shape[:-1])  # per token, if the labels are (targets checks)
        _check_class_scores(out, self)
        return (out.shape[0] if out.shape else "N",)

    def labels(self, y, what):
        """(N, 1) labels become (N,); one-hot rows are refused with the fix. Other labels of
        several numbers per sample (per token: (N, T)) are checked against the model's output
        in `targets`."""
        if y.ndim == 2 and y.shape[1] == 1:
            return y[:, 0]
        if y.ndim == 2 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
            raise self._per_sample_error(y, "look one-hot", what)
        return y

    def _per_sample_error(self, y, looks: str, what: str) -> DataError:
        return DataError(f"{what}: labels of shape {tuple(y.shape)} {looks}; {self.name} "
                         "takes one class number per sample, shape (N,): pass "
                         "y.argmax(axis=1), or compile(loss='categorical_crossentropy') "
                         "for one-hot targets")

    def build(self, out, target):
        if out.rank is not None and out.rank > 2:  # per token
            if isinstance(out.shape[-1], int):  # one row per token: the classes stay last
                out = ops.Reshape(out, np.array([-1, out.shape[-1]], np.int64))
                target = ops.Reshape(target, np.array([-1], np.int64))
            else:  # classes to axis 1, as ONNX's loss takes them
                out = ops.Transpose(out, perm=[0, out.rank - 1, *range(1, out.rank - 1)])
            loss, _ = ops.SoftmaxCrossEntropyLoss(out, target, reduction="mean",
                                                  ignore_index=IGNORE_INDEX, _num_outputs=2)
            return loss
        loss, _log_prob = ops.SoftmaxCrossEntropyLoss(out, target, reduction="mean",
                                                      _num_outputs=2)
        return loss

    def correct(self, out, target):
        if out.rank is not None and out.rank > 2:
            hit = ops.Equal(ops.ArgMax(out, axis=out.rank - 1, keepdims=0), target)
            return _count(ops.And(hit, _counted(target)), out)
        return _count(ops.Equal(ops.ArgMax(out, axis=1, keepdims=0), target), out)

    def count(self, out, target):
        if out.rank is not None and out.rank > 2:
            return _count(_counted(target), out)
        return None

    def targets(self, y, shape, num_classes, what):
        y = self.labels(y, what)
        if shape is not None and len(shape) > 1:
            if y.ndim == 1:  # one label per sample, but scores per position: a Dense on images
                raise _class_scores_error((*shape[1:], num_classes or "C"), self)
            return _token_labels(y, shape, num_classes, what, self.name)
        if y.ndim >= 2:
            raise self._per_sample_error(y, "hold several numbers per sample", what)
        if y.dtype.kind not in "iufb":
            example = str(y.flat[0]) if y.size else ""
            raise DataError(f"{what}: {self.name} needs integer class labels 0..C-1, got "
                            f"{y.dtype} values (e.g. {example!r}); map names to numbers "
                            "with classes, y = numpy.unique(y, return_inverse=True)")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataError(f"{what}: {self.name} needs integer class labels")
        if y.dtype.kind == "f" and len(y) and np.abs(y).max() >= 2**62:
            raise DataError(f"{what}: label {y.flat[np.abs(y).argmax()]:g} is out of range"
                            + (f" for {num_classes} classes" if num_classes else ""))
        y = y.astype(np.int64).reshape(-1)
        if num_classes is not None:
            check_labels(y, num_classes, what)
        return y


class CategoricalCrossentropy(Loss):
    """Cross-entropy of logits against one-hot (or soft) targets (N, C)."""

    name = "categorical_crossentropy"
    classification = True
    fuses = ("Softmax", "LogSoftmax")

    def target_shape(self, out: Value) -> tuple | None:
        _check_class_scores(out, self)
        return out.shape

    def build(self, out, target):
        # -mean_n sum_c t log softmax(z)
        per_sample = ops.ReduceSum(ops.Mul(target, ops.LogSoftmax(out, axis=1)),
                                   np.array([1], np.int64), keepdims=0)
        return ops.Neg(ops.ReduceMean(per_sample, keepdims=0))

    def correct(self, out, target):
        labels = ops.ArgMax(target, axis=1, keepdims=0)
        return _count(ops.Equal(ops.ArgMax(out, axis=1, keepdims=0), labels), out)


class MeanSquaredError(Loss):
    """mean((out - target)^2)."""

    name = "mse"
    aliases = ("mean_squared_error",)

    def build(self, out, target):
        diff = ops.Sub(out, target)
        return ops.ReduceMean(ops.Mul(diff, diff), keepdims=0)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy of logits against 0/1 targets."""

    name = "binary_crossentropy"
    aliases = ("bce", "bce_with_logits")
    classification = True
    fuses = ("Sigmoid",)

    def build(self, out, target):
        # max(z, 0) - z t + log(1 + exp(-|z|)): stable for any z
        terms = ops.Add(ops.Sub(ops.Relu(out), ops.Mul(out, target)),
                        ops.Softplus(ops.Neg(ops.Abs(out))))
        return ops.ReduceMean(terms, keepdims=0)

    def correct(self, out, target):
        return _count(ops.Equal(ops.Greater(out, 0.0), ops.Greater(target, 0.5)), out)


def _counted(target: Value) -> Value:
    """The labels that count (not IGNORE_INDEX)."""
    ignore = target.graph.constant(np.array(IGNORE_INDEX, np.int64))
    return ops.Not(ops.Equal(target, ignore))


def _token_labels(y: np.ndarray, shape: tuple, num_classes: int | None, what: str,
                  name: str) -> np.ndarray:
    """Per-token labels (N, T, ...) as int64: whole numbers 0..V-1 or IGNORE_INDEX."""
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise DataError(f"{what}: {name} needs integer labels per token (class numbers, "
                        f"{IGNORE_INDEX} for tokens that do not count), got {y.dtype} values")
    y = y.astype(np.int64)
    fixed = [d if isinstance(d, int) else None for d in shape[1:]]
    if y.ndim != len(shape) or any(d not in (None, n) for d, n in zip(fixed, y.shape[1:])):
        raise DataError(f"{what}: the labels have shape {tuple(y.shape[1:])} per sample, the "
                        f"model's output needs {tuple(shape[1:])} (one label per token)")
    counted = y[y != IGNORE_INDEX]
    if num_classes is not None and counted.size and (counted.min() < 0
                                                     or counted.max() >= num_classes):
        bad = int(counted.max()) if counted.max() >= num_classes else int(counted.min())
        raise DataError(f"{what}: label {bad} is out of range for {num_classes} classes; "
                        f"labels must be 0..{num_classes - 1} or {IGNORE_INDEX} (ignored)")
    return np.ascontiguousarray(y)


class OutputLoss(Loss):
    """A scalar the model computes itself, as the loss (`output:NAME`; a Hugging Face model
    exported with its labels as an input, for one): no target input, no accuracy."""

    reads_target = False

    def __init__(self, output: str) -> None:
        self.output = output
        self.name = f"{OUTPUT_PREFIX}{output}"

    def __repr__(self) -> str:
        return f"OutputLoss({self.output!r})"

    def prediction(self, graph: Graph) -> Value:
        names = [v.name for v in graph.outputs]
        if self.output not in names:
            raise DataError(f"--loss {self.name}: the model has no output {self.output!r}; its "
                            f"outputs: {', '.join(names)}")
        value = graph.outputs[names.index(self.output)]
        if value.shape is None or any(d != 1 for d in value.shape):
            shown = "unknown" if value.shape is None else tuple(value.shape)
            raise DataError(f"--loss {self.name}: the output {self.output!r} has shape "
                            f"{shown}; a loss must be one number (a scalar)")
        return value

    def build(self, out, target):
        return out if out.rank == 0 else ops.Reshape(out, out.graph.constant(
            np.zeros((0,), np.int64)))


OUTPUT_PREFIX = "output:"  # `--loss output:NAME`: the model's output NAME is the loss


# The one list of losses: name -> instance (aliases are each class's own).
LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    SparseCategoricalCrossentropy(), CategoricalCrossentropy(), MeanSquaredError(),
    BinaryCrossentropy())}


def register_loss(loss: Loss) -> Loss:
    """Add a loss instance under its `name` (and its aliases)."""
    if not loss.name:
        raise SpecError(f"loss {type(loss).__name__} needs a `name`")
    LOSSES[loss.name] = loss
    return loss


def aliases() -> dict[str, str]:
    """Every alias -> the loss it names."""
    return {alias: loss.name for loss in LOSSES.values() for alias in loss.aliases}


def loss_names(classification: bool | None = None) -> list[str]:
    """Names and aliases (of classification losses only, or regression ones only)."""
    named = [(n, loss) for n, loss in LOSSES.items()]
    named += [(a, LOSSES[n]) for a, n in aliases().items()]
    return [n for n, loss in named if classification is None or
            loss.classification == classification]


def get_loss(name: str | Loss) -> Loss:
    """A loss by name or alias (any case); SpecError listing the choices otherwise."""
    if isinstance(name, Loss):
        return name
    if str(name).startswith(OUTPUT_PREFIX) and len(str(name)) > len(OUTPUT_PREFIX):
        return OutputLoss(str(name)[len(OUTPUT_PREFIX):])
    key = str(name).lower()
    key = aliases().get(key, key)
    if key not in LOSSES:
        raise SpecError(f"unknown loss {name!r}; use one of {', '.join(sorted(LOSSES))} "
                        f"(aliases: {', '.join(sorted(aliases()))}), or {OUTPUT_PREFIX}NAME "
                        "for a scalar output of the model")
    return LOSSES[key]


def _check_target_shape(y: np.ndarray, want, loss: Loss, what: str) -> None:
    """DataError unless each target has the shape of one model output (else ORT fails later)."""
    if want is None:
        return
    fixed = [d if isinstance(d, int) else None for d in want[1:]]
    if y.ndim == len(want) and all(d in (None, n) for d, n in zip(fixed, y.shape[1:],
                                                                  strict=True)):
        return
    hint = (" (class labels need sparse_categorical_crossentropy, or one-hot targets)"
            if loss.name != "mse" else "")
    raise DataError(f"{what}: each target has shape {tuple(y.shape[1:])}, the model's output "
                    f"per sample is {tuple(want[1:])}; {loss.name} needs targets shaped like "
                    f"the output{hint}")


def _check_class_scores(out: Value, loss: Loss) -> None:
    """ShapeError unless the model gives one score per class, (N, C): the usual cause is
    images (N, 28, 28) into Dense, which maps only the last axis."""
    if out.shape is None or len(out.shape) == 2:
        return
    raise _class_scores_error(tuple(out.shape[1:]), loss)


def _class_scores_error(per_sample: tuple, loss: Loss) -> ShapeError:
    """The model's output per sample is not (C,) and the labels are one per sample."""
    return ShapeError(f"the model's output per sample has shape {per_sample}; {loss.name} needs "
                      "one score per class, shape (C,): put nn.Flatten() before the first Dense "
                      "when samples have more than one axis (images)")
