"""A whole training job as the CLI runs it: source (recipe or ONNX) + data -> trained model.

Settings come from, in order: command-line options, the recipe's [train]/[data] tables, or
the `irkit.train` metadata that irkit writes into the models it builds; then the defaults.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from irkit.data import Dataset, load_dataset, train_val_split
from irkit.errors import DataError, IrkitError
from irkit.spec import DATA_KEYS, TRAIN_KEYS, Recipe, load_recipe
from irkit.train.callbacks import Callback
from irkit.train.losses import get_loss
from irkit.train.model import ModuleModel, OnnxModel
from irkit.train.optimizers import get_optimizer
from irkit.train.trainer import Trainer


def model_from_recipe(recipe: Recipe, data: Dataset) -> ModuleModel:
    """The recipe's model, sized for `data`, with the metadata irkit needs to resume."""
    model = ModuleModel(recipe.build(), tuple(data.x.shape[1:]), seed=int(recipe.train["seed"]))
    model.metadata = {"irkit.train": json.dumps({**recipe.train, **recipe.data})}
    if recipe.scaling != "none":
        model.metadata.update({"irkit.normalize": "normalize", "irkit.scaling": recipe.scaling,
                               "irkit.frozen": "normalize.shift,normalize.scale"})
    if data.classes:
        model.metadata["irkit.classes"] = ",".join(data.classes)
    return model


def _settings(source: str) -> tuple[Recipe | None, dict[str, Any]]:
    if source.endswith(".onnx"):
        return None, {}
    recipe = load_recipe(source)
    return recipe, {**recipe.train, **recipe.data}


def _onnx_settings(graph) -> dict[str, Any]:
    raw = graph.metadata.get("irkit.train")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}


def _split_names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def prepare(source: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any], Dataset]:
    """Model, merged settings and dataset for a training run."""
    recipe, settings = _settings(source)
    graph, resume = None, None
    if recipe is None:
        graph, resume = _load_onnx(source)
        settings = _onnx_settings(graph)
    merged = {**TRAIN_KEYS, **DATA_KEYS, **settings,
              **{k: v for k, v in options.items() if v is not None}}
    if merged.get("data"):
        merged["dataset"] = merged["data"]
    if not merged.get("dataset"):
        raise DataError("no dataset: pass --data NAME|FILE (bundled: iris, digits)")
    data = load_dataset(merged["dataset"])
    if recipe is not None:
        if options.get("trainable") or options.get("freeze"):
            raise DataError("--trainable/--freeze apply to ONNX models; a recipe trains all")
        model = model_from_recipe(recipe, data)
    else:
        trainable = _split_names(options.get("trainable")) or (resume or {}).get("params")
        model = OnnxModel(graph, trainable, _split_names(options.get("freeze")))
    if resume is not None:
        merged["resume"] = resume
    return model, merged, data


def _load_onnx(path: str):
    """The graph of an ONNX file and, for a training model, its stored training state."""
    from irkit.onnx_io import from_onnx, load, with_dynamic_batch
    from irkit.train.training_model import read_training_model
    found = {}

    def convert(proto):
        proto = with_dynamic_batch(proto)  # training runs other batch sizes than exported
        if not proto.training_info:
            return from_onnx(proto)
        graph, found["resume"] = read_training_model(proto)
        return graph
    graph = load(path, convert)
    return graph, found.get("resume")


def _recorded(s: dict[str, Any]) -> str:
    """The training and data settings as stored in a model's `irkit.train` metadata."""
    return json.dumps({k: s[k] for k in (*TRAIN_KEYS, *DATA_KEYS)})


