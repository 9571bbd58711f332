"""The command line's training job: source (recipe or ONNX) + data -> trained model files.

Settings are resolved once (irkit.train.settings): defaults < recipe < the settings a model file
records < command-line options. The job then runs the same `Model.fit` as Python does. A
dataset path stored in a model file is never opened: an ONNX source needs `--data`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from irkit import distributed
from irkit.cli.app import check_onnx_outputs
from irkit.data import Dataset, load_dataset
from irkit.errors import DataError, IrkitError
from irkit.safe_io import limit
from irkit.signature import (
    META_CLASSES,
    META_FROZEN,
    META_NORMALIZE,
    META_PAIR,
    META_SCALING,
    META_SETTINGS,
)
from irkit.spec import Recipe, load_recipe
from irkit.train.callbacks import TrainingCheckpoint
from irkit.train.inputs import as_inputs, first_rows
from irkit.train.loading import load_model
from irkit.train.model import Model
from irkit.train.plot import plot_format, plot_png
from irkit.train.report import overfitting_report
from irkit.train.settings import Settings, from_json, resolve
from irkit.train.sources import ModuleSource


def is_onnx(path: str) -> bool:
    return path.endswith(".onnx")


def model_from_recipe(recipe: Recipe, data: Dataset, settings: Settings) -> Model:
    """The recipe's model, sized for `data`, with the metadata irkit needs to resume."""
    if isinstance(data.x, dict):
        raise DataError(f"{data.name}: a recipe's model has one input; give its features as "
                        f"one array x, not {', '.join(data.x)}")
    source = ModuleSource(recipe.build(), tuple(data.x.shape[1:]), seed=settings.seed,
                          weight_budget=limit("tensor_bytes"))  # a recipe is a stranger's file
    if recipe.scaling != "none":
        source.metadata.update({META_NORMALIZE: "normalize", META_SCALING: recipe.scaling,
                                META_FROZEN: "normalize.shift,normalize.scale"})
    if data.classes:
        source.metadata[META_CLASSES] = ",".join(data.classes)
    return Model(source, name=recipe.name)


def _dataset_for(settings: Settings, stored: str | None = None) -> Dataset:
    """The dataset named by --data, or by the recipe (paths relative to the recipe file).
    A path recorded in a model file is only mentioned, never opened."""
    name = settings.dataset
    if name is None:
        hint = f" (it was trained on {stored!r})" if stored else ""
        from irkit.data import dataset_names
        raise DataError(f"no dataset: pass --data NAME|FILE{hint}; bundled: "
                        f"{', '.join(dataset_names())}")
    return load_dataset(name, label_column=settings.label_column)


# options that choose the model's source, not settings (load_model's arguments)
SOURCE_OPTIONS = ("trainable", "freeze", "batchnorm", "data")


def prepare(source: str, options: dict[str, Any]) -> tuple[Model, Settings, Dataset]:
    """Model, resolved settings and dataset of a training run."""
    cli = {k: v for k, v in options.items() if k not in SOURCE_OPTIONS}
    cli["dataset"] = options.get("data")
    if not is_onnx(source):
        if options.get("trainable") or options.get("freeze"):
            raise DataError("--trainable/--freeze apply to ONNX models; a recipe trains all")
        if options.get("batchnorm"):
            raise DataError("--batchnorm applies to ONNX models; a recipe's BatchNorm layers "
                            "train on batch statistics")
        recipe = load_recipe(source)
        layers = [recipe.settings(), cli]
        s = resolve(*layers, names=(recipe.source, "command line"))
        data = _dataset_for(s)
        model = model_from_recipe(recipe, data, s)
        model.compile(settings=s)
        return model, s, data
    model = _load_onnx_model(source, options)
    # a training file's settings (load_model resolved them, with its stored learning rate)
    saved = model.settings.as_dict() if model.epochs_done else from_json(
        model.source.metadata.get(META_SETTINGS))
    stored = saved.pop("dataset", None)
    s = resolve(saved, cli, names=(f"{source} settings", "command line"))
    data = _dataset_for(s, stored)
    model.compile(settings=s)
    _check_targets(data, s)
    return model, s, data


def _check_targets(data: Dataset, s: Settings) -> None:
    """A dataset without targets suits only a loss the model computes (--loss output:NAME)."""
    from irkit.train.losses import get_loss
    if data.y is None and get_loss(s.loss).reads_target:
        raise DataError(f"{data.name}: no array 'y' (the targets); add one, or train on a loss "
                        "the model computes (--loss output:NAME)")


def _load_onnx_model(source: str, options: dict[str, Any]) -> Model:
    """The ONNX model (or training file) with --trainable/--freeze/--batchnorm chosen by
    load_model."""
    def dynamic_batch(proto):  # onnx loads once the file passed the node cap (onnx_io._read)
        from irkit.onnx_io import with_dynamic_batch
        return with_dynamic_batch(proto)
    return load_model(source, prepare=dynamic_batch, trainable=options.get("trainable"),
                      freeze=options.get("freeze"), batchnorm=options.get("batchnorm"))


