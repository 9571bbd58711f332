"""The training loop: epochs of steps through a StepRunner, validation, history, best weights.

The runner (irkit.runtimes) owns the device, the sessions and the state; the loop only picks
each epoch's order, asks the runner for a pass of steps and a validation pass, records the
figures, keeps the weights of the best epoch, stops on divergence, and calls the callbacks
with Keras' hook names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from irkit.errors import DataError, ShapeError
from irkit.runtimes.base import StepRunner, Totals
from irkit.train.histories import checked_history

# the rule for divergence: an epoch whose figures are not finite, or whose training loss is
# more than DIVERGENCE_FACTOR times the loss of the weights the fit started from (measured on
# up to REFERENCE_ROWS training rows before the first epoch; or 1, when that was below 1: a
# fit that continues a well-trained model starts near 0, and its noise is no divergence).
# The start, not the first epoch: with a rate far too high (Adam at 1e6) the first epoch's
# loss is already 1e12 and every later one looks tame beside it.
DIVERGENCE_FACTOR = 1e4
REFERENCE_ROWS = 1024


@dataclass
class History:
    """Per-epoch figures (`history["val_accuracy"][-1]`), the best epoch (1-based) and its
    monitored value. A resumed run continues the same History."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = "val_loss"
    start_loss: float | None = None  # the starting weights' training loss (the report's base)

    def append(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def epoch(self) -> list[int]:
        """The epochs trained, 0-based (Keras' `history.epoch`)."""
        return list(range(self.epochs))

    def __repr__(self) -> str:
        from irkit.train.display import history_repr
        return history_repr(self)

    def _repr_html_(self) -> str:
        """Jupyter's display: the curves as a picture and the last epochs as a table."""
        from irkit.train.display import history_html
        return history_html(self)

    def to_dict(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "monitor": self.monitor,
                "start_loss": self.start_loss}

    @classmethod
    def from_dict(cls, d: dict, where: str = "the history") -> History:
        """The History of a document `to_dict()` wrote, checked (`checked_history`)."""
        d = checked_history(d, where)
        return cls(d["history"], d["best_epoch"], d["best_value"], d["monitor"],
                   d["start_loss"])


def logs_of(totals: Totals, has_correct: bool, prefix: str = "") -> dict[str, float]:
    n = max(totals.count, 1)
    logs = {f"{prefix}loss": totals.loss / n}
    if has_correct:  # per prediction counted (tokens that count), else per sample
        counted = n if totals.counted is None else max(totals.counted, 1.0)
        logs[f"{prefix}accuracy"] = totals.correct / counted
    return logs


class Trainer:
    """Runs epochs on a StepRunner; `model` is what callbacks see (`callback.model`)."""

    def __init__(self, runner: StepRunner, has_correct: bool, weight_names: list[str],
                 model=None) -> None:
        self.runner, self.has_correct = runner, has_correct
        self.weight_names = weight_names   # params and buffers: what "the weights" are
        self.model = model
        self._best: dict[str, np.ndarray] | None = None
        # the best are the runner's current weights, not copied yet: a copy is made only
        # before a step or a change would overwrite them (a run whose last epoch is its best
        # never copies them)
        self._best_is_current = False
        self.last_weights: dict[str, np.ndarray] | None = None  # before best were restored
        self.reference_loss = float("nan")  # the starting weights' loss (divergence rule)

    def fit(self, train, validation, epochs: int, batch_size: int, *, shuffle: bool = True,
            seed: int = 0, initial_epoch: int = 0, callbacks=(), history: History | None = None,
            monitor: str = "val_loss", keep_best: bool = True, metrics=None) -> History:
        """Train up to epoch `epochs` on staged `train`, validating on staged `validation`
        (or None). `initial_epoch` resumes: the shuffling generator is advanced past the
        epochs done, so a resumed run repeats the batches of an uninterrupted one.
        `metrics() -> logs`, if given, adds figures after each epoch's validation."""
        history = history or History(monitor=monitor)
        if validation is None and monitor.startswith("val_"):
            history.monitor = monitor = monitor[4:]
        n = len(train[0])
        rng = _shuffler(seed, n, initial_epoch if shuffle else 0)
        on_batch = _batch_hook(callbacks)
        if self.model is not None:  # callbacks see the figures so far (Keras: model.history)
            self.model.stop_training = False
            self.model.history = history
        for cb in callbacks:
            cb.on_train_begin({})
        self.reference_loss = logs_of(self.runner.evaluate(
            tuple(part[:REFERENCE_ROWS] for part in train), max(batch_size, 256)),
            self.has_correct)["loss"]
        if history.start_loss is None and math.isfinite(self.reference_loss):
            history.start_loss = self.reference_loss  # a continued run keeps its first start
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            order = rng.permutation(n) if shuffle else np.arange(n)
            self.before_weights_change()
            logs = self._epoch(train, validation, order, batch_size, on_batch, metrics)
            self._check_divergence(epoch, logs, history, keep_best)
            history.append(logs)
            self._track_best(epoch, logs, history, keep_best)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if getattr(self.model, "stop_training", False):  # set by a callback
                break
        self._restore_best(keep_best)
        for cb in callbacks:
            cb.on_train_end(history.to_dict())
        return history

    @property
    def best_weights(self) -> dict[str, np.ndarray] | None:
        """The best epoch's weights so far (a copy; None before any epoch was best)."""
        if self._best_is_current:
            return self.runner.read_state(self.weight_names)
        return self._best

    @property
    def best_is_current(self) -> bool:
        """Whether the best weights are the runner's current ones (no step since)."""
        return self._best_is_current

    @best_weights.setter
    def best_weights(self, weights: dict[str, np.ndarray] | None) -> None:
        self._best, self._best_is_current = weights, False

    def before_weights_change(self) -> None:
        """Call before the runner's weights change (a step, a callback's set_weights): the
        best, if they are the current weights, are copied now."""
        if self._best_is_current:
            self.best_weights = self.runner.read_state(self.weight_names)

    def keep_as_best(self, weights: dict[str, np.ndarray]) -> None:
        """Start with `weights` as the best so far (a resumed run); they must be exactly the
        step's weights, checked now so that a bad set fails before training, not after it."""
        names = set(self.weight_names)
        odd = sorted(set(weights) ^ names)
        if odd:
            raise ShapeError(f"the best weights to resume from do not match the step's weights "
                             f"(differing names: {odd[:3]}); retrain without keep_best")
        self.best_weights = {k: weights[k] for k in self.weight_names}

    def _epoch(self, train, validation, order, batch_size: int, on_batch, metrics
               ) -> dict[str, float]:
        """One epoch's figures: the training pass, `metrics()`, the validation pass, in
        Keras' order (loss, metrics, val_loss, val_ metrics)."""
        logs = logs_of(self.runner.train(train, order, batch_size, on_batch), self.has_correct)
        extra = metrics() if metrics is not None else {}
        logs.update({k: v for k, v in extra.items() if not k.startswith("val_")})
        if validation is not None:
            logs.update(logs_of(self.runner.evaluate(validation, max(batch_size, 256)),
                                self.has_correct, "val_"))
        logs.update(extra)
        return logs

    def _restore_best(self, keep_best: bool) -> None:
        if keep_best and self._best_is_current:  # the last are the best: nothing to restore
            self.last_weights = None
            return
        self.last_weights = self.runner.read_state(self.weight_names)
        if keep_best and self.best_weights is not None:
            self.runner.load_state(self.best_weights)
            # the runner holds them now: the copy goes (a resumed run's are the file's arrays)
            self._best, self._best_is_current = None, True

    def _track_best(self, epoch: int, logs: dict, history: History, keep_best: bool) -> None:
        value = logs.get(history.monitor)
        if value is None:
            return
        sign = -1.0 if "acc" in history.monitor else 1.0
        if history.best_value is None or sign * value < sign * history.best_value:
            history.best_epoch, history.best_value = epoch + 1, float(value)
            if keep_best:
                self._best, self._best_is_current = None, True

    def _check_divergence(self, epoch: int, logs: dict, history: History,
                          keep_best: bool) -> None:
        """DataError (after restoring the best weights) when a figure is not finite or the
        loss has grown DIVERGENCE_FACTOR times over the starting weights' (see the rule)."""
        start = self.reference_loss
        bad = [k for k, v in logs.items() if not math.isfinite(v)]
        grown = math.isfinite(start) and logs["loss"] > DIVERGENCE_FACTOR * max(start, 1.0)
        if not bad and not grown:
            return
        self._restore_best(keep_best)
        kept = (f"; the model keeps the best weights (epoch {history.best_epoch})"
                if keep_best and self.best_weights is not None else "")
        what = (f"{bad[0]} is {logs[bad[0]]}" if bad else
                f"the loss grew from {start:.4g} at the start to {logs['loss']:.4g}")
        rate = getattr(self.model, "learning_rate", None)
        lower = (f"lower the learning rate (--lr; now {rate:g}, try {rate / 100:g})"
                 if isinstance(rate, float) and rate > 0 else "lower the learning rate")
        last = (f"the last finite epoch was {history.epochs}" if history.epochs else
                "nothing was kept")
        raise DataError(f"epoch {epoch + 1}: training diverged ({what}); {last}{kept}; {lower} "
                        "or scale the data")


def _shuffler(seed: int, n: int, skip: int) -> np.random.Generator:
    """The epochs' shuffling generator, advanced past `skip` epochs (a resumed run repeats
    the batches of an uninterrupted one)."""
    rng = np.random.default_rng(seed)
    for _ in range(skip):
        rng.permutation(n)
    return rng


def _batch_hook(callbacks):
    from irkit.train.callbacks import Callback
    def overridden(cb, name: str) -> bool:
        return getattr(getattr(cb, name), "__func__", None) is not getattr(Callback, name)
    hooks = [cb for cb in callbacks
             if overridden(cb, "on_train_batch_end") or overridden(cb, "on_batch_end")]
    if not hooks:
        return None

    def hook(batch: int, loss: float) -> None:
        for cb in hooks:
            cb.on_train_batch_end(batch, {"loss": loss})
    return hook

