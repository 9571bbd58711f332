"""Standard ONNX training files: `ModelProto.training_info` filled as the ONNX spec defines.

The main graph is the inference graph; its initializers also hold the rest of the training
state: optimizer slots (`<slot>/<param>`), the learning rate (`opt/lr`) and the step count
(`opt/step`), and, when the best epoch is not the last, the best weights (`best/<name>`).
`training_info[0].algorithm` is the train-step graph itself, in training mode (Dropout
active, BatchNorm on batch statistics): it reads the batch (`input`, `target`) and those
initializers, and `update_binding` writes each updated value back (`name <- next/name`). So
the file alone says how to train it, and resuming from it continues the very same run:
`irkit train FILE` and `irkit.load_model(FILE).fit(...)` give what an uninterrupted run gives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irkit.errors import ModelFileError, json_text
from irkit.ir import Graph, fresh_name
from irkit.onnx_io import from_onnx, model_files_for, to_onnx, validate_model
from irkit.signature import LR, META_BEST, META_EPOCH, META_HISTORY, META_PARAMS, STEP, next_name

BEST_PREFIX = "best/"
MAX_EPOCHS_DONE = 10**6


@dataclass
class TrainingFile:
    """What a training file holds, read back."""

    inference: Graph
    train: Graph
    state: dict[str, np.ndarray]         # every state value the train graph reads
    params: list[str]
    buffers: list[str]
    slots: list[str]
    epochs_done: int = 0
    history: dict = field(default_factory=dict)
    best_weights: dict[str, np.ndarray] | None = None
    settings: object = None                # the Settings it was saved with (set on load)


def to_training_model(inference: Graph, train: Graph, state: dict[str, np.ndarray],
                      params: list[str], epochs_done: int = 0, history: dict | None = None,
                      best_weights: dict[str, np.ndarray] | None = None,
                      opset: int | None = None) -> onnx.ModelProto:
    """Inference graph + training_info (algorithm and update_binding) as one ModelProto.
    `state` holds every value the train graph reads besides the batch; `best_weights`, if
    given, are stored as `best/<name>` so that best-epoch tracking survives a resume.
    `opset` None: 17, or the lowest that holds both graphs (float8 weights: 19, ...)."""
    main = _main_graph(inference, state, params, epochs_done, history, best_weights)
    opset = _opset_for(opset, main, train)
    model_proto = _with_algorithm(to_onnx(main, opset, check=False), main, train, state, opset)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def training_model_files(path: str, inference: Graph, train: Graph,
                         state: dict[str, np.ndarray], params: list[str], epochs_done: int = 0,
                         history: dict | None = None,
                         best_weights: dict[str, np.ndarray] | None = None,
                         opset: int | None = None) -> list[tuple[str, Any]]:
    """`to_training_model` as the files to write at `path` (`safe_io.write_all_atomic`):
    the model alone, or, when its tensors are above the external-data threshold
    (`onnx_io.file_parts`), PATH.data first (streamed from the arrays) and the model, whose
    large initializers reference it."""
    main = _main_graph(inference, state, params, epochs_done, history, best_weights)
    opset = _opset_for(opset, main, train)
    files, model_proto = model_files_for(main, path, opset)
    model_proto = _with_algorithm(model_proto, main, train, state, opset)
    if len(files) == 1:
        onnx.checker.check_model(model_proto, full_check=True)
        return [(path, model_proto.SerializeToString())]
    # onnx's checker would look for the data file, not written yet: irkit's own checks
    validate_model(model_proto, external_ok=True)
    return [files[0], (path, model_proto.SerializeToString())]


def _opset_for(opset: int | None, *graphs: Graph) -> int:
    """One opset for the inference and the train graph: `opset` (refused in one line when a
    graph needs more), or the lowest that holds them all."""
    from irkit.onnx_io import MAX_OPSET, check_opset
    return max(check_opset(g, opset, MAX_OPSET) for g in graphs)


def _main_graph(inference: Graph, state: dict[str, np.ndarray], params: list[str],
                epochs_done: int, history: dict | None,
                best_weights: dict[str, np.ndarray] | None) -> Graph:
    main = inference.copy()
    main.metadata = dict(inference.metadata)
    for name, value in state.items():
        if name in main.initializers:
            main.initializers[name].const = np.asarray(value)
        else:
            main.add_initializer(name, np.asarray(value))
    for name, value in (best_weights or {}).items():
        main.add_initializer(BEST_PREFIX + name, np.asarray(value))
    main.metadata[META_EPOCH] = str(int(epochs_done))
    main.metadata[META_PARAMS] = ",".join(params)
    main.metadata[META_HISTORY] = json_text(history or {})  # valid JSON: NaN as null
    return main


def _with_algorithm(model_proto: onnx.ModelProto, main: Graph, train: Graph,
                    state: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    """`model_proto` (the main graph's) with training_info: the train graph as algorithm,
    reading the state from the main graph's initializers, and the update bindings."""
    outer = {t.name for t in model_proto.graph.initializer}
    alg_proto = to_onnx(train, opset, check=False).graph
    # the algorithm reads the state from the main graph's initializers, not from inputs
    inputs = [i for i in alg_proto.input if i.name not in outer]
    del alg_proto.input[:]
    alg_proto.input.extend(inputs)
    _untie_constants(alg_proto, main, set(state))
    kept = [t for t in alg_proto.initializer if t.name not in outer]
    del alg_proto.initializer[:]
    alg_proto.initializer.extend(kept)
    info = model_proto.training_info.add()
    info.algorithm.CopyFrom(alg_proto)
    written = {o.name for o in train.outputs}
    for name in state:
        if next_name(name) in written:
            info.update_binding.add(key=name, value=next_name(name))
    return model_proto


def _untie_constants(alg: onnx.GraphProto, main: Graph, state: set[str]) -> None:
    """Rename each constant of the train graph that shares its name, not its value, with an
    initializer of the main graph: the algorithm reads the main graph's initializers, so it
    would otherwise read the other constant (two passes may both name a constant `const_3`).
    The main graph's values are compared as arrays (its file may keep them external)."""
    outer = {name: v.const for name, v in main.initializers.items()}
    taken = set(outer) | {t.name for t in alg.initializer}
    for tensor in alg.initializer:
        same = outer.get(tensor.name)
        if same is None or tensor.name in state or _same_tensor(same, tensor):
            continue
        new = fresh_name("train/" + tensor.name, taken)
        for node in alg.node:
            node.input[:] = [new if n == tensor.name else n for n in node.input]
        tensor.name = new


def _same_tensor(x: np.ndarray, b: onnx.TensorProto) -> bool:
    y = numpy_helper.to_array(b)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def read_training_model(model_proto: onnx.ModelProto,
                        detached: dict[str, np.ndarray | None] | None = None) -> TrainingFile:
    """The inference graph, the train graph and the stored state of a training file; stored
    counters and rates are checked (a one-line ModelFileError names the bad value).
    `detached`: the main graph's initializers that `load_proto` read into arrays (large
    external data), shared by the inference graph, the train graph and the state, never
    copied through protobuf."""
    if not model_proto.training_info:
        raise ModelFileError("the model has no training_info; export it with --training")
    info = model_proto.training_info[0]
    bound = [e.key for e in info.update_binding]
    inference = from_onnx(model_proto, detached)
    meta = inference.metadata
    params = [p for p in meta.pop(META_PARAMS, "").split(",") if p]
    epochs_done = _stored_int(meta.pop(META_EPOCH, "0"), META_EPOCH, MAX_EPOCHS_DONE)
    history = _stored_json(meta.pop(META_HISTORY, "{}"), META_HISTORY)
    meta.pop(META_BEST, None)
    train = _algorithm_graph(model_proto, detached or {})
    state_names = [v.name for v in train.inputs if v.name in inference.initializers]
    state = {n: inference.initializers[n].const for n in state_names}
    _check_counters(state)
    best = {n[len(BEST_PREFIX):]: v.const for n, v in inference.initializers.items()
            if n.startswith(BEST_PREFIX)} or None
    for name in list(inference.initializers):
        value = inference.initializers[name]
        if not value.uses and value not in inference.outputs:
            inference.remove_initializer(name)  # slots, lr, step, best/: training only
    buffers = [n for n in bound if n not in params and n != STEP and n in inference.initializers]
    slots = [n for n in bound if n not in params and n not in buffers and n != STEP]
    missing = [p for p in params if p not in state]
    if missing:
        raise ModelFileError(f"the training file's step does not read the parameters {missing}")
    _check_best(best, state, params + buffers)
    return TrainingFile(inference, train, state, params, buffers, slots, epochs_done, history,
                        best)


def _check_best(best: dict[str, np.ndarray] | None, state: dict[str, np.ndarray],
                weights: list[str]) -> None:
    """Stored best weights are the step's weights, each shaped as its state (ModelFileError
    otherwise: a resume would otherwise train to the end and then fail to restore them)."""
    if best is None:
        return
    odd = sorted(set(best) - set(weights)) + sorted(set(weights) - set(best))
    bad = odd or [n for n in best if np.shape(best[n]) != np.shape(state[n])]
    if bad:
        raise ModelFileError(f"the training file's best weights ({BEST_PREFIX}*) do not match "
                             f"its step's weights ({bad[0]!r}); re-save it with irkit train "
                             "--save-training")


def _algorithm_graph(model_proto: onnx.ModelProto,
                     detached: dict[str, np.ndarray | None]) -> Graph:
    """The algorithm as an IR graph whose state (the main graph's initializers) are inputs;
    the detached ones are declared as its inputs and come back as the same arrays."""
    alg = model_proto.training_info[0].algorithm
    outer = {t.name: t for t in model_proto.graph.initializer}
    used = {n for node in alg.node for n in node.input} | {o.name for o in alg.output}
    arrays = {n: a for n, a in detached.items() if a is not None and n in used}
    declared = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                              a.shape) for n, a in arrays.items()]
    graph = helper.make_graph(list(alg.node), alg.name or "train_step",
                              list(alg.input) + declared, list(alg.output),
                              list(alg.initializer) + [t for n, t in outer.items() if n in used])
    proto = helper.make_model(graph, opset_imports=list(model_proto.opset_import))
    proto.ir_version = model_proto.ir_version
    train = from_onnx(proto, arrays)
    written = {o.name for o in train.outputs}
    names = list(detached) or list(outer)  # every initializer, in the file's order
    for name in [n for n in names if n in used and train.has_value(n)]:
        if next_name(name) in written or name == LR:
            train.promote_initializer_to_input(name)
    return train


