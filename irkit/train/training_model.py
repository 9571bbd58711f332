"""Standard ONNX training models: `ModelProto.training_info` filled as the ONNX spec defines.

The main graph is the inference graph; its initializers also hold the optimizer state
(`<slot>/<param>`), the learning rate (`irkit.lr`) and the number of steps done
(`irkit.step`). `training_info[0].algorithm` is one train step: it reads the batch
(`input`, `target`) and those initializers, and `update_binding` writes each updated value
back (`param <- next/param`, `irkit.step <- next/irkit.step`). So the file alone says how to
train it; `irkit train FILE` resumes from it, optimizer state and step count included.
"""

from __future__ import annotations

import numpy as np
import onnx

from irkit import ops
from irkit.errors import ModelFileError
from irkit.ir import Graph
from irkit.onnx_io import from_onnx, to_onnx
from irkit.passes import EliminateDeadNodesPass
from irkit.train.step import LR, STEP, build_step_graphs

STEP_INIT, LR_INIT = "irkit.step", "irkit.lr"
EPOCH_KEY, PARAMS_KEY = "irkit.epoch", "irkit.training_params"


def _algorithm(train: Graph, lr: float, steps_done: int) -> tuple[Graph, list[str]]:
    """The step graph with lr and step as stored values; step counts itself up."""
    g = train
    lr_in, step_in = g.value(LR), g.value(STEP)
    stored_step = g.add_initializer(STEP_INIT, np.array(steps_done, np.float32))
    stored_lr = g.add_initializer(LR_INIT, np.array(lr, np.float32))
    g.replace_all_uses_with(lr_in, stored_lr)
    t = ops.Add(stored_step, 1.0)  # this step's number, 1-based (Adam's bias correction)
    g.replace_all_uses_with(step_in, t)
    next_step = ops.Identity(t)
    g.rename_value(next_step, f"next/{STEP_INIT}")
    g.outputs.append(next_step)
    g.remove_input(lr_in)
    g.remove_input(step_in)
    g.toposort()
    EliminateDeadNodesPass(keep_initializers=True)(g)
    return g, [STEP_INIT]


def to_training_model(model, loss, optimizer, state: dict[str, np.ndarray] | None = None,
                      steps_done: int = 0, epochs_done: int = 0, opset: int = 17
                      ) -> onnx.ModelProto:
    """Inference graph + training_info (algorithm and update_binding) as one ModelProto."""
    graphs = build_step_graphs(model, loss, optimizer)
    weights = model.weights()
    state = state or {f"{s}/{p}": a for p in graphs.params
                      for s, a in optimizer.init_state(weights[p]).items()}
    algorithm, extra = _algorithm(graphs.train, float(optimizer.lr), steps_done)
    main = model.build(training=False)
    for name in graphs.states:
        main.add_initializer(name, np.asarray(state[name], dtype=np.float32))
    # buffers (running statistics) are initializers of the inference graph already
    for name in (STEP_INIT, LR_INIT):
        main.add_initializer(name, algorithm.initializers[name].const)
    main.metadata[EPOCH_KEY] = str(epochs_done)
    main.metadata[PARAMS_KEY] = ",".join(graphs.params)
    model_proto = to_onnx(main, opset, check=False)
    alg_proto = to_onnx(algorithm, opset, check=False).graph
    outer = {t.name for t in model_proto.graph.initializer}
    kept = [i for i in alg_proto.input if i.name not in outer]
    del alg_proto.input[:]
    alg_proto.input.extend(kept)
    alg_inits = [t for t in alg_proto.initializer if t.name not in outer]
    del alg_proto.initializer[:]
    alg_proto.initializer.extend(alg_inits)
    info = model_proto.training_info.add()
    info.algorithm.CopyFrom(alg_proto)
    for name in graphs.params + graphs.states + graphs.buffers + extra:
        info.update_binding.add(key=name, value=f"next/{name}")
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def read_training_model(model_proto: onnx.ModelProto) -> tuple[Graph, dict]:
    """The inference graph (state initializers removed) and the stored training state:
    {"state": {...}, "steps_done": int, "epochs_done": int, "lr": float, "params": [...]}."""
    if not model_proto.training_info:
        raise ModelFileError("the model has no training_info; export it with --training")
    bound = [e.key for e in model_proto.training_info[0].update_binding]
    graph = from_onnx(model_proto)
    params = [p for p in graph.metadata.pop(PARAMS_KEY, "").split(",") if p]
    state = {}
    for name in bound:
        value = graph.initializers.get(name)
        if name in params or name == STEP_INIT or value is None or value.uses:
            continue  # weights and running statistics stay in the inference graph
        state[name] = value.const
    info = {"state": state, "params": params, "epochs_done": int(graph.metadata.pop(
        EPOCH_KEY, "0")), "steps_done": int(_pop(graph, STEP_INIT)), "lr": float(
        _pop(graph, LR_INIT))}
    for name in state:
        graph.remove_initializer(name)
    return graph, info


def _pop(graph: Graph, name: str) -> float:
    if name not in graph.initializers:
        raise ModelFileError(f"the training model lacks the initializer {name!r}")
    value = float(graph.initializers[name].const)
    graph.remove_initializer(name)
    return value


__all__ = ["read_training_model", "to_training_model"]
