"""Callbacks with Keras' hook names; a callback may set `trainer.stop_training` or `trainer.lr`."""

from __future__ import annotations

from collections.abc import Callable


class Callback:
    """Base: override the hooks you need."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...

    def on_batch_end(self, batch: int, logs: dict) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict) -> None: ...


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "min") -> None:
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None:
            return
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.trainer.stop_training = True


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start: `schedule(epoch, lr) -> lr` (no rebuild)."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.trainer.lr = float(self.schedule(epoch, self.trainer.lr))


class LambdaCallback(Callback):
    """Callback from functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, **hooks: Callable) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise TypeError(f"unknown callback hook {name!r}")
            setattr(self, name, fn)
