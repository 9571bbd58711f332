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
from irkit.runtimes.onnxruntime import make_session, ortvalue, resolve_device
from irkit.train.callbacks import Callback
from irkit.train.losses import Loss
from irkit.train.optimizers import Optimizer
from irkit.train.step import CORRECT, LOSS, LR, STEP, TARGET, StepGraphs, build_step_graphs

# batch size x trainable weights up to which a step runs on one intra-op thread: there a
# thread pool's hand-offs cost more than they save (measured on a 2-core CPU: up to 2**19,
# one thread is as fast or faster; above, the pool wins)
TINY_STEP = 2 ** 19


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
                 seed: int = 0, threads: int | None = None) -> None:
        """`threads`: onnxruntime intra-op threads; None: 1 for tiny steps (batch size x
        trainable weights <= TINY_STEP), else onnxruntime's default (one per physical core)."""
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.device = resolve_device(device)
        self.seed = seed
        self.threads = threads
        self.session_threads: int | None = None  # what the sessions got (None: ORT default)
        self.lr = float(optimizer.lr)
        self.stop_training = False
        self.steps_done = 0
        self.graphs: StepGraphs | None = None
        self.optimizer_state: dict[str, np.ndarray] | None = None

    # ---- set-up ---------------------------------------------------------------------------
    def _compile(self, batch_size: int | None = None) -> None:
        if self.graphs is not None:
            return
        self.graphs = g = build_step_graphs(self.model, self.loss, self.optimizer)
        weights = self.model.weights()
        self.session_threads = self.threads or _threads_for(weights, g.params, batch_size)
        self.train_session = make_session(to_onnx(g.train).SerializeToString(), self.device,
                                          self.session_threads)
        self.eval_session = make_session(to_onnx(g.eval).SerializeToString(), self.device,
                                         self.session_threads)
        state = self.optimizer_state or {f"{s}/{p}": a for p in g.params
                                         for s, a in self.optimizer.init_state(weights[p]).items()}
        values = {**{p: weights[p] for p in g.params + g.buffers}, **state}
        # each set owns a copy: on CPU an OrtValue shares its numpy array's memory, and sets
        # that alias each other (or the model's arrays) would update weights in place while
        # the step still reads them
        self._sets = [{k: ortvalue(np.array(v, copy=True), self.device) for k, v in values.items()}
                      for _ in range(2)]
        # lr, step, loss and correct are bound to these host numpy scalars (by address), so a
        # step writes and reads them as numpy values instead of making or copying OrtValues
        self._host = {n: np.zeros((), np.float32) for n in (LR, STEP, LOSS, CORRECT)}
        self._target_dtype = self.loss.target_dtype()
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
            for k in (LR, STEP):
                io.bind_input(k, "cpu", 0, np.float32, [], self._host[k].ctypes.data)
            for k, v in self._sets[dst].items():
                io.bind_ortvalue_output(f"next/{k}", v)
        for o in session.get_outputs():
            if o.name in (LOSS, CORRECT):
                io.bind_output(o.name, "cpu", 0, np.float32, [], self._host[o.name].ctypes.data)
        return io

    # ---- running --------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on one batch; returns its loss (a Python float).

        `x` float32 samples, `y` targets as `prepare_targets` returns them (not re-checked
        here: this is the inner loop). The weights stay in the device buffers; read them
        with `current_weights()`. Uses `self.lr` and counts `steps_done`, as `fit` does.
        """
        self._compile(len(x))
        return self._step(np.ascontiguousarray(x, np.float32),
                          np.ascontiguousarray(y, self._target_dtype))

    def _step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        io, host = self._train_io[self._current], self._host
        self.steps_done += 1
        host[LR][()] = self.lr
        host[STEP][()] = self.steps_done
        io.bind_cpu_input(self.graphs.input_name, xb)
        io.bind_cpu_input(TARGET, yb)
        self.train_session.run_with_iobinding(io)
        self._current = 1 - self._current
        return float(host[LOSS])

    def _evaluate_batch(self, xb: np.ndarray, yb: np.ndarray) -> float:
        io = self._eval_io[self._current]
        io.bind_cpu_input(self.graphs.input_name, xb)
        io.bind_cpu_input(TARGET, yb)
        self.eval_session.run_with_iobinding(io)
        return float(self._host[LOSS])

    def _run_batches(self, training: bool, x: np.ndarray, y: np.ndarray, batch_size: int,
                     on_batch=None) -> dict[str, float]:
        g, correct = self.graphs, self._host[CORRECT]
        run = self._step if training else self._evaluate_batch
        total_loss, total_correct = 0.0, 0.0
        for start in range(0, len(x), batch_size):
            xb = np.ascontiguousarray(x[start:start + batch_size])
            yb = np.ascontiguousarray(y[start:start + batch_size])
            loss = run(xb, yb)
            total_loss += loss * len(xb)
            if g.has_correct:
                total_correct += float(correct)
            if on_batch is not None:
                on_batch(start // batch_size, {"loss": loss})
        n = max(len(x), 1)
        logs = {"loss": total_loss / n}
        if g.has_correct:
            logs["accuracy"] = total_correct / n
        return logs

    def current_weights(self) -> dict[str, np.ndarray]:
        """Trained weights and running statistics (numpy copies of the current device buffers)."""
        names = self.graphs.params + self.graphs.buffers
        return {p: self._sets[self._current][p].numpy().copy() for p in names}

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
        _check_target_shape(y, target.shape, self.loss.name, name)
        return y

    def _num_classes(self) -> int | None:
        for v in self.graphs.eval.values():
            if v.producer is not None and v.producer.op_type == "SoftmaxCrossEntropyLoss":
                shape = v.producer.inputs[0].shape
                return shape[1] if shape and isinstance(shape[1], int) else None
        return None

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 10, batch_size: int = 32,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None, shuffle: bool = True,
            callbacks: list[Callback] | None = None, keep_best: bool = True,
            initial_epoch: int = 0) -> History:
        """Train up to epoch `epochs`, validating each epoch on `validation_data` if given.

        `initial_epoch` (as in Keras) resumes a run: epochs before it count as done, and the
        shuffling generator is advanced past them, so a resumed run repeats the batches of an
        uninterrupted one."""
        if epochs < 1 or batch_size < 1:
            raise DataError(f"epochs ({epochs}) and batch size ({batch_size}) must be >= 1")
        self._compile(batch_size)
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
        for _ in range(initial_epoch if shuffle else 0):
            rng.permutation(len(x))
        for epoch in range(initial_epoch, epochs):
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
        self.last_weights = self.current_weights()  # where training continues from
        final = best[1] if keep_best and best[1] is not None else self.current_weights()
        self.model.set_weights(final)
        for p, arr in final.items():
            self._sets[self._current][p].update_inplace(np.ascontiguousarray(arr))
        for cb in callbacks:
            cb.on_train_end(history.to_dict())
        return history

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Loss (and accuracy) of the current weights on (x, y)."""
        self._compile(batch_size)
        x = np.asarray(x, dtype=np.float32)
        check_finite(x, "evaluation data")
        return self._run_batches(False, x, self.prepare_targets(y, "evaluation data"),
                                 batch_size)


