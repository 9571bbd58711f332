"""The train-step and evaluation graphs.

train: (params, optimizer state, input, target, lr, step) -> (loss, correct, params', state')
eval:  (params, input, target)                           -> (loss, correct)
Both are standard ai.onnx graphs; params' and state' are named `next/<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit import ops
from irkit.errors import DataError
from irkit.ir import Graph, Value
from irkit.passes import gradients, simplify
from irkit.train.losses import Loss
from irkit.train.optimizers import Optimizer

TARGET, LR, STEP, LOSS, CORRECT = "target", "lr", "step", "loss", "correct"


@dataclass
class StepGraphs:
    train: Graph
    eval: Graph
    params: list[str]
    states: list[str]          # "<slot>/<param>"
    buffers: list[str]         # running statistics: read, and written as next/<name>
    input_name: str
    has_correct: bool


def _target_shape(out: Value, loss: Loss) -> tuple:
    if loss.sparse_labels:
        return (out.shape[0] if out.shape else "N",)
    return out.shape


def _add_loss(graph: Graph, loss: Loss) -> tuple[Value, Value | None]:
    out = graph.outputs[0]
    if out.dtype.kind != "f":
        raise DataError(f"model output {out.name!r} is {out.dtype}, not floating; a loss needs "
                        "float predictions")
    target = graph.add_input(TARGET, loss.target_dtype(), _target_shape(out, loss))
    value = loss.build(out, target)
    graph.rename_value(value, LOSS)
    correct = loss.correct(out, target)
    if correct is not None:
        graph.rename_value(correct, CORRECT)
    return value, correct


def _promote(graph: Graph, names: list[str]) -> list[Value]:
    missing = [n for n in names if n not in graph.initializers]
    if missing:
        raise DataError(f"no weights named {missing}; see `irkit inspect` for the names")
    return [graph.promote_initializer_to_input(n) for n in names]


def build_eval_graph(forward: Graph, params: list[str], loss: Loss) -> Graph:
    """Loss and correct count of a forward graph, params (and buffers) as inputs."""
    graph = forward
    _promote(graph, params)
    value, correct = _add_loss(graph, loss)
    graph.outputs = [value] + ([correct] if correct is not None else [])
    simplify(graph)
    return graph


def build_train_graph(forward: Graph, params: list[str], loss: Loss,
                      optimizer: Optimizer, buffers: list[str] = ()) -> tuple[Graph, list[str]]:
    """One optimizer step as a graph; returns it and the state names. The forward graph's
    outputs after the first are the buffers' next values (`next/<buffer>`), kept as outputs."""
    graph = forward
    buffer_updates = graph.outputs[1:]
    graph.outputs = graph.outputs[:1]
    param_values = _promote(graph, params)
    _promote(graph, list(buffers))
    value, correct = _add_loss(graph, loss)
    grads = gradients(graph, value, param_values)
    lr = graph.add_input(LR, np.float32, ())
    step = graph.add_input(STEP, np.float32, ())
    state_names, new_values = [], []
    with graph.name_scope("opt/"):
        shared = optimizer.prepare(lr, step)
        for p, g in zip(param_values, grads):
            slots = {s: graph.add_input(f"{s}/{p.name}", p.dtype, p.shape)
                     for s in optimizer.slots}
            new_p, new_slots = optimizer.update(p, g, slots, shared)
            new_values.append((p.name, new_p))
            for s in optimizer.slots:
                state_names.append(f"{s}/{p.name}")
                new_values.append((f"{s}/{p.name}", new_slots[s]))
    outputs = [value] + ([correct] if correct is not None else []) + buffer_updates
    for name, v in new_values:
        v = ops.own_output(v, outputs)
        graph.rename_value(v, f"next/{name}")
        outputs.append(v)
    graph.outputs = outputs
    simplify(graph)
    graph.verify()
    return graph, state_names


def build_step_graphs(model, loss: Loss, optimizer: Optimizer) -> StepGraphs:
    """Train and eval graphs of `model` (ModuleModel or OnnxModel)."""
    params, buffers = model.trainable(), model.buffers()
    if not params:
        raise DataError("the model has no trainable weights; check --trainable/--freeze")
    train, states = build_train_graph(model.build(training=True), params, loss, optimizer,
                                      buffers)
    evaluation = build_eval_graph(model.build(training=False), params + buffers, loss)
    input_name = next(v.name for v in train.inputs if v.name not in params + buffers)
    return StepGraphs(train, evaluation, params, states, buffers, input_name,
                      any(v.name == CORRECT for v in train.outputs))
