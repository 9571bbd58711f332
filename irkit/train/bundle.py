"""Training bundles: what a runtime without irkit (onnxruntime-web, the C API) needs to train.

`irkit export SOURCE --bundle DIR` writes

    DIR/bundle.json      the contract (CONTRACT below; read it, never guess names)
    DIR/train_step.onnx  (batch, state) -> (loss, metrics, next/<state>): one optimizer step
    DIR/eval.onnx        (batch, weights) -> (loss, metrics): no update
    DIR/model.onnx       the inference model (input -> output), data scaling included
    DIR/state.bin        the initial state: every state tensor, raw little-endian, at the
                         offset bundle.json gives

The bundle holds one copy of the weights, in state.bin. train_step.onnx and eval.onnx keep
none: they read every state tensor as a graph input, and each step's `next/<name>` output is
fed back as `<name>` (irkit.signature); the first step reads state.bin's tensors. (They are
not initializers-as-defaults of those inputs: onnxruntime-web's InferenceSession.run refuses
to feed an input that has an initializer, "invalid input", so such a step could not be fed
its next state there.) model.onnx stores its weights as ONNX external data in state.bin, at
the state's offsets: a state file in the layout of state.bin *is* the trained model, and
model.onnx beside it (or given its bytes as external data) predicts with the trained weights.
`irkit import-state DIR STATE -o FILE` and `irkit.load_model(DIR, state=STATE)` turn it into
an irkit training file / Model (resume, evaluate, predict).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from irkit.errors import DataError, ModelFileError
from irkit.safe_io import check_readable, read_capped, write_all_atomic
from irkit.signature import (
    CORRECT,
    LOSS,
    LR,
    META_CLASSES,
    META_NORMALIZE,
    META_SCALING,
    STEP,
    TARGET,
    next_name,
)
from irkit.train import web_target
from irkit.train.web_target import TARGETS

FORMAT, VERSION = "irkit-bundle", 1
CONTRACT, TRAIN, EVAL, INFERENCE, STATE, INIT = (
    "bundle.json", "train_step.onnx", "eval.onnx", "model.onnx", "state.bin", "init.onnx")
INITIAL = "initial/"  # init.onnx's name for the stored initial value of a state tensor
ALIGN = 64  # each tensor starts at a multiple of this: typed-array views need aligned offsets
DTYPES = ("float32", "float64", "int64", "int32", "float16", "uint8", "bool")
ROLES = ("param", "buffer", "slot", "lr", "step")
MAX_CONTRACT = 1 << 24  # bytes of bundle.json irkit reads


# ---- writing ---------------------------------------------------------------------------------
def write_bundle(model, data, settings, directory: str, opset: int = 17,
                 target: str = "default") -> dict:
    """Write the bundle of a compiled `model` (irkit.Model) for `data` (an irkit Dataset)
    into `directory` (created if missing; the bundle's files are replaced together).
    Scaling layers adapt on the training part of the split `fit` would make. `target` "web"
    writes the step and evaluation graphs in the forms onnxruntime-web's WebGPU provider runs
    (irkit.train.web_target). Returns the contract."""
    from irkit.data import train_val_split
    if target not in TARGETS:
        raise DataError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    _check_directory(directory)
    x = data.x
    if settings.val_split:
        x = x[train_val_split(len(x), settings.val_split, settings.seed, data.y)[0]]
    graphs = model.prepare(x)
    train, evaluation = graphs.train, graphs.eval
    if target == "web":
        train, evaluation = web_target.lower(train), web_target.lower(evaluation)
    state = web_target.state_for(
        train, graphs.initial_state(model.source.weights(), settings.lr))
    layout, blob = _layout(state, _roles(graphs))
    inference = model.to_graph()
    contract = _contract(model.name, graphs, train, layout, inference, settings, opset)
    contract.update(state_bytes=len(blob), target=target)
    contract["classes"] = contract["classes"] or (list(data.classes) if data.classes else None)
    weights = graphs.params + graphs.buffers
    protos = {TRAIN: _with_state(train, layout, [], opset),
              EVAL: _with_state(evaluation, layout, [], opset),
              INFERENCE: _with_state(inference, layout, weights, opset),
              INIT: _with_state(_init_graph(state), layout, list(state), opset, INITIAL)}
    files = [(os.path.join(directory, name), proto.SerializeToString())
             for name, proto in protos.items()]
    files.append((os.path.join(directory, STATE), blob))
    files.append((os.path.join(directory, CONTRACT),
                  (json.dumps(contract, indent=2) + "\n").encode()))
    write_all_atomic(files)
    return contract


def _check_directory(directory: str) -> None:
    """DIR is a new folder, an empty one, or a bundle (replaced); never some other folder."""
    if os.path.islink(directory) or (os.path.exists(directory) and
                                     not os.path.isdir(directory)):
        raise DataError(f"--bundle {directory}: not a folder; give a new or empty folder")
    if os.path.isdir(directory):
        found = set(os.listdir(directory))
        if found and CONTRACT not in found:
            raise DataError(f"--bundle {directory}: a folder that holds other files and no "
                            f"{CONTRACT}; give a new or empty folder")
        return
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise DataError(f"--bundle {directory}: the folder {parent} does not exist")
    os.mkdir(directory)


def _roles(graphs) -> dict[str, str]:
    roles = {n: "param" for n in graphs.params}
    roles.update({n: "buffer" for n in graphs.buffers})
    roles.update({n: "slot" for n in graphs.slots})
    roles.update({LR: "lr", STEP: "step"})
    return roles


def _layout(state: dict[str, np.ndarray], roles: dict[str, str]) -> tuple[list[dict], bytes]:
    """Each state tensor's entry (name, role, dtype, shape, offset, length, next) and the
    state file's bytes."""
    layout, offset = [], 0
    for name, value in state.items():
        offset += -offset % ALIGN
        length = int(value.nbytes)
        layout.append({"name": name, "role": roles[name], "dtype": value.dtype.name,
                       "shape": list(value.shape), "offset": offset, "length": length,
                       "next": next_name(name) if roles[name] != "lr" else None})
        offset += length
    return layout, pack_state(layout, state, offset)


def pack_state(layout: list[dict], state: dict[str, np.ndarray], size: int) -> bytes:
    """A state file: each tensor of `state`, raw little-endian, at its layout offset (the
    format state.bin and the harnesses' trained state share)."""
    blob = bytearray(size)
    for e in layout:
        value = np.asarray(state[e["name"]], np.dtype(e["dtype"]).newbyteorder("<"))
        if list(value.shape) != e["shape"]:
            raise DataError(f"state {e['name']!r} has shape {list(value.shape)}, the bundle "
                            f"{e['shape']}")
        blob[e["offset"]:e["offset"] + e["length"]] = value.tobytes()
    return bytes(blob)


def _init_graph(state: dict[str, np.ndarray]):
    """init.onnx: no inputs; each state tensor an output, its value the initializer
    `initial/<name>` (stored in state.bin), so `run({})` gives the whole initial state."""
    from irkit import ops
    from irkit.ir import Graph
    graph = Graph("initial_state")
    outputs = []
    for name, value in state.items():
        out = ops.Identity(graph.add_initializer(INITIAL + name, value))
        graph.rename_value(out, name)
        outputs.append(out)
    graph.outputs = outputs
    return graph


def _contract(name: str, graphs, train, layout: list[dict], inference, settings,
              opset: int) -> dict:
    state = {e["name"] for e in layout}
    batch = [{"name": v.name, "role": "target" if v.name == TARGET else "features",
              "dtype": v.dtype.name, "shape": [_dim(d) for d in v.shape]}
             for v in train.inputs if v.name not in state]
    meta = inference.metadata
    scaling = ({"kind": meta.get(META_SCALING), "layer": meta[META_NORMALIZE],
                "in_graph": True} if META_NORMALIZE in meta else None)
    metrics = [CORRECT] if graphs.has_correct else []
    return {
        "format": FORMAT, "version": VERSION, "model": name, "opset": opset,
        "files": {"train_step": TRAIN, "eval": EVAL, "inference": INFERENCE, "state": STATE,
                  "init": INIT},
        "batch": batch, "scaling": scaling,
        "classes": [c for c in meta.get(META_CLASSES, "").split(",") if c] or None,
        "state": layout, "state_bytes": None,
        "train_step": {"loss": LOSS, "metrics": metrics,
                       "updates": {e["next"]: e["name"] for e in layout if e["next"]}},
        "eval": {"loss": LOSS, "metrics": metrics,
                 "weights": graphs.params + graphs.buffers},
        "inference": {"inputs": [v.name for v in inference.inputs],
                      "outputs": [v.name for v in inference.outputs],
                      "weights": graphs.params + graphs.buffers},
        "settings": {"loss": settings.loss, "optimizer": settings.optimizer,
                     "lr": settings.lr, "batch_size": settings.batch_size,
                     "seed": settings.seed},
    }


def _dim(d) -> int | str | None:
    """A batch input's dim in the contract: a size, a symbol's name, or null (unknown)."""
    return d if isinstance(d, int) or d is None else str(d)


def _with_state(graph, layout: list[dict], names: list[str], opset: int, prefix: str = ""):
    """`graph` as a ModelProto whose initializers `prefix + name` for `names` are stored in
    state.bin (external data at the state offsets of `name`)."""
    from onnx import TensorProto

    from irkit.onnx_io import to_onnx
    proto = to_onnx(graph, opset, check=False)
    entries = {prefix + e["name"]: e for e in layout}
    names = [prefix + n for n in names]
    kept = [t for t in proto.graph.initializer if t.name not in names]
    if len(kept) + len(names) != len(proto.graph.initializer):
        raise DataError(f"{graph.name}: the state {names} are not all initializers of the "
                        "inference graph; the bundle cannot bind them")
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    for name in names:
        e = entries[name]
        t = proto.graph.initializer.add(name=name, dims=e["shape"])
        t.data_type = _onnx_type(e["dtype"])
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", STATE), ("offset", e["offset"]),
                           ("length", e["length"])):
            t.external_data.add(key=key, value=str(value))
    return proto


