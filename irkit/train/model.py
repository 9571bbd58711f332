"""`irkit.Model`: layers (or an imported graph) combined with a trainer, shaped like Keras.

    model = irkit.Model(nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(3)]))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", lr=0.01,
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=100, validation_split=0.2)
    model.evaluate(x, y); model.predict(x); model.summary(); model.save("m.onnx")

One `fit` path serves Python and the command line: split (seeded, stratified), adapt the
scaling layers on the training part, build the step graphs, train through a StepRunner.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from irkit import distributed
from irkit.data import train_val_split
from irkit.errors import DataError, ShapeError, SpecError
from irkit.ir import Graph
from irkit.nn.module import Module
from irkit.runtimes import GivenState, get_runtime, make_step_runner, read_only, runtime_names
from irkit.signature import LR, META_BEST, META_SETTINGS, TARGET
from irkit.train.callbacks import Callback, EarlyStopping
from irkit.train.inputs import Inputs, as_inputs, sample_count, take
from irkit.train.losses import get_loss
from irkit.train.metrics import epoch_metrics, metric_logs, resolve_metrics
from irkit.train.optimizers import Optimizer, check_registered, optimizer_from
from irkit.train.progress import progress_callback
from irkit.train.settings import DEFAULTS, Settings, check_same_step, resolve
from irkit.train.sources import ModuleSource, OnnxSource, split_input
from irkit.train.step import StepGraphs, UpdateRule, build_eval_graph, build_step_graphs
from irkit.train.trainer import History, Trainer


class Model:
    """A trainable model: compile, fit, evaluate, predict, export, save, summary."""

    def __init__(self, module: Module | Graph | ModuleSource | OnnxSource,
                 input_shape: tuple[int, ...] | None = None, name: str | None = None) -> None:
        if isinstance(module, Module):
            source = ModuleSource(module, tuple(input_shape) if input_shape else None)
        elif isinstance(module, Graph):  # the caller's arrays: a runner copies them
            source = OnnxSource(module)
            source.set_weights({k: read_only(v) for k, v in source.weights().items()})
        elif isinstance(module, (ModuleSource, OnnxSource)):
            source = module
        else:
            raise ShapeError(f"Model wraps a layer (nn.Module) or an imported Graph, not "
                             f"{type(module).__name__}")
        self.source = source
        self.name = name or source.name
        self.settings: Settings = DEFAULTS            # compile's (the base of each fit)
        self.metrics: list = []                       # compile's, beyond accuracy
        self.fit_settings: Settings | None = None      # those of the last fit
        self.stop_training = False
        self._compiled = False
        self._runtime = "onnxruntime"
        self._trainer: Trainer | None = None
        self.history: History | None = None
        self.last_validation = None     # the validation part of the last fit
        self.last_split = (0, 0)        # its training and validation sample counts
        self._graphs: StepGraphs | None = None
        self._runner = None
        self._resume = None          # a TrainingFile when loaded from one
        self.files_read: dict[str, str] = {}  # external data file -> the model file it was in
        self._predictors: dict[str, Any] = {}

    @property
    def epochs_done(self) -> int:
        """Epochs a loaded training file has done (where `fit` continues); 0 otherwise."""
        return self._resume.epochs_done if self._resume is not None else 0

    @property
    def layers(self) -> list[Module]:
        """The layers of a layer model (Keras' `model.layers`)."""
        module = getattr(self.source, "module", None)
        return list(getattr(module, "layers", [module] if module is not None else []))

    # ---- compile ---------------------------------------------------------------------------
    def compile(self, optimizer: str | Optimizer | None = None, loss: str | None = None,
                metrics=None, *,
                lr: float | None = None, learning_rate: float | None = None,
                settings: Settings | None = None, runtime: str = "onnxruntime",
                **options: Any) -> Model:
        """Choose optimizer (a name in any case, or an instance such as `Adam(0.01)`; default
        adam), loss (default sparse_categorical_crossentropy), runtime (irkit.runtimes's
        registry; "reference" runs numpy end to end) and settings (lr or learning_rate, the
        optimizer's hyperparameters such as momentum, device, seed, ...; `settings` is the
        layer under them; defaults: irkit.train.settings). `metrics`: names, Metrics or
        functions (irkit.train.metrics: top_k_accuracy, mae, mse, ...); accuracy is reported
        for every classification loss."""
        if runtime not in runtime_names():
            raise SpecError(f"unknown runtime {runtime!r}; use one of "
                            f"{', '.join(runtime_names())}")
        args = {"optimizer": optimizer, "loss": loss,
                "lr": learning_rate if lr is None else lr, **options}
        if isinstance(optimizer, Optimizer):
            check_registered(optimizer)
            args.update({"optimizer": optimizer.name, **optimizer.hyperparameters(), **options})
            args["lr"] = optimizer.learning_rate if args["lr"] is None else args["lr"]
        self.settings = resolve(settings.as_dict() if settings else None, args,
                                names=("settings", "compile()"))
        self.metrics = resolve_metrics(metrics, get_loss(self.settings.loss).classification)
        self._runtime = runtime
        self._compiled = True
        self._graphs = self._runner = self._trainer = None
        self._predictors = {}
        return self

    # ---- fit -------------------------------------------------------------------------------
    def fit(self, x, y, batch_size: int | None = None, epochs: int | None = None,
            verbose: int | str = "auto", callbacks: list[Callback] | None = None,
            validation_split: float | None = None, validation_data=None, shuffle: bool = True,
            initial_epoch: int | None = None, seed: int | None = None,
            keep_best: bool | None = None, **settings: Any) -> History:
        """Train to epoch `epochs`, validating each epoch on `validation_data` or on a held-out
        `validation_split` (seeded, stratified; default 0.2). Scaling layers adapt on the
        training part. Keeps the best epoch's weights (`keep_best`, by `monitor`); with
        `patience` > 0 stops early. `verbose`: 0 silent, 1 progress bar, 2 a line per
        epoch, "auto" 1. Resumes a loaded training file (initial_epoch = its epochs)."""
        if not self._compiled:
            self.compile()
        s = self.settings.replace(batch_size=batch_size, epochs=epochs, val_split=(
            0.0 if validation_data is not None else validation_split), seed=seed,
            keep_best=keep_best, **settings)
        if y is not None:
            y = get_loss(s.loss).labels(np.asarray(y), "training data")
        if validation_data is not None:
            validation_data = (self._inputs(validation_data[0], "validation data"),
                               validation_data[1])
        x, y, val = self._split(self._inputs(x, "training data"), y, validation_data, s)
        extra = epoch_metrics(self, self.metrics, (x, y), val)
        self._build(x, s, runner=True)
        if "lr" in settings and self._resume is None:
            self.learning_rate = s.lr
        staged = self._stage(x, y, "training data")
        val = self._stage(val[0], val[1], "validation data") if val is not None else None
        first = self._resume.epochs_done if self._resume and initial_epoch is None else (
            initial_epoch or 0)
        if s.epochs <= first:
            raise DataError(f"epochs ({s.epochs}) must be more than the epochs done ({first})")
        cbs = self._callbacks(callbacks, s, verbose, sample_count(x))
        self._trainer = Trainer(self._runner, self._graphs.has_correct, self._weight_names(),
                                self)
        self.fit_settings = s  # this fit's, already for its callbacks (keep_best, monitor)
        try:
            self.history = self._trainer.fit(
                staged, val, s.epochs, s.batch_size, shuffle=shuffle, seed=s.seed,
                initial_epoch=first, callbacks=cbs, history=self._continued_history(s),
                monitor=s.monitor, keep_best=s.keep_best, metrics=extra)
            self._resume = None  # continued once (as in Keras); its state goes before the pull
        finally:  # also when interrupted: the source's arrays may be the runner's memory
            self._pull_weights()
        return self.history

    def _split(self, x: Inputs, y, validation_data, s: Settings):
        """(x, y, validation or None): `validation_data`, else a seeded split (stratified by
        one class label per sample); y may be None (a loss that reads no targets)."""
        y = None if y is None else np.asarray(y)
        n = sample_count(x)
        if y is not None and n != len(y):
            raise DataError(f"x has {n} samples, y has {len(y)}; they must match")
        if validation_data is None and s.val_split:
            labels = y if y is not None and y.ndim == 1 else None
            tr, va = train_val_split(n, s.val_split, s.seed, labels)
            validation_data = (take(x, va), None if y is None else y[va])
            x, y = take(x, tr), None if y is None else y[tr]
        if validation_data is not None and not sample_count(validation_data[0]):
            validation_data = None
        self.last_validation = validation_data
        self.last_split = (sample_count(x),
                           sample_count(validation_data[0]) if validation_data else 0)
        return x, y, validation_data

    def prepare(self, x, runner: bool = False) -> StepGraphs:
        """Build the step graphs for data like `x` (scaling adapted on it unless adapted
        already) and, with `runner`, the step runner; returns the graphs (e.g. to export)."""
        if not self._compiled:
            self.compile()
        self._build(self._inputs(x, "data"), self.settings, runner)
        return self._graphs

    def _build(self, x: Inputs, s: Settings, runner: bool) -> None:
        """Input shape; once: scaling adapted on `x` (the training part), the step graphs,
        and with `runner` the step runner, its state initial or resumed."""
        self.source.ensure_input(x)
        if self._graphs is None:
            if isinstance(self.source, ModuleSource):
                self.source.seed = s.seed
            if self._resume is None:
                self.source.adapt(x, self._compile_graph)
            self._graphs = self._step_graphs(s)
        if not runner or self._runner is not None:
            return
        g = self._graphs
        saved = self._resume.state if self._resume else None
        state = g.initial_state(self.source.weights(), s.lr, saved)
        if saved is not None and s.lr != self._resume.state[LR]:
            state[LR] = np.array(s.lr, np.float32)  # an explicit rate wins over the stored one
        runtime = distributed.step_runtime(self._runtime)  # "mpi" under an MPI launcher
        self._runner = make_step_runner(runtime, g, GivenState(state), s)  # no second copy
        self._pull_weights()  # the source holds the runner's arrays, or its own if copied

    def _step_graphs(self, s: Settings) -> StepGraphs:
        loss = get_loss(s.loss)
        if self._resume is not None:
            r = self._resume
            check_same_step(r.settings, s)
            evaluation = build_eval_graph(r.inference.copy(), r.params + r.buffers, loss)
            return StepGraphs.of(r.train, evaluation, r.params, r.buffers, r.slots,
                                 optimizer_from(s))
        graphs = build_step_graphs(self.source, loss, optimizer_from(s),
                                   rule=UpdateRule.of(s))
        if s.recompute != "none":  # gradient checkpointing: recompute instead of keeping
            from irkit.passes import apply_checkpointing
            apply_checkpointing(graphs.train, s.recompute, s.batch_size)
        return graphs

    def _inputs(self, x, what: str) -> Inputs:
        """Raw data as the model's inputs (irkit.train.inputs: shapes kept, dtypes the
        inputs')."""
        return as_inputs(x, self.source.input_specs(), what)

    def _stage(self, x: Inputs, y, name: str):
        """Inputs (checked by as_inputs, and against the built input shape: validation and
        evaluation data as well) and targets placed in the runner."""
        try:
            self.source.ensure_input(x)
        except DataError as e:
            raise DataError(f"{name}: {e}") from None
        return self._runner.stage(x[0] if len(x) == 1 else x, self._targets(y, name))

    def _callbacks(self, callbacks, s: Settings, verbose, n: int) -> list:
        cbs = list(callbacks or [])
        if s.patience:
            cbs.append(EarlyStopping(s.monitor, s.patience, s.min_delta))
        level = 1 if verbose == "auto" else int(verbose)
        level = level if distributed.is_root() else 0  # one progress report per job
        if level:
            cbs.append(progress_callback(s.epochs, -(-n // s.batch_size), level))
        for cb in cbs:
            cb.set_model(self)
        return cbs

    def _continued_history(self, s: Settings) -> History | None:
        if self._resume is None or not self._resume.history:
            return None
        history = History.from_dict(self._resume.history)
        if self._resume.best_weights and s.keep_best:
            self._trainer.keep_as_best(self._resume.best_weights)
        elif history.best_epoch is not None and s.keep_best:
            # the file's last epoch was its best: the best so far is the state the runner was
            # loaded with, the file's own arrays (held anyway: no copy of the weights), the
            # step's weights only (a Normalize layer's shift is no step state)
            self._trainer.keep_as_best({n: self._resume.state[n] for n in self._weight_names()})
        return history

    # ---- targets ---------------------------------------------------------------------------
    def _targets(self, y, name: str) -> np.ndarray | None:
        """Targets in the dtype and shape the loss wants (the loss checks them); None for a
        loss that reads none (`output:NAME`)."""
        loss = get_loss(self.settings.loss)
        if not self._graphs.train.has_value(TARGET):
            if y is not None:
                raise DataError(f"{name}: the loss {loss.name} reads no targets; give y=None")
            return None
        if y is None:
            raise DataError(f"{name}: the loss {loss.name} needs targets y")
        shape = self._graphs.train.value(TARGET).shape
        return loss.targets(np.asarray(y), shape, self._num_classes(), name)

    def _num_classes(self) -> int | None:
        for v in self._graphs.eval.values():
            if v.producer is not None and v.producer.op_type == "SoftmaxCrossEntropyLoss":
                shape = v.producer.inputs[0].shape
                return shape[1] if shape and isinstance(shape[1], int) else None
        return None

    # ---- weights and learning rate ------------------------------------------------------------
    def _weight_names(self) -> list[str]:
        return self._graphs.params + self._graphs.buffers

    def get_weights(self) -> dict[str, np.ndarray]:
        """Every weight (trained, fixed and running statistics) by graph name, in the
        model's order (copies)."""
        weights = {k: np.array(v) for k, v in self.source.weights().items()}
        if self._runner is not None:
            weights.update(self._runner.read_state(self._weight_names()))
        return weights

    def _pull_weights(self) -> None:
        """The one point where weights come back from the runner (their owner while it
        exists) into the source: views of its arrays (`state_views`: no copy; later steps
        rewrite them) or else copies; compiled predictors made before are dropped."""
        if self._runner is None:
            return
        views = self._runner.state_views() if hasattr(self._runner, "state_views") else None
        for name in self._weight_names():  # copies one at a time: the old goes as the new comes
            self.source.set_weights({name: views[name]} if views is not None
                                    else self._runner.read_state([name]))
        self._predictors = {}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Set weights by graph name (as get_weights returns them)."""
        unknown = [k for k in weights if k not in self.source.weights()]
        if unknown:
            raise ShapeError(f"no weights named {unknown}; see model.get_weights()")
        self.source.set_weights({k: read_only(v) for k, v in weights.items()})
        if self._trainer is not None:
            self._trainer.before_weights_change()
        if self._runner is not None:
            self._runner.load_state({k: v for k, v in weights.items()
                                     if k in set(self._weight_names())})
        self._predictors = {}

    @property
    def learning_rate(self) -> float:
        """The current learning rate (optimizer state; settable, e.g. by callbacks)."""
        if self._runner is None:
            return self.settings.lr
        return float(self._runner.read_state([LR])[LR])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if not 0 <= value < float("inf"):
            raise SpecError(f"learning rate must be a finite number >= 0, got {value}")
        if self._runner is None:
            self.settings = self.settings.replace(lr=float(value))
        else:
            self._runner.load_state({LR: np.array(value, np.float32)})

    # ---- evaluate, predict -----------------------------------------------------------------------
    def evaluate(self, x, y, batch_size: int = 256, verbose: int = 0) -> dict[str, float]:
        """Loss (accuracy, compile's metrics) of the current weights on (x, y)."""
        if self._runner is None:
            if not self._compiled:
                raise ShapeError(f"{self.name}: call compile() (or fit) before evaluate()")
            self._build(self._inputs(x, "evaluation data"), self.settings, runner=True)
        from irkit.train.trainer import logs_of
        staged = self._stage(self._inputs(x, "evaluation data"), y, "evaluation data")
        logs = logs_of(self._runner.evaluate(staged, batch_size), self._graphs.has_correct)
        return {**logs, **metric_logs(self, self.metrics, x, y)}

    def predict(self, x, batch_size: int | None = None, device: str | None = None,
                verbose: int = 0, probabilities: bool = False) -> np.ndarray:
        """Model outputs for raw inputs x, as Keras gives them (logits when the last layer
        has no softmax); `probabilities=True`: class probabilities, what `irkit predict`
        writes for the exported model. One compiled graph cached per device."""
        x = self._inputs(x, "prediction data")
        self.source.ensure_input(x)
        device = device or self.settings.device
        run = self._predictors.get(device)
        if run is None:
            run = self._predictors[device] = self._compile_graph(self.to_graph(), device)
        names = [n for n, _ in self.source.input_specs()]
        size = batch_size or max(sample_count(x), 1)
        out = np.concatenate([run(dict(zip(names, take(x, slice(i, i + size)))))[0]
                              for i in range(0, sample_count(x), size)]
                             ) if sample_count(x) > size else run(dict(zip(names, x)))[0]
        if not probabilities:
            return out
        from irkit.train.scores import probabilities as probs
        from irkit.train.scores import scores_kind
        if not get_loss(self.settings.loss).classification:
            raise SpecError(f"predict(probabilities=True) is for classifiers; the loss "
                            f"{self.settings.loss!r} regresses (use predict(x))")
        return probs(out, scores_kind(self.source.build(training=False)))

    def _compile_graph(self, graph: Graph, device: str = "cpu"):
        """`graph` compiled by the runtime `compile` chose (the only way Model runs a graph
        outside its step runner: predictions, the scaling layers' adapt)."""
        return get_runtime(self._runtime, device).compile(graph)

    # ---- graphs and files ----------------------------------------------------------------------
    def to_graph(self) -> Graph:
        """The inference graph with the current weights (scaling in, dropout out)."""
        self._pull_weights()
        return self._inference_graph()

    def _inference_graph(self) -> Graph:
        """The source's inference graph with the settings and best epoch in its metadata."""
        graph = self.source.build(training=False)
        graph.metadata[META_SETTINGS] = (self.fit_settings or self.settings).to_json()
        if self.history is not None and self.history.best_epoch is not None:
            graph.metadata[META_BEST] = json.dumps({"epoch": self.history.best_epoch,
                                                    self.history.monitor:
                                                    self.history.best_value})
        return graph

    def export(self, path: str, opset: int | None = None):
        """Write the inference model as ONNX (atomically); returns the ModelProto."""
        from irkit.onnx_io import check_model_outputs, save
        check_model_outputs({"Model.export": path}, [], self.files_read)
        return save(self.to_graph(), path, opset)

    def save(self, path: str, opset: int | None = None):
        """Write a training file: the inference model plus training_info (the train step in
        training mode, optimizer state, step count, history). `irkit.load_model` reads it
        back and `fit` continues the same run. Before training it is the fresh state. Weights
        above the external-data threshold go to PATH.data beside it. Returns the model as
        written."""
        import onnx

        from irkit.onnx_io import check_model_outputs
        from irkit.safe_io import write_all_atomic
        check_model_outputs({"Model.save": path}, [], self.files_read)  # its source's data
        files = self.training_files(path, opset=opset)  # PATH.data beside it when large
        write_all_atomic(files)
        return onnx.ModelProto.FromString(files[-1][1])

    def training_proto(self, opset: int | None = None):
        """The training file as a ModelProto (see `save`): the last state of the run (so a
        resume continues it) and, when the best epoch's weights were restored, those as
        `best/<name>`."""
        from irkit.train.training_model import to_training_model
        return to_training_model(*self._training_parts(), opset)

    def training_files(self, path: str, metadata: dict[str, str] | None = None,
                       opset: int | None = None) -> list:
        """The training file (`training_proto`) as the files to write at `path`
        (`safe_io.write_all_atomic`): above the external-data threshold, its large tensors
        go to PATH.data, streamed (`training_model.training_model_files`). `metadata` is
        added to the file's."""
        from irkit.train.training_model import training_model_files
        inference, *rest = self._training_parts()
        inference.metadata.update(metadata or {})
        return training_model_files(path, inference, *rest, opset)

    def _training_parts(self) -> tuple:
        """(inference graph, train graph, state, params, epochs, history, best weights) of
        the training file."""
        if self._runner is None:
            raise ShapeError(f"{self.name}: compile and fit (or evaluate) before save(); for an "
                             "untrained model use export()")
        g, names = self._graphs, self._weight_names()
        # views of the runner's state where it has them: the file is written before any step
        views = getattr(self._runner, "state_views", None)
        state = views() if views is not None else self._runner.read_state()
        current = {k: state[k] for k in names}
        trainer = self._trainer
        last = trainer.last_weights if trainer is not None else None
        best = None
        if last is not None and _differ(last, current, names):
            best, state = current, {**state, **last}
        elif last is None and trainer is not None and not trainer.best_is_current \
                and trainer.best_weights is not None \
                and _differ(trainer.best_weights, current, names):
            best = trainer.best_weights  # during training (a checkpoint): the best so far
        self.source.set_weights({k: state[k] for k in names})  # the file holds the last state
        inference = self._inference_graph()
        self.source.set_weights(current)  # the runner's current weights (see _pull_weights)
        history = self.history.to_dict() if self.history else {}
        epochs = self.history.epochs if self.history else 0
        return inference, g.train, state, g.params, epochs, history, best

    def count_params(self) -> int:
        """Number of weights that train (torch's parameter count for a torch export); the
        fixed ones (constants, running statistics, a scaling layer) are in `summary`."""
        weights = self.source.weights()
        return int(sum(np.size(weights[n]) for n in self.source.trainable()))

    def summary(self, print_fn=print) -> str | None:
        """Print a table of the weights (name, shape, count, trainable) and the totals, and
        return None (as Keras does, so a notebook shows it once); `print_fn=None` returns the
        text instead of printing it."""
        from irkit.train.display import summary_text
        text = summary_text(self)
        if print_fn is None:
            return text
        print_fn(text)
        return None

    def __repr__(self) -> str:
        from irkit.train.display import model_repr
        return model_repr(self)

    def _repr_html_(self) -> str:
        """Jupyter's display: the summary as a table."""
        from irkit.train.display import model_html
        return model_html(self)


class Sequential(Model):
    """`irkit.Sequential([...])`: a Model of layers applied in order (Keras' Sequential)."""

    def __init__(self, layers: list[Module], name: str | None = None,
                 input_shape: tuple[int, ...] | None = None) -> None:
        """`layers` may start with `irkit.Input(shape)` (Keras' `keras.Input`): `shape` is
        one sample's, as `input_shape` is; a leading None or named batch dim is dropped."""
        from irkit.nn.module import Sequential as Layers
        layers, input_shape = split_input(list(layers), input_shape)
        super().__init__(Layers(layers, name=name), input_shape, name)


def _differ(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: list[str]) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in names)
