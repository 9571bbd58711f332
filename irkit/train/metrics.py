"""Metrics beyond accuracy, named as in Keras' `compile(metrics=[...])`.

    model.compile(loss="mse", metrics=["mae"])                  # logs mae and val_mae
    model.compile(metrics=["accuracy", TopKAccuracy(k=3)])      # + top_3_accuracy

Accuracy comes from the loss's correct count inside the train step (`Loss.correct`); the
metrics here are computed after each epoch from the model's predictions with that epoch's
weights, on the training part and on the validation data (Keras averages its training
figures over the epoch's batches instead, while the weights change). `METRICS` is the one
list of names (`register_metric` adds one); a metric is also any `Metric`, or a function
`fn(y_true, y_pred)` returning one value per row or a number, as Keras takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irkit.errors import DataError, SpecError

ACCURACY = ("accuracy", "acc")  # the step graph's correct count: no Metric needed


@dataclass(frozen=True)
class Metric:
    """`name`: the key in the logs and the History (`val_` + name for the validation data);
    `fn(outputs, targets) -> float` over all rows; `task`: classify, regress or any."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    task: str = "any"

    def __call__(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float(self.fn(np.asarray(outputs, np.float64), np.asarray(targets)))


def _labels(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Class indices of `targets`: integer labels (N,) or (N, 1), or one-hot rows (N, C)."""
    if targets.ndim == 2 and targets.shape[1] == outputs.shape[1] > 1:
        return targets.argmax(axis=1)
    return targets.reshape(len(targets)).astype(np.int64)


def _top_k(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def top_k(outputs: np.ndarray, targets: np.ndarray) -> float:
        scores = outputs.reshape(len(outputs), -1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.mean(np.any(best == _labels(scores, targets)[:, None], axis=1)))
    return top_k


def TopKAccuracy(k: int = 5, name: str | None = None) -> Metric:  # noqa: N802 - Keras' name
    """The share of rows whose true class is among the `k` highest scores."""
    if not isinstance(k, int) or k < 1:
        raise SpecError(f"top-k accuracy needs a whole k >= 1, got {k!r}")
    return Metric(name or f"top_{k}_accuracy", _top_k(k), "classify")


def _errors(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = outputs.reshape(len(outputs), -1)
    if targets.size != out.size:
        raise DataError(f"the model gives {out.shape[1]} values per row, the targets have "
                        f"{targets.size // max(len(targets), 1)}; they must match")
    return out - targets.reshape(out.shape).astype(np.float64)


def _mae(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.abs(_errors(outputs, targets)).mean())


def _mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float((_errors(outputs, targets) ** 2).mean())


# name -> a Metric logged under that name (Keras' strings)
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, *names: str) -> None:
    """Make `metric` known by its name and `names` (lower case) to compile(metrics=...)."""
    for name in (metric.name, *names):
        METRICS[name.lower()] = Metric(name, metric.fn, metric.task)


register_metric(Metric("top_k_accuracy", _top_k(5), "classify"),
                "sparse_top_k_categorical_accuracy", "top_k_categorical_accuracy")
register_metric(Metric("mae", _mae), "mean_absolute_error")
register_metric(Metric("mse", _mse), "mean_squared_error")


def resolve_metrics(metrics, classification: bool) -> list[Metric]:
    """The Metrics `compile(metrics=...)` names (accuracy is the step's own and left out);
    SpecError naming the known ones for an unknown name or a classifier's metric on a
    regression loss."""
    found = []
    for m in [metrics] if isinstance(metrics, (str, Metric)) else list(metrics or []):
        if isinstance(m, str) and m.lower() in ACCURACY:
            continue
        if isinstance(m, str):
            if m.lower() not in METRICS:
                raise SpecError(f"unknown metric {m!r}; use accuracy or one of "
                                f"{', '.join(sorted(METRICS))} (or a function of y_true, "
                                "y_pred)")
            m = METRICS[m.lower()]
        elif not isinstance(m, Metric) and callable(m):
            fn = m
            m = Metric(getattr(fn, "__name__", "metric"),
                       lambda out, y, fn=fn: float(np.mean(fn(y, out))))
        elif not isinstance(m, Metric):
            raise SpecError(f"metric {m!r}: give a name, a Metric or a function")
        if m.task == "classify" and not classification:
            raise SpecError(f"metric {m.name!r} is for classifiers; the loss regresses "
                            "(use mae or mse)")
        found.append(m)
    return found


def metric_logs(model, metrics: list[Metric], x, y, prefix: str = "") -> dict[str, float]:
    """Each metric of `model`'s predictions on x against y, keyed `prefix + name`."""
    if not metrics:
        return {}
    outputs = model.predict(x, batch_size=1024)
    return {f"{prefix}{m.name}": m(outputs, y) for m in metrics}


def epoch_metrics(model, metrics: list[Metric], train, validation):
    """The hook the trainer calls after each epoch (None without metrics): the metrics on
    the training part and on the validation data, with that epoch's weights."""
    if not metrics:
        return None

    def compute() -> dict[str, float]:
        model._pull_weights()  # this epoch's weights into the predictions
        logs = metric_logs(model, metrics, *train)
        if validation is not None:
            logs.update(metric_logs(model, metrics, *validation, prefix="val_"))
        return logs
    return compute