def run_training(source: str, output: str, progress: bool = True,
                 save_training: str | None = None, callbacks=None,
                 checkpoint: str | None = None, plot: str | None = None,
                 **options: Any) -> dict[str, Any]:
    """Train and write the inference model (best weights) to `output` and, with
    `save_training`, a training file (last state) to resume from; with `checkpoint`, a
    folder updated every epoch (TrainingCheckpoint); with `plot`, a PNG of the curves.
    Returns the history, the final validation figures and the overfitting report. Under
    mpiexec every rank runs this, data-parallel; rank 0 alone checks and writes the files."""
    inputs = [source] + ([options["data"]] if options.get("data") else [])
    if distributed.world_size() > 1:
        distributed.comm()  # start MPI first: a failure from here on ends the job at once
    root = distributed.is_root()
    hooks = _file_hooks(inputs, output, save_training, checkpoint, plot) if root else []
    try:
        model, s, data = prepare(source, options)
        notes = _import_notes(model, progress and root)
        first = model.epochs_done
        history = model.fit(data.x, data.y, epochs=first + s.epochs,
                            verbose=1 if progress else 0,
                            callbacks=list(callbacks or []) + hooks)
    finally:  # a failed or interrupted run lets go of its checkpoint folder too
        for hook in hooks:
            hook.release()
    final = _final_figures(model, data, s)
    report = overfitting_report(history, first + s.epochs, s.keep_best)
    if root:  # the image is drawn first: a plot that fails leaves -o unwritten too
        image = [] if plot is None else [(plot, plot_png(
            history, f"{model.name} on {s.dataset}", plot_format(plot)))]
        _write_outputs(model, output, save_training, image)
    return {"source": source, "output": output, "save_training": save_training,
            "checkpoint": checkpoint, "plot": plot,
            "dataset": s.dataset, "device": model._runner.device,
            "workers": distributed.world_size(),
            "epochs_run": history.epochs - first, "epochs_total": history.epochs,
            "best_epoch": history.best_epoch, "monitor": history.monitor,
            "start_loss": history.start_loss,
            "history": history.history, "final": final, "report": report.as_dict(),
            "train_samples": model.last_split[0], "val_samples": model.last_split[1],
            "notes": notes}


def _import_notes(model: Model, show: bool) -> list[str]:
    """What the import of an ONNX model found its exporter changed (onnx_io.import_notes),
    each line shown on stderr as `note: ...` when `show`."""
    graph = getattr(model.source, "graph", None)
    if graph is None:
        return []
    from irkit.errors import escape
    from irkit.onnx_io import import_notes
    notes = import_notes(graph)
    if show:
        import click
        for line in notes:
            click.echo(f"note: {escape(line)}", err=True)  # names from the file, escaped
    return notes


def _file_hooks(inputs: list[str], output: str, save_training: str | None,
                checkpoint: str | None, plot: str | None) -> list:
    """Check every output before work starts; the checkpoint callback (if asked for)."""
    from irkit.onnx_io import check_model_outputs
    check_model_outputs({"-o": output, "--save-training": save_training, "--plot": plot},
                        inputs)
    check_onnx_outputs({"-o": output, "--save-training": save_training})
    if plot is not None:  # fail before training on a bad name or without matplotlib
        from irkit.train.plot import require_matplotlib
        plot_format(plot)
        require_matplotlib()
    if checkpoint is None:
        return []
    saver = TrainingCheckpoint(checkpoint)
    saver.prepare(inputs + [p for p in (output, save_training, plot) if p])
    return [saver]


def _final_figures(model: Model, data: Dataset, s: Settings) -> dict[str, float]:
    """The kept weights' figures on the validation part (or the training data without one)."""
    x, y = model.last_validation or (data.x, data.y)
    prefix = "val_" if model.last_validation else ""
    return {f"{prefix}{k}": v for k, v in model.evaluate(x, y).items()}


def _write_outputs(model: Model, output: str, save_training: str | None,
                   others: list[tuple[str, bytes]]) -> None:
    """The model and the training file, with one pair id, and the `others` (the --plot
    image), written together: every temporary file complete before any is renamed into
    place (safe_io.write_all_atomic)."""
    from irkit.onnx_io import file_parts
    from irkit.safe_io import write_all_atomic
    pair = os.urandom(8).hex()
    graph = model.to_graph()
    graph.metadata[META_PAIR] = pair
    files = file_parts(graph, output)
    if save_training:
        files = model.training_files(save_training, {META_PAIR: pair}) + files
    write_all_atomic(files + others)


def export_graph(source: str, training: bool, data: str | None, loss: str | None,
                 optimizer: str | None):
    """The inference graph, or the train-step graph, of a recipe or ONNX model."""
    if is_onnx(source) and not training:
        from irkit.onnx_io import load
        return load(source)
    model, s, dataset = prepare(source, {"data": data, "loss": loss, "optimizer": optimizer})
    model.source.ensure_input(as_inputs(dataset.x, model.source.input_specs(), dataset.name))
    if not training:
        return model.source.build(training=False)
    graphs = model.prepare(first_rows(dataset.x, 1))
    graphs.train.metadata = dict(model.source.metadata)
    return graphs.train


def export_training_model(source: str, data: str | None, loss: str | None,
                          optimizer: str | None, opset: int = 17):
    """A ModelProto with training_info for a recipe or ONNX model (its stored state, or a
    fresh one)."""
    model, s, dataset = prepare(source, {"data": data, "loss": loss, "optimizer": optimizer})
    model.prepare(first_rows(dataset.x, 1), runner=True)
    return model.training_proto(opset)


def read_history(path: str) -> dict:
    """A history JSON document as `irkit train --json` writes it (for plots)."""
    from irkit.safe_io import read_capped
    from irkit.train.histories import checked_history
    try:
        doc = json.loads(read_capped(path, "recipe", "history file"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IrkitError(f"{path}: not a JSON history (write one with irkit train --json)") \
            from None
    except RecursionError:  # json's parser recurses once per nested array or object
        raise IrkitError(f"{path}: the JSON is nested too deeply for a history (irkit train "
                         "--json writes one)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("history"), dict):
        raise IrkitError(f"{path}: no `history` object (write one with irkit train --json)")
    return checked_history(doc, path)
