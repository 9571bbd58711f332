"""Callbacks with Keras' names and hooks: `self.model` is the irkit.Model being trained.

A callback may set `self.model.stop_training = True` or `self.model.learning_rate`, read and
set weights (`get_weights`/`set_weights`), or write files (`export`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from irkit.errors import json_text
from irkit.safe_io import (
    FileSafetyError,
    lock_folder,
    remove_stale_temporaries,
    write_all_atomic,
)


class Callback:
    """Base: override the hooks you need."""

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: dict) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        self.on_batch_end(batch, logs)

    def on_batch_end(self, batch: int, logs: dict) -> None:
        """Keras' older name of on_train_batch_end."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict) -> None: ...


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return best - value > min_delta if mode == "min" else value - best > min_delta


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode {mode!r} must be auto, min or max")
    return ("max" if "acc" in monitor else "min") if mode == "auto" else mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; with
    `restore_best_weights`, end with the weights of the best epoch it saw."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 verbose: int = 0) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode = _mode(monitor, mode)
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs: dict) -> None:
        self.best, self.best_epoch, self.best_weights, self.wait = None, None, None, 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None:
            return
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience - 1:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True

    def on_train_end(self, logs: dict) -> None:
        if self.stopped_epoch is not None and self.verbose:
            print(f"early stopping at epoch {self.stopped_epoch}: {self.monitor} has not "
                  f"improved since epoch {self.best_epoch}", file=sys.stderr)
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` has not improved for `patience`
    epochs (then wait `cooldown` epochs), never below `min_lr`."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor {factor} must be in (0, 1)")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.mode, self.min_delta = _mode(monitor, mode), min_delta
        self.cooldown, self.min_lr = cooldown, min_lr
        self.best, self.wait, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None:
            return
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience and not self.cooling:
            self.model.learning_rate = max(self.model.learning_rate * self.factor, self.min_lr)
            self.wait, self.cooling = 0, self.cooldown


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start: `schedule(epoch, lr) -> lr`. The rate is
    optimizer state in the step graph, so it is saved with the model and survives a resume."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.model.learning_rate = float(self.schedule(epoch, self.model.learning_rate))


class ModelCheckpoint(Callback):
    """Write the inference model to `filepath` (may contain `{epoch}` and figures such as
    `{val_loss:.3f}`) after each epoch, or only when `monitor` improves (`save_best_only`).
    Every write is atomic: a kill at any moment leaves the previous file or the new one.
    Under MPI only rank 0 writes (every rank has the same weights)."""

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto") -> None:
        self.filepath, self.monitor, self.save_best_only = filepath, monitor, save_best_only
        self.mode = _mode(monitor, mode)
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if self.save_best_only:
            if value is None or not _improved(value, self.best, self.mode, 0.0):
                return
            self.best = value
        from irkit import distributed
        if distributed.is_root():
            self.model.export(self.filepath.format(epoch=epoch + 1, **logs))


class TrainingCheckpoint(Callback):
    """`irkit train --checkpoint DIR`: after every epoch, these files, written together (all
    temporary files complete before any is renamed into place, safe_io.write_all_atomic):

        DIR/best.onnx         the inference model of the best epoch so far (when it changes)
        DIR/last.onnx         the inference model of the last epoch
        DIR/last_train.onnx   a training file of the last epoch (`irkit train` resumes it;
                              it carries the best weights too, so the best survives a resume)
        DIR/history.json      the figures so far (`irkit plot DIR/history.json`)

    A kill at any moment leaves every file in DIR whole (the previous version or the new).
    One run at a time: the folder is locked (DIR/.irkit.lock) from `prepare` to the end of
    training (removed after it); a second run is refused with the pid of the first."""

    FILES = ("best.onnx", "last.onnx", "last_train.onnx", "history.json")

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = None  # the folder's lock file while this callback trains into it

    def paths(self) -> dict[str, str]:
        """File name -> path in the directory."""
        return {f: os.path.join(self.directory, f) for f in self.FILES}

    def prepare(self, inputs: list[str] = ()) -> None:
        """Create the directory, take its lock (one run per folder: a second one is refused
        with the first's pid), check every file in it can be written, and remove the
        temporary files that killed runs left (before training)."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise FileSafetyError(f"--checkpoint {self.directory}: not a directory; give a "
                                  "folder (it is created if missing)")
        os.makedirs(self.directory, exist_ok=True)
        if self._lock is None:
            self._lock = lock_folder(self.directory, "--checkpoint")
        from irkit.onnx_io import check_model_outputs
        for path in self.paths().values():
            check_model_outputs({"--checkpoint": path}, inputs)
            remove_stale_temporaries(path)

    def release(self) -> None:
        """Let go of the folder (at the end of training; a dead process lets go by itself)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:
        self.release()

    def on_train_begin(self, logs: dict) -> None:
        self.prepare()

    def on_train_end(self, logs: dict) -> None:
        self.release()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        from irkit.onnx_io import file_parts
        paths, history = self.paths(), self.model.history
        graph = self.model.to_graph()  # this epoch's weights
        doc = {**history.to_dict(), "epochs_total": history.epochs} if history else {}
        # a model above the external-data threshold gets its weights beside it (X.onnx.data)
        files = [*file_parts(graph, paths["last.onnx"]),
                 *self.model.training_files(paths["last_train.onnx"]),
                 (paths["history.json"], json_text(doc, indent=1).encode())]
        if history is not None and history.best_epoch == epoch + 1:
            files = file_parts(graph, paths["best.onnx"]) + files
        write_all_atomic(files)


class LambdaCallback(Callback):
    """Callback from functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, **hooks: Callable) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name) or not name.startswith("on_"):
                raise TypeError(f"unknown callback hook {name!r}")
            setattr(self, name, fn)


class ProgressLogger(Callback):
    """What `verbose` prints on stderr: 1, a progress bar per epoch in a terminal (one line
    per epoch elsewhere, never both); 2, one line per epoch; both end with the closing line
    (report.closing_line)."""

    def __init__(self, epochs: int, batches: int, verbose: int = 1, stream=None) -> None:
        self.epochs, self.batches = epochs, batches
        self.stream = stream or sys.stderr
        self.bar_enabled = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self.done, self.epoch = 0, 0

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.done, self.epoch = 0, epoch

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        if not self.bar_enabled:
            return
        self.done += 1
        filled = 30 * self.done // max(self.batches, 1)
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(f"\repoch {self.epoch + 1}/{self.epochs} [{bar}] "
                          f"{self.done}/{self.batches}  loss {logs['loss']:.4f}")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        figures = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        end = "\r\033[K" if self.bar_enabled else ""
        self.stream.write(f"{end}epoch {epoch + 1}/{self.epochs}  {figures}\n")
        self.stream.flush()

    def on_train_end(self, logs: dict) -> None:
        """The closing line: the overfitting report and whose weights the model holds."""
        from irkit.train.report import closing_line
        text = closing_line(self.model, self.epochs)
        if text:
            self.stream.write(text + "\n")
            self.stream.flush()


__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "LearningRateScheduler",
           "ModelCheckpoint", "ProgressLogger", "ReduceLROnPlateau", "TrainingCheckpoint"]