def _onnx_type(dtype: str) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ---- reading ---------------------------------------------------------------------------------
def read_contract(directory: str) -> dict:
    """bundle.json of the bundle in `directory`, checked (one-line ModelFileError naming the
    field otherwise)."""
    path = os.path.join(directory, CONTRACT)
    if not os.path.isdir(directory) or not os.path.exists(path):
        raise ModelFileError(f"{directory}: no {CONTRACT}; not a bundle (write one with "
                             "irkit export SOURCE --bundle DIR)")
    try:
        doc = json.loads(read_capped(path, "recipe", "bundle contract"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: not valid JSON; export the bundle again") from None
    check_contract(doc, path)
    return doc


def check_contract(doc, where: str = CONTRACT) -> None:
    """The contract's fields and their types, the state layout consistent with its sizes."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ModelFileError(f"{where}: {what}; export the bundle again")
    need(isinstance(doc, dict) and doc.get("format") == FORMAT, f"format is not {FORMAT!r}")
    need(doc.get("version") == VERSION, f"version {doc.get('version')!r} is not {VERSION}")
    for key in ("files", "batch", "state", "train_step", "eval", "inference"):
        need(key in doc, f"no {key!r} field")
    need(isinstance(doc["state"], list) and bool(doc["state"]), "'state' must be a list")
    end = _check_layout(doc["state"], need)
    need(doc.get("state_bytes") == end, f"state_bytes {doc.get('state_bytes')!r} is not {end}")
    names = {e["name"] for e in doc["state"]}
    updates = doc["train_step"].get("updates") if isinstance(doc["train_step"], dict) else None
    need(isinstance(updates, dict) and all(v in names for v in updates.values()),
         "train_step.updates must map outputs to state names")
    need(isinstance(doc["batch"], list) and all(
        isinstance(b, dict) and isinstance(b.get("name"), str) and b.get("dtype") in DTYPES
        and b.get("role") in ("features", "target") for b in doc["batch"]),
         "each batch entry needs a name, a dtype and a role (features or target)")
    files = doc["files"]
    need(isinstance(files, dict) and all(files.get(k) == v for k, v in (
        ("train_step", TRAIN), ("eval", EVAL), ("inference", INFERENCE), ("state", STATE))),
         "'files' must name the bundle's files")
    need(files.get("init", INIT) == INIT, f"files.init must be {INIT!r} or absent")
    need(doc.get("target", TARGETS[0]) in TARGETS,
         f"target {doc.get('target')!r} is not one of {', '.join(TARGETS)}")


def _check_layout(layout: list, need) -> int:
    """Each state entry well formed, in order, its length that of its shape; the end offset."""
    end, seen = 0, set()
    for e in layout:
        need(isinstance(e, dict) and isinstance(e.get("name"), str), "a state entry lacks a name")
        name = e["name"]
        need(name not in seen, f"state {name!r} appears twice")
        seen.add(name)
        need(e.get("role") in ROLES, f"state {name!r}: role {e.get('role')!r} unknown")
        need(e.get("dtype") in DTYPES, f"state {name!r}: dtype {e.get('dtype')!r} unknown")
        shape, offset, length = e.get("shape"), e.get("offset"), e.get("length")
        need(isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape),
             f"state {name!r}: shape must be a list of sizes")
        need(type(offset) is int and type(length) is int and offset >= end,
             f"state {name!r}: offset/length out of order")
        need(offset % ALIGN == 0, f"state {name!r}: offset {offset} is not a multiple of {ALIGN}")
        size = math.prod(shape) * np.dtype(e["dtype"]).itemsize
        need(length == size, f"state {name!r}: length {length} is not the {size} bytes of its "
             "shape and dtype")
        end = offset + length
    return end


def read_state(directory: str, state_path: str | None = None,
               contract: dict | None = None) -> dict[str, np.ndarray]:
    """The state tensors of `state_path` (a file in state.bin's layout, e.g. what the JS
    harness writes), or of the bundle's initial state.bin; checked against the contract."""
    contract = contract or read_contract(directory)
    path = state_path or os.path.join(directory, STATE)
    size = check_readable(path, "model", "state file")
    if size != contract["state_bytes"]:
        raise ModelFileError(f"{path}: {size} bytes, the bundle's state is "
                             f"{contract['state_bytes']}; it is not a state of this bundle "
                             f"({directory})")
    blob = read_capped(path, "model", "state file")
    state = {}
    for e in contract["state"]:
        dtype = np.dtype(e["dtype"]).newbyteorder("<")
        value = np.frombuffer(blob, dtype, count=math.prod(e["shape"]),
                              offset=e["offset"]).reshape(e["shape"]).astype(e["dtype"])
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelFileError(f"{path}: state {e['name']!r} holds NaN or infinity; the run "
                                 "that wrote it diverged (lower the learning rate)")
        state[e["name"]] = value
    return state


def training_proto(directory: str, state_path: str | None = None):
    """An irkit training file (ModelProto; irkit.train.training_model) of the bundle with the
    state of `state_path` (default: the initial state): resume it with `irkit train FILE` or
    `irkit.load_model(FILE).fit(...)`; evaluate and predict read it like any model."""
    from irkit.onnx_io import from_onnx
    from irkit.train.training_model import to_training_model
    contract = read_contract(directory)
    state = read_state(directory, state_path, contract)
    inference = from_onnx(_graph_proto(directory, INFERENCE, state))
    train = from_onnx(_graph_proto(directory, TRAIN, state))
    if contract.get("target") == "web":  # int32 target and step: irkit's int64 at the edges
        train, state = web_target.irkit_form(train), web_target.irkit_state(state)
    params = [e["name"] for e in contract["state"] if e["role"] == "param"]
    return to_training_model(inference, train, state, params, opset=contract.get("opset", 17))


def _graph_proto(directory: str, name: str, state: dict[str, np.ndarray]):
    """A bundle graph whose initializers stored in state.bin hold `state` instead."""
    import onnx
    from onnx import numpy_helper
    path = os.path.join(directory, name)
    try:
        proto = onnx.ModelProto.FromString(read_capped(path, "model", "ONNX model"))
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}); "
                             "export the bundle again") from None
    kept = []
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            if t.name not in state:
                raise ModelFileError(f"{path}: initializer {t.name!r} is in state.bin but not "
                                     f"in {CONTRACT}; export the bundle again")
            t = numpy_helper.from_array(state[t.name], t.name)
        kept.append(t)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto


__all__ = ["CONTRACT", "check_contract", "pack_state", "read_contract", "read_state",
           "training_proto", "write_bundle"]