def _check_target_shape(y: np.ndarray, want, loss: str, name: str) -> None:
    """DataError unless each target has the shape of one model output (else ORT fails later)."""
    if want is None:
        return
    fixed = [d if isinstance(d, int) else None for d in want[1:]]
    if y.ndim == len(want) and all(d in (None, n) for d, n in zip(fixed, y.shape[1:],
                                                                  strict=True)):
        return
    hint = (" (class labels need sparse_categorical_crossentropy, or one-hot targets)"
            if loss != "mse" else "")
    raise DataError(f"{name}: each target has shape {tuple(y.shape[1:])}, the model's output "
                    f"per sample is {tuple(want[1:])}; {loss} needs targets shaped like the "
                    f"output{hint}")


def _threads_for(weights: dict[str, np.ndarray], params: list[str],
                 batch_size: int | None) -> int | None:
    """1 intra-op thread for a tiny step (see TINY_STEP); None (onnxruntime's default) else."""
    if batch_size is None:
        return None
    return 1 if batch_size * sum(weights[p].size for p in params) <= TINY_STEP else None


def _batch_hook(callbacks: list[Callback]):
    if not callbacks:
        return None

    def hook(batch: int, logs: dict[str, float]) -> None:
        for cb in callbacks:
            cb.on_batch_end(batch, logs)
    return hook