def _check_counters(state: dict[str, np.ndarray]) -> None:
    if LR not in state or STEP not in state:
        raise ModelFileError(f"the training file lacks {LR!r} or {STEP!r}; it was not written "
                             "by this irkit version (export it again with --training)")
    lr, step = state[LR], state[STEP]
    if lr.shape != () or not math.isfinite(float(lr)) or float(lr) <= 0:
        raise ModelFileError(f"the training file's learning rate {LR} = {lr!r} must be a finite "
                             "number > 0")
    if step.shape != () or step.dtype != np.int64 or not 0 <= int(step) < 2**53:
        raise ModelFileError(f"the training file's step count {STEP} = {step!r} must be an "
                             "int64 scalar in [0, 2**53)")


def _stored_int(text: str, key: str, limit: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ModelFileError(f"metadata {key} = {text[:40]!r} is not an integer") from None
    if not 0 <= value <= limit:
        raise ModelFileError(f"metadata {key} = {value} is out of range [0, {limit}]")
    return value


def _stored_json(text: str, key: str) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise ModelFileError(f"metadata {key} is not valid JSON (or nested too deeply)") \
            from None
    if not isinstance(value, dict):
        raise ModelFileError(f"metadata {key} must be a JSON object")
    return value


__all__ = ["TrainingFile", "read_training_model", "to_training_model"]