def check_output_path(path: str) -> None:
    """IrkitError now, before any work, if `path` cannot be written (missing directory)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise IrkitError(f"{path}: the directory {directory} does not exist; create it first")


def _optimizer(s: dict[str, Any], lr: float | None = None):
    """The optimizer the settings name, with their lr (unless `lr`), weight decay and (SGD)
    momentum."""
    opt_args = {"lr": float(s["lr"] if lr is None else lr),
                "weight_decay": float(s.get("weight_decay", 0.0))}
    if s["optimizer"] == "sgd":
        opt_args["momentum"] = float(s.get("momentum", 0.0))
    return get_optimizer(s["optimizer"], **opt_args)


class _Progress(Callback):
    """A progress bar per epoch and one line of figures after it (on stderr)."""

    def __init__(self, epochs: int, batches: int) -> None:
        self.epochs, self.batches, self.bar = epochs, batches, None

    def on_epoch_begin(self, epoch, logs):
        import click
        self.bar = click.progressbar(length=self.batches, label=f"epoch {epoch + 1}/{self.epochs}",
                                     file=sys.stderr)
        self.bar.__enter__()

    def on_batch_end(self, batch, logs):
        self.bar.update(1)

    def on_epoch_end(self, epoch, logs):
        import click
        self.bar.__exit__(None, None, None)
        figures = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        click.echo(f"epoch {epoch + 1}/{self.epochs}  {figures}", err=True)


def run_training(source: str, output: str, progress: bool = True,
                 save_training: str | None = None, **options) -> dict[str, Any]:
    """Train and write the inference model (and, with `save_training`, a training model to
    resume from); returns the history and the final validation figures."""
    check_output_path(output)
    if save_training:
        check_output_path(save_training)
    model, s, data = prepare(source, options)
    x, y = data.x, data.y
    train_idx, val_idx = train_val_split(len(x), float(s["val_split"]), int(s["seed"]), y)
    model.ensure_input(x)
    model.fit_scalers(x[train_idx])
    loss = get_loss(s["loss"])
    resume = s.get("resume") or {}
    optimizer = _optimizer(s, resume.get("lr") if options.get("lr") is None else None)
    trainer = Trainer(model, loss, optimizer, options.get("device") or "cpu", int(s["seed"]))
    trainer.optimizer_state = resume.get("state") or None
    trainer.steps_done = resume.get("steps_done", 0)
    first = resume.get("epochs_done", 0)
    epochs, batch = first + int(s["epochs"]), int(s["batch_size"])
    batches = -(-len(train_idx) // batch)
    callbacks = [_Progress(epochs, batches)] if progress else []
    validation = (x[val_idx], y[val_idx]) if len(val_idx) else None
    history = trainer.fit(x[train_idx], y[train_idx], epochs, batch, validation, True, callbacks,
                          initial_epoch=first)
    if save_training:
        _write_training_model(model, trainer, loss, optimizer, epochs, s, save_training)
    final = trainer.evaluate(*validation) if validation else trainer.evaluate(
        x[train_idx], y[train_idx])
    prefix = "val_" if validation else ""
    graph = model.build(training=False)
    graph.metadata["irkit.train"] = _recorded(s)
    from irkit.onnx_io import save
    save(graph, output)
    return {"source": source, "output": output, "dataset": s["dataset"],
            "device": trainer.device, "epochs_run": len(history.history["loss"]),
            "best_epoch": history.best_epoch, "history": history.history,
            "final": {f"{prefix}{k}": v for k, v in final.items()},
            "train_samples": int(len(train_idx)), "val_samples": int(len(val_idx))}


def _write_training_model(model, trainer, loss, optimizer, epochs_done: int, s: dict,
                          path: str) -> None:
    """The last weights (not the best), optimizer state and step count, to resume from."""
    from irkit.train.training_model import to_training_model
    best = model.weights()
    best = {k: np.array(v) for k, v in best.items()}
    model.set_weights(trainer.last_weights)
    model.metadata["irkit.train"] = _recorded(s)
    proto = to_training_model(model, loss, optimizer, trainer.optimizer_state,
                              trainer.steps_done, epochs_done)
    model.set_weights(best)
    from irkit.safe_io import write_atomic
    write_atomic(path, proto.SerializeToString())


def export_graph(source: str, training: bool, data: str | None, loss: str | None,
                 optimizer: str | None):
    """The inference graph, or the train-step graph, of a recipe or ONNX model."""
    options = {"data": data, "loss": loss, "optimizer": optimizer}
    if source.endswith(".onnx") and not training:
        from irkit.onnx_io import load
        return load(source)
    model, s, _ = prepare(source, options)
    if not training:
        return model.build(training=False)
    from irkit.train.step import build_step_graphs
    graphs = build_step_graphs(model, get_loss(s["loss"]), _optimizer(s))
    graphs.train.metadata = dict(model.metadata)
    return graphs.train


def export_training_model(source: str, data: str | None, loss: str | None,
                          optimizer: str | None, opset: int = 17):
    """A ModelProto with training_info for a recipe or ONNX model (stored state, or fresh)."""
    from irkit.train.training_model import to_training_model
    model, s, _ = prepare(source, {"data": data, "loss": loss, "optimizer": optimizer})
    resume = s.get("resume") or {}
    model.metadata["irkit.train"] = _recorded(s)
    return to_training_model(model, get_loss(s["loss"]), _optimizer(s, resume.get("lr")),
                             resume.get("state"), resume.get("steps_done", 0),
                             resume.get("epochs_done", 0), opset)


__all__ = ["check_output_path", "export_graph", "export_training_model", "model_from_recipe",
           "prepare", "run_training"]
