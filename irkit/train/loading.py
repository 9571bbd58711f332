"""Loading a Model from a file: a plain ONNX model (to predict, evaluate or fine-tune), a
training file (which resumes where it stopped) or a training bundle's folder."""

from __future__ import annotations

import os

from irkit.errors import DataError
from irkit.signature import LR, META_HISTORY, META_SETTINGS
from irkit.train.model import Model
from irkit.train.modes import BATCHNORM_MODES
from irkit.train.settings import resolve
from irkit.train.sources import OnnxSource, names_of
from irkit.train.trainer import History


def load_model(path: str, prepare=None, state: str | None = None,
               trainable: list[str] | str | None = None,
               freeze: list[str] | str | None = None, batchnorm: str | None = None) -> Model:
    """A Model from an ONNX file: a training file (written by `Model.save` or `irkit train
    --save-training`) resumes where it stopped; any other model can predict, evaluate and be
    fine-tuned after `compile`. `prepare(proto) -> proto` edits the file's proto first. A
    training bundle's folder (irkit.train.bundle) loads as a training file with the state file
    `state` (what another runtime trained), or with its initial state.

    What a fine-tune trains, as `irkit train --trainable/--freeze` chooses it: by default the
    weights (torch's parameters: not the exporter's constants nor BatchNorm's running
    statistics; irkit.train.sources.weights_that_train); `trainable`, initializer names or
    fnmatch patterns (`"encoder.*"`, a list or one comma-separated string), trains those
    instead; `freeze` keeps those matching it fixed. A pattern that matches nothing is a
    DataError. `batchnorm` (irkit.train.modes.BATCHNORM_MODES): "train" (default, as torch's
    `model.train()`) normalizes with the batch's statistics and updates the running ones,
    an inference-mode export's BatchNorm included; "frozen" keeps the running statistics. A
    training file trains what and how it was saved with (DataError if any of the three is
    given).
    """
    from irkit.onnx_io import files_read, load
    found = {}

    def convert(proto, detached=None):  # onnx (training_model) loads once past the node cap
        from irkit.onnx_io import check_run_sizes, from_exported, restore_detached
        from irkit.train.training_model import read_training_model
        original, proto = proto, prepare(proto) if prepare is not None else proto
        if not proto.training_info:  # untied copies tied again, what was folded recorded
            graph = from_exported(proto, detached, original)
        else:
            found["file"] = read_training_model(proto, detached)
            graph = found["file"].inference
        restore_detached(proto, detached or {})  # its sizes counted as stored, not as feeds
        check_run_sizes(proto)  # after validation, before onnxruntime runs it
        return graph
    if os.path.isdir(path):
        from irkit.train.bundle import training_proto
        graph = convert(training_proto(path, state))
    else:
        graph = load(path, convert)
    if found and (trainable or freeze or batchnorm):
        raise DataError(f"{path} is a training file: it resumes with the parameters and "
                        "BatchNorm mode it trained with; choose trainable/freeze/batchnorm on "
                        "a plain ONNX model (irkit export)")
    model = Model(OnnxSource(graph, found["file"].params, batchnorm=None) if found else
                  OnnxSource(graph, names_of(trainable), names_of(freeze),
                             batchnorm or BATCHNORM_MODES[0]))
    model.files_read = files_read([path])  # Model.save/export must not overwrite them
    return _resumed(model, found["file"], path) if found else model


def _resumed(model: Model, file, path: str) -> Model:
    """`model` (of a training file's inference graph) set to continue `file`'s run."""
    from irkit.train.settings import from_json
    saved = from_json(model.source.metadata.get(META_SETTINGS))
    saved["lr"] = float(file.state[LR])  # where training continues (a schedule may move it)
    model.compile(settings=resolve(saved, names=(f"{path} settings",)))
    model._resume = file
    model._resume.settings = model.settings
    model.history = History.from_dict(file.history, f"{path}: {META_HISTORY}") \
        if file.history else None
    return model


__all__ = ["load_model"]
