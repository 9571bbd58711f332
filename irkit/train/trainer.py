"""The training loop: the step graph on onnxruntime, weights kept on the device.

Parameters and optimizer state live in OrtValues in two buffer sets that ping-pong: a step
reads set A and writes set B, the next reads B and writes A, through two IOBindings made once.
Each epoch ends with an evaluation of the validation data; the weights of the best epoch
(lowest validation loss) are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from irkit.data import check_finite, check_labels
from irkit.errors import DataError
from irkit.onnx_io import to_onnx
from irkit.runtimes.onnxruntime import empty_ortvalue, make_session, ortvalue, resolve_device
from irkit.train.callbacks import Callback
from irkit.train.losses import Loss
from irkit.train.optimizers import Optimizer
from irkit.train.step import CORRECT, LOSS, LR, STEP, TARGET, StepGraphs, build_step_graphs


@dataclass
class History:
    """Per-epoch figures: `history["val_accuracy"][-1]`, plus the best epoch (1-based)."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None

    def append(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def to_dict(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch}


class Trainer:
    """Trains a ModuleModel/OnnxModel with a loss and optimizer on onnxruntime."""

    def __init__(self, model, loss: Loss, optimizer: Optimizer, device: str = "cpu",
                 seed: int = 0) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.device = resolve_device(device)
        self.seed = seed
        self.lr = float(optimizer.lr)
        self.stop_training = False
        self.steps_done = 0
        self.graphs: StepGraphs | None = None
        self.optimizer_state: dict[str, np.ndarray] | None = None

    # ---- set-up ---------------------------------------------------------------------------
    def _compile(self) -> None:
        if self.graphs is not None:
            return
        self.graphs = g = build_step_graphs(self.model, self.loss, self.optimizer)
        self.train_session = make_session(to_onnx(g.train).SerializeToString(), self.device)
        self.eval_session = make_session(to_onnx(g.eval).SerializeToString(), self.device)
        weights = self.model.weights()
        state = self.optimizer_state or {f"{s}/{p}": a for p in g.params
                                         for s, a in self.optimizer.init_state(weights[p]).items()}
        values = {**{p: weights[p] for p in g.params}, **state}
        dev = self.device
        self._sets = [{k: ortvalue(v, dev) for k, v in values.items()},
                      {k: ortvalue(v, dev) for k, v in values.items()}]
        self._scalars = {n: ortvalue(np.zeros((), np.float32), "cpu") for n in (LR, STEP)}
        self._out = {n: empty_ortvalue((), np.float32, "cpu") for n in (LOSS, CORRECT)}
        self._train_io = [self._binding(self.train_session, a, b) for a, b in
                          ((0, 1), (1, 0))]
        self._eval_io = [self._binding(self.eval_session, a, None) for a in (0, 1)]
        self._current = 0

    def _binding(self, session, src: int, dst: int | None):
        io = session.io_binding()
        names = {i.name for i in session.get_inputs()}
        for k, v in self._sets[src].items():
            if k in names:
                io.bind_ortvalue_input(k, v)
        if dst is not None:
            io.bind_ortvalue_input(LR, self._scalars[LR])
            io.bind_ortvalue_input(STEP, self._scalars[STEP])
            for k, v in self._sets[dst].items():
                io.bind_ortvalue_output(f"next/{k}", v)
        for o in session.get_outputs():
            if o.name in self._out:
                io.bind_ortvalue_output(o.name, self._out[o.name])
        return io

    # ---- running --------------------------------------------------------------------------
    def _run_batches(self, training: bool, x: np.ndarray, y: np.ndarray, batch_size: int,
                     on_batch=None) -> dict[str, float]:
        g = self.graphs
        total_loss, total_correct = 0.0, 0.0
        for start in range(0, len(x), batch_size):
            xb = np.ascontiguousarray(x[start:start + batch_size])
            yb = np.ascontiguousarray(y[start:start + batch_size])
            if training:
                io = self._train_io[self._current]
                self.steps_done += 1
                self._scalars[LR].update_inplace(np.array(self.lr, np.float32))
                self._scalars[STEP].update_inplace(np.array(self.steps_done, np.float32))
            else:
                io = self._eval_io[self._current]
            io.bind_cpu_input(g.input_name, xb)
            io.bind_cpu_input(TARGET, yb)
            (self.train_session if training else self.eval_session).run_with_iobinding(io)
            if training:
                self._current = 1 - self._current
            loss = float(self._out[LOSS].numpy())
            total_loss += loss * len(xb)
            if g.has_correct:
                total_correct += float(self._out[CORRECT].numpy())
            if on_batch is not None:
                on_batch(start // batch_size, {"loss": loss})
        n = max(len(x), 1)
        logs = {"loss": total_loss / n}
        if g.has_correct:
            logs["accuracy"] = total_correct / n
        return logs

    def current_weights(self) -> dict[str, np.ndarray]:
        """Trained weights (numpy copies of the current device buffers)."""
        return {p: self._sets[self._current][p].numpy().copy() for p in self.graphs.params}

    def current_state(self) -> dict[str, np.ndarray]:
        return {s: self._sets[self._current][s].numpy().copy() for s in self.graphs.states}

    def prepare_targets(self, y: np.ndarray, name: str) -> np.ndarray:
        """Targets in the dtype and shape the loss wants; DataError for bad labels."""
        self._compile()
        target = self.graphs.train.value(TARGET)
        y = np.asarray(y)
        if self.loss.sparse_labels:
            if y.dtype.kind == "f" and not np.all(y == np.round(y)):
                raise DataError(f"{name}: {self.loss.name} needs integer class labels")
            y = y.astype(np.int64).reshape(-1)
            width = self._num_classes()
            if width is not None:
                check_labels(y, width, name)
            return y
        check_finite(y, name)
        y = y.astype(np.float32)
        if target.shape is not None and len(target.shape) == 2 and y.ndim == 1:
            y = y.reshape(-1, 1)
        return y

    def _num_classes(self) -> int | None:
        for v in self.graphs.eval.values():
            if v.producer is not None and v.producer.op_type == "SoftmaxCrossEntropyLoss":
                shape = v.producer.inputs[0].shape
                return shape[1] if shape and isinstance(shape[1], int) else None
        return None

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 10, batch_size: int = 32,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None, shuffle: bool = True,
            callbacks: list[Callback] | None = None, keep_best: bool = True) -> History:
        """Train for `epochs`; validate each epoch on `validation_data` if given."""
        if epochs < 1 or batch_size < 1:
            raise DataError(f"epochs ({epochs}) and batch size ({batch_size}) must be >= 1")
        self._compile()
        x = np.asarray(x, dtype=np.float32)
        check_finite(x, "training data")
        y = self.prepare_targets(y, "training data")
        if validation_data is not None:
            xv = np.asarray(validation_data[0], dtype=np.float32)
            check_finite(xv, "validation data")
            yv = self.prepare_targets(validation_data[1], "validation data")
        callbacks = list(callbacks or [])
        history, best = History(), (math.inf, None)
        rng = np.random.default_rng(self.seed)
        self.stop_training = False
        for cb in callbacks:
            cb.set_trainer(self)
            cb.on_train_begin({})
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            on_batch = _batch_hook(callbacks)
            logs = self._run_batches(True, x[order], y[order], batch_size, on_batch)
            if validation_data is not None and len(xv):
                val = self._run_batches(False, xv, yv, max(batch_size, 256))
                logs.update({f"val_{k}": v for k, v in val.items()})
            if not all(math.isfinite(v) for v in logs.values()):
                raise DataError(f"epoch {epoch + 1}: the loss is not finite ({logs['loss']}); "
                                "lower the learning rate or scale the data")
            history.append(logs)
            monitor = logs.get("val_loss", logs["loss"])
            if keep_best and monitor < best[0]:
                best = (monitor, self.current_weights())
                history.best_epoch = epoch + 1
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        self.optimizer_state = self.current_state()
        final = best[1] if keep_best and best[1] is not None else self.current_weights()
        self.model.set_weights(final)
        for p, arr in final.items():
            self._sets[self._current][p].update_inplace(np.ascontiguousarray(arr))
        for cb in callbacks:
            cb.on_train_end(history.to_dict())
        return history

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Loss (and accuracy) of the current weights on (x, y)."""
        self._compile()
        x = np.asarray(x, dtype=np.float32)
        check_finite(x, "evaluation data")
        return self._run_batches(False, x, self.prepare_targets(y, "evaluation data"),
                                 batch_size)


def _batch_hook(callbacks: list[Callback]):
    if not callbacks:
        return None

    def hook(batch: int, logs: dict[str, float]) -> None:
        for cb in callbacks:
            cb.on_batch_end(batch, logs)
    return hook
