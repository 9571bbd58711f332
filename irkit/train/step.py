"""The train-step and evaluation graphs of a model (names: irkit.signature).

train: (params, buffers, slots, opt/lr, opt/step, input, target)
           -> (loss, correct, next/params, next/buffers, next/slots, next/opt/step)
eval:  (params, buffers, input, target) -> (loss, correct)

Both are standard ai.onnx graphs. The learning rate and the step count are optimizer state
(as Keras' optimizer variables are): a schedule sets `opt/lr` between steps, and a training
file stores it once, with the rest of the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit import ops
from irkit.errors import DataError
from irkit.ir import Graph, Value
from irkit.passes import gradients, simplify
from irkit.signature import CORRECT, LOSS, LR, STEP, TARGET, next_name, slot_name
from irkit.train.losses import Loss
from irkit.train.optimizers import Optimizer


@dataclass
class StepGraphs:
    """A model's train and eval graphs and the names of the state they carry."""

    train: Graph
    eval: Graph
    params: list[str]
    buffers: list[str]         # running statistics: read, and written as next/<name>
    slots: list[str]           # optimizer slots, "<slot>/<param>"
    input_name: str
    has_correct: bool

    @property
    def data_names(self) -> tuple[str, str]:
        return self.input_name, TARGET

    @property
    def optimizer_state(self) -> list[str]:
        """Everything the optimizer owns: the slots, the learning rate, the step count."""
        return [*self.slots, LR, STEP]

    def initial_state(self, weights: dict[str, np.ndarray], lr: float,
                      saved: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Weights and buffers from `weights`; slots zero, lr, step 0; `saved` (a resumed
        run's optimizer state) overrides."""
        state = {n: weights[n] for n in self.params + self.buffers}
        for name in self.slots:
            slot = self.train.value(name)
            state[name] = np.zeros(slot.shape, slot.dtype)
        state[LR] = np.array(lr, np.float32)
        state[STEP] = np.array(0, np.int64)
        for name, value in (saved or {}).items():
            if name in state:
                state[name] = np.asarray(value, dtype=state[name].dtype).reshape(
                    np.shape(state[name]))
        return state


def _target_shape(out: Value, loss: Loss) -> tuple:
    if loss.sparse_labels:
        return (out.shape[0] if out.shape else "N",)
    return out.shape


# activations a logits loss applies itself: loss -> the op in front of it that is fused away
_FUSED = {"sparse_categorical_crossentropy": ("Softmax", "LogSoftmax"),
          "categorical_crossentropy": ("Softmax", "LogSoftmax"),
          "binary_crossentropy": ("Sigmoid",)}


def logits_of(out: Value, loss: Loss) -> Value:
    """What the loss should read: `out`, or, when `out` is a Softmax/LogSoftmax over the class
    axis (cross-entropy) or a Sigmoid (binary cross-entropy), the activation's input. These
    losses take logits and apply the activation themselves; applying it twice would squash
    the gradients (Iris: validation loss 0.55 instead of 0.003). Inference keeps it."""
    node = out.producer
    if node is None or node.op_type not in _FUSED.get(loss.name, ()):
        return out
    if node.op_type != "Sigmoid":
        rank = len(out.shape) if out.shape is not None else None
        axis = node.attr("axis")
        if rank is None or axis % rank != 1:
            return out  # not over the class axis: the loss reads what the model gives
    return node.inputs[0]


def _add_loss(graph: Graph, loss: Loss) -> tuple[Value, Value | None]:
    out = graph.outputs[0]
    if out.dtype.kind != "f":
        raise DataError(f"model output {out.name!r} is {out.dtype}, not floating; a loss needs "
                        "float predictions")
    target = graph.add_input(TARGET, loss.target_dtype(), _target_shape(out, loss))
    out = logits_of(out, loss)
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


def _step_counter(graph: Graph) -> Value:
    """The `opt/step` input (layers that draw random numbers may have made it already)."""
    if graph.has_value(STEP):
        return graph.value(STEP)
    return graph.add_input(STEP, np.int64, ())


# parameter elements up to which the optimizer may update all parameters as one flat vector:
# k nodes in all instead of k per parameter tensor, for about 3 nodes per tensor of reshapes,
# concats and a split, and a copy of the parameters and gradients, which outweighs the saved
# kernel launches on large models (measured: 2-layer MLPs on a 2-core CPU, Adam 10-24% faster
# up to 1e4 parameters, 2% slower at 2e5; SGD with momentum no faster at 2 tensors)
FLAT_UPDATE_LIMIT = 2 ** 17
FLAT = "*"  # the parameter name of flat slots: `m/*`, `v/*`


def build_train_graph(forward: Graph, params: list[str], loss: Loss, optimizer: Optimizer,
                      buffers: list[str] = (), flat: bool | None = None
                      ) -> tuple[Graph, list[str]]:
    """One optimizer step as a graph; returns it and the slot names. The forward graph's
    outputs after the first are the buffers' next values (`next/<buffer>`), kept as outputs.
    `flat` (default: parameters <= FLAT_UPDATE_LIMIT elements, more than one tensor) updates
    all parameters as one vector with one set of slots."""
    graph = forward
    buffer_updates = graph.outputs[1:]
    graph.outputs = graph.outputs[:1]
    param_values = _promote(graph, params)
    _promote(graph, list(buffers))
    value, correct = _add_loss(graph, loss)
    grads = gradients(graph, value, param_values)
    step = _step_counter(graph)
    lr = graph.add_input(LR, np.float32, ())
    if flat is None:
        n, k = len(params), optimizer.update_nodes
        flat = (k - 3) * n > k + 3 and sum(_size(p) for p in param_values) <= FLAT_UPDATE_LIMIT
    with graph.name_scope("opt/"):
        t = ops.Add(step, graph.constant(np.array(1, np.int64)))  # this step's number, 1-based
        shared = optimizer.prepare(lr, ops.Cast(t, to=1))  # to=1: float32
        update = _flat_update if flat else _per_parameter_update
        slot_names, new_values = update(graph, optimizer, param_values, grads, shared)
    outputs = [value] + ([correct] if correct is not None else []) + buffer_updates
    for name, v in [(STEP, t)] + new_values:
        v = ops.own_output(v, outputs)
        graph.rename_value(v, next_name(name))
        outputs.append(v)
    graph.outputs = outputs
    simplify(graph)
    return graph, slot_names


def _size(v: Value) -> int:
    if v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return 2 ** 62  # unknown: never flatten
    return int(np.prod(v.shape, dtype=np.int64))


def _per_parameter_update(graph: Graph, optimizer: Optimizer, params: list[Value],
                          grads: list[Value], shared: dict) -> tuple[list, list]:
    slot_names, new_values = [], []
    for p, g in zip(params, grads):
        slots = {s: graph.add_input(slot_name(s, p.name), p.dtype, p.shape)
                 for s in optimizer.slots}
        new_p, new_slots = optimizer.update(p, g, slots, shared)
        new_values.append((p.name, new_p))
        for s in optimizer.slots:
            slot_names.append(slot_name(s, p.name))
            new_values.append((slot_name(s, p.name), new_slots[s]))
    return slot_names, new_values


def _flat_update(graph: Graph, optimizer: Optimizer, params: list[Value], grads: list[Value],
                 shared: dict) -> tuple[list, list]:
    """Concatenate parameters and gradients, update once, split back into the shapes."""
    def flatten(vs: list[Value]) -> Value:
        minus_one = graph.constant(np.array([-1], np.int64))
        return ops.Concat(*[v if v.rank == 1 else ops.Reshape(v, minus_one) for v in vs],
                          axis=0)
    sizes = [_size(p) for p in params]
    total = (sum(sizes),)
    slots = {s: graph.add_input(slot_name(s, FLAT), params[0].dtype, total)
             for s in optimizer.slots}
    new_flat, new_slots = optimizer.update(flatten(params), flatten(grads), slots, shared)
    pieces = ops.Split(new_flat, np.array(sizes, np.int64), axis=0, _num_outputs=len(params))
    new_values = []
    for p, piece in zip(params, pieces):
        shape = graph.constant(np.array(p.shape, np.int64))
        new_values.append((p.name, piece if p.rank == 1 else ops.Reshape(piece, shape)))
    new_values += [(slot_name(s, FLAT), new_slots[s]) for s in optimizer.slots]
    return [slot_name(s, FLAT) for s in optimizer.slots], new_values


def build_step_graphs(source, loss: Loss, optimizer: Optimizer,
                      flat: bool | None = None) -> StepGraphs:
    """Train and eval graphs of a model source (irkit.train.sources)."""
    params, buffers = source.trainable(), source.buffers()
    if not params:
        raise DataError("the model has no trainable weights; check --trainable/--freeze")
    train, slots = build_train_graph(source.build(training=True), params, loss, optimizer,
                                     buffers, flat)
    evaluation = build_eval_graph(source.build(training=False), params + buffers, loss)
    excluded = {*params, *buffers, *slots, LR, STEP, TARGET}
    input_name = next(v.name for v in train.inputs if v.name not in excluded)
    return StepGraphs(train, evaluation, params, buffers, slots, input_name,
                      any(v.name == CORRECT for v in train.outputs))
