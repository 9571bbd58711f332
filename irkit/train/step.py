"""The train-step and evaluation graphs of a model (names: irkit.signature).

train: (params, buffers, slots, opt/lr, opt/step, inputs, target?)
           -> (loss, correct?, count?, next/params, next/buffers, next/slots, next/opt/step)
eval:  (params, buffers, inputs, target?) -> (loss, correct?, count?)

`inputs` are the model's (one or several, each of its own dtype); the target is absent when the
loss is an output of the model. A step may clip the gradients to a global norm (`clip_norm`,
as torch.nn.utils.clip_grad_norm_) and accumulate them over `accumulate` micro-batches before
one update (slots `accum/<param>`; the parameters move every `accumulate`-th step).

Both are standard ai.onnx graphs. The learning rate and the step count are optimizer state
(as Keras' optimizer variables are): a schedule sets `opt/lr` between steps, and a training
file stores it once, with the rest of the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit import ops
from irkit.errors import DataError, ModelFileError
from irkit.ir import Graph, Value, ValueList
from irkit.passes import EliminateDeadNodesPass, gradients, simplify
from irkit.signature import (
    ACCUMULATED,
    CORRECT,
    COUNT,
    GRADS,
    LOSS,
    LR,
    NEXT,
    STEP,
    TARGET,
    next_name,
    slot_name,
)
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
    input_names: tuple[str, ...]  # the model's batch inputs, in order
    has_correct: bool
    optimizer: Optimizer | None = None  # what built the update (a data-parallel split needs it)
    has_target: bool = True

    @classmethod
    def of(cls, train: Graph, evaluation: Graph, params: list[str], buffers: list[str],
           slots: list[str], optimizer: Optimizer | None = None) -> StepGraphs:
        """The graphs with what they derive: the batch inputs' names, whether the step reads
        a target and whether it counts correct predictions."""
        state = {*params, *buffers, *slots, LR, STEP, TARGET}
        inputs = tuple(v.name for v in train.inputs if v.name not in state)
        return cls(train, evaluation, params, buffers, slots, inputs,
                   any(v.name == CORRECT for v in train.outputs), optimizer,
                   train.has_value(TARGET))

    @property
    def input_name(self) -> str:
        """The first batch input (the only one of a layer model)."""
        return self.input_names[0]

    def split(self, settings) -> SplitGraphs:
        """The step cut around its gradients, for data-parallel runners (split_step)."""
        return split_step(self, self.optimizer, settings)

    @property
    def data_names(self) -> tuple[str, ...]:
        """What a batch feeds, in the order runners stage it: the inputs, then the target."""
        return (*self.input_names, TARGET) if self.has_target else self.input_names

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
                if np.size(value) != np.size(state[name]):
                    raise ModelFileError(f"the saved optimizer state {name!r} has "
                                         f"{np.size(value)} values, the step needs shape "
                                         f"{np.shape(state[name])}; the training file is "
                                         "damaged, resume from another or start afresh")
                state[name] = np.asarray(value, dtype=state[name].dtype).reshape(
                    np.shape(state[name]))
        return state


def logits_of(out: Value, loss: Loss) -> Value:
    """What the loss should read: `out`, or, when `out` is a Softmax/LogSoftmax over the class
    axis (cross-entropy) or a Sigmoid (binary cross-entropy), the activation's input. These
    losses take logits and apply the activation themselves; applying it twice would squash
    the gradients (Iris: validation loss 0.55 instead of 0.003). Inference keeps it."""
    node = out.producer
    if node is None or node.op_type not in loss.fuses:
        return out
    if node.op_type != "Sigmoid":
        rank = len(out.shape) if out.shape is not None else None
        axis = ops.attr(node, "axis")
        if rank is None or axis % rank != loss.class_axis(rank):
            return out  # not over the class axis: the loss reads what the model gives
    return node.inputs[0]


def _add_loss(graph: Graph, loss: Loss) -> list[Value]:
    """[loss, correct?, count?] of the graph's prediction, named as the signature says."""
    out = loss.prediction(graph)
    if out.dtype.kind != "f":
        raise DataError(f"model output {out.name!r} is {out.dtype}, not floating; a loss needs "
                        "float predictions")
    target = None
    if loss.reads_target:
        target = graph.add_input(TARGET, loss.target_dtype(), loss.target_shape(out))
        out = logits_of(out, loss)
    value = ops.own_output(loss.build(out, target), [])
    graph.rename_value(value, LOSS)
    figures = [value]
    for name, made in ((CORRECT, loss.correct), (COUNT, loss.count)):
        v = made(out, target) if target is not None else None
        if v is not None:
            graph.rename_value(v, name)
            figures.append(v)
    return figures


def _promote(graph: Graph, names: list[str]) -> list[Value]:
    missing = [n for n in names if n not in graph.initializers]
    if missing:
        raise DataError(f"no weights named {missing}; see `irkit inspect` for the names")
    return [graph.promote_initializer_to_input(n) for n in names]


def build_eval_graph(forward: Graph, params: list[str], loss: Loss) -> Graph:
    """Loss and correct count of a forward graph, params (and buffers) as inputs."""
    graph = forward
    _promote(graph, params)
    graph.outputs = _add_loss(graph, loss)
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
# larger models (up to FLAT_UPDATE_MAX elements, the copies' memory) update flat too when
# their tensors are small on average (at most FLAT_TENSOR_MEAN elements): AdamW fine-tuning
# steps at 1 thread (benchmarks/bench_flat_update.py, CPU time) were 24% faster flat on
# MobileNetV2 (158 tensors, mean 14 k), 5% on a BERT encoder (32, mean 109 k), and 3% slower
# on ResNet-18 (62, mean 180 k)
FLAT_TENSOR_MEAN = 2 ** 17
FLAT_UPDATE_MAX = 2 ** 24
FLAT = "*"  # the parameter name of flat slots: `m/*`, `v/*`


@dataclass(frozen=True)
class UpdateRule:
    """What happens to the gradients before the optimizer reads them: clipped to a global
    norm (`clip_norm` > 0: g * min(1, clip_norm / (|g| + 1e-6)), torch's clip_grad_norm_) and
    averaged over `accumulate` micro-batches (the update lands every `accumulate`-th step)."""

    clip_norm: float = 0.0
    accumulate: int = 1

    @classmethod
    def of(cls, settings) -> UpdateRule:
        """The rule of resolved Settings (irkit.train.settings)."""
        return cls(getattr(settings, "clip_norm", 0.0), getattr(settings, "accumulate", 1))


def build_train_graph(forward: Graph, params: list[str], loss: Loss, optimizer: Optimizer,
                      buffers: list[str] = (), flat: bool | None = None,
                      rule: UpdateRule = UpdateRule()) -> tuple[Graph, list[str]]:
    """One optimizer step as a graph; returns it and the slot names. The forward graph's
    outputs named `next/<buffer>` are the buffers' next values, kept as outputs (its other
    outputs are dropped, the loss's prediction aside). `flat` (default: `use_flat_update`)
    updates all parameters as one vector with one set of slots; `rule` clips and accumulates
    the gradients."""
    graph = forward
    buffer_updates = [v for v in graph.outputs[1:] if v.name.startswith(NEXT)]
    param_values = _promote(graph, params)
    _promote(graph, list(buffers))
    figures = _add_loss(graph, loss)
    grads = gradients(graph, figures[0], param_values)
    if flat is None:
        flat = use_flat_update(optimizer, param_values)
    slot_names, new_values = _optimizer_step(graph, optimizer, param_values, grads, flat, rule)
    _add_next_outputs(graph, new_values, figures + buffer_updates)
    simplify(graph)
    return graph, slot_names


def use_flat_update(optimizer: Optimizer, params: list[Value]) -> bool:
    """Whether the optimizer updates `params` as one flat vector (see FLAT_UPDATE_LIMIT):
    when that saves nodes and the parameters are few enough, or many small tensors."""
    n, k = len(params), optimizer.update_nodes
    total = sum(_size(p) for p in params)
    return (k - 3) * n > k + 3 and (total <= FLAT_UPDATE_LIMIT or (
        total <= FLAT_UPDATE_MAX and total <= FLAT_TENSOR_MEAN * n))


def _optimizer_step(graph: Graph, optimizer: Optimizer, params: list[Value],
                    grads: list[Value] | Value, flat: bool, rule: UpdateRule = UpdateRule()
                    ) -> tuple[list[str], list]:
    """The optimizer's update of `params` given their gradients (one per parameter, or one
    flat vector in parameter order), after `rule`: the slot names and [(state name, new
    value)], the step count first. Reads `opt/step` and `opt/lr` (made here when absent)."""
    step = _step_counter(graph)
    lr = graph.add_input(LR, np.float32, ())
    n = rule.accumulate
    with graph.name_scope("opt/"):
        t = ops.Add(step, graph.constant(np.array(1, np.int64)))  # this step's number, 1-based
        grads = _flatten(graph, grads) if flat and not isinstance(grads, Value) else grads
        if not flat and isinstance(grads, Value):
            grads = _unflatten(graph, grads, params)
        if n > 1:  # the update's number: ceil(t / n), exact on the steps that update
            grads, accumulated = _accumulate(graph, params, grads, n)
            t_update = ops.Div(ops.Add(step, graph.constant(np.array(n, np.int64))),
                               graph.constant(np.array(n, np.int64)))
        if rule.clip_norm:
            grads = _clipped(graph, grads, rule.clip_norm)
        shared = optimizer.prepare(lr, ops.Cast(t_update if n > 1 else t, to=1))  # float32
        if flat:
            slot_names, new_values = _flat_update(graph, optimizer, params, grads, shared)
        else:
            slot_names, new_values = _per_parameter_update(graph, optimizer, params, grads,
                                                           shared)
        if n > 1:
            slot_names, new_values = _on_every(graph, t, n, slot_names, new_values, accumulated)
    return slot_names, [(STEP, t)] + new_values


def _accumulate(graph: Graph, params: list[Value], grads: list[Value] | Value, n: int):
    """(mean gradient over the micro-batches so far, [(slot name, sum)]): each gradient (or
    the flat one) plus its slot `accum/<param>` (`accum/*`)."""
    if isinstance(grads, Value):
        like = [(slot_name(ACCUMULATED, FLAT), grads)]
    else:
        like = [(slot_name(ACCUMULATED, p.name), g) for p, g in zip(params, grads)]
    sums = [(name, ops.Add(graph.add_input(name, g.dtype, tuple(_shape_of(g, params))), g))
            for name, g in like]
    means = [ops.Div(total, float(n)) for _, total in sums]
    return (means[0] if isinstance(grads, Value) else means), sums


def _shape_of(g: Value, params: list[Value]) -> tuple:
    if g.shape is not None and all(isinstance(d, int) for d in g.shape):
        return tuple(g.shape)
    return (sum(_size(p) for p in params),)


def _on_every(graph: Graph, t: Value, n: int, slot_names: list[str], new_values: list,
              accumulated: list) -> tuple[list[str], list]:
    """The update's values on every n-th step (t = n, 2n, ...) and the old ones between; the
    gradient sums kept between and reset to 0 by an update."""
    n_const = graph.constant(np.array(n, np.int64))
    due = ops.Equal(ops.Mul(ops.Div(t, n_const), n_const), t)  # t % n == 0
    kept = [(name, ops.Where(due, v, graph.value(name))) for name, v in new_values]
    zero = graph.constant(np.array(0.0, np.float32))
    kept += [(name, ops.Where(due, zero, total)) for name, total in accumulated]
    return slot_names + [name for name, _ in accumulated], kept


def _clipped(graph: Graph, grads: list[Value] | Value, clip_norm: float):
    """The gradients scaled by min(1, clip_norm / (global L2 norm + 1e-6))."""
    pieces = [grads] if isinstance(grads, Value) else grads
    squares = [ops.ReduceSum(ops.Mul(g, g), keepdims=0) for g in pieces]
    total = squares[0]
    for sq in squares[1:]:
        total = ops.Add(total, sq)
    norm = ops.Sqrt(total)
    coef = ops.Min(ops.Div(graph.constant(np.array(clip_norm, np.float32)),
                           ops.Add(norm, 1e-6)), graph.constant(np.array(1.0, np.float32)))
    scaled = [ops.Mul(g, coef) for g in pieces]
    return scaled[0] if isinstance(grads, Value) else scaled


def _add_next_outputs(graph: Graph, new_values: list, outputs: list[Value]) -> None:
    """Append each new state value to `outputs` as `next/<name>`; they become the graph's."""
    outputs = ValueList(outputs)  # `in` of own_output in constant time
    for name, v in new_values:
        v = ops.own_output(v, outputs)
        graph.rename_value(v, next_name(name))
        outputs.append(v)
    graph.outputs = outputs


def _size(v: Value) -> int:
    if v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return 2 ** 62  # unknown: never flatten
    return int(np.prod(v.shape, dtype=np.int64))


def _flatten(graph: Graph, vs: list[Value]) -> Value:
    """The values' elements in one vector, in order."""
    minus_one = graph.constant(np.array([-1], np.int64))
    return ops.Concat(*[v if v.rank == 1 else ops.Reshape(v, minus_one) for v in vs], axis=0)


def _unflatten(graph: Graph, flat: Value, like: list[Value]) -> list[Value]:
    """`flat` split back into pieces shaped like `like` (the inverse of _flatten)."""
    sizes = [_size(p) for p in like]
    pieces = [flat] if len(like) == 1 else ops.Split(
        flat, np.array(sizes, np.int64), axis=0, _num_outputs=len(like))
    return [piece if p.rank == 1 else
            ops.Reshape(piece, graph.constant(np.array(p.shape, np.int64)))
            for p, piece in zip(like, pieces)]


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


def _flat_update(graph: Graph, optimizer: Optimizer, params: list[Value],
                 grads: list[Value] | Value, shared: dict) -> tuple[list, list]:
    """Update the parameters concatenated into one vector once, split back into the shapes;
    `grads` one per parameter, or already flat."""
    total = (sum(_size(p) for p in params),)
    slots = {s: graph.add_input(slot_name(s, FLAT), params[0].dtype, total)
             for s in optimizer.slots}
    flat_params = _flatten(graph, params)
    flat_grad = grads if isinstance(grads, Value) else _flatten(graph, grads)
    new_flat, new_slots = optimizer.update(flat_params, flat_grad, slots, shared)
    new_values = [(p.name, piece) for p, piece in zip(params, _unflatten(graph, new_flat,
                                                                         params))]
    new_values += [(slot_name(s, FLAT), new_slots[s]) for s in optimizer.slots]
    return [slot_name(s, FLAT) for s in optimizer.slots], new_values


def build_step_graphs(source, loss: Loss, optimizer: Optimizer,
                      flat: bool | None = None, rule: UpdateRule = UpdateRule()) -> StepGraphs:
    """Train and eval graphs of a model source (irkit.train.sources)."""
    params, buffers = source.trainable(), source.buffers()
    if not params:
        raise DataError("the model has no trainable weights; check --trainable/--freeze")
    train, slots = build_train_graph(source.build(training=True), params, loss, optimizer,
                                     buffers, flat, rule)
    evaluation = build_eval_graph(source.build(training=False), params + buffers, loss)
    return StepGraphs.of(train, evaluation, params, buffers, slots, optimizer)


@dataclass
class SplitGraphs:
    """A train step cut in two for data-parallel training, the gradients between them in one
    flat vector (`grad/*`, the parameters' gradients concatenated in parameter order):

    gradient: (params, buffers, opt/step?, input, target) -> (loss, correct?, next/buffers,
              grad/*)          opt/step only where the forward draws random numbers (Dropout)
    update:   (params, slots, opt/lr, opt/step, grad/*) -> (next/params, next/slots,
              next/opt/step)

    The update graph is made by the same optimizer code, with the same flat or per-parameter
    choice and slot names, as the one-graph step: the state is the same, so a run can move
    between one process and many.
    """

    gradient: Graph
    update: Graph
    grad_size: int


def build_split_graphs(train: Graph, params: list[str], buffers: list[str], slots: list[str],
                       optimizer: Optimizer, rule: UpdateRule = UpdateRule()) -> SplitGraphs:
    """The gradient and update graphs of a one-graph train step `train` (as
    build_train_graph makes it, or as a training file stores it). The gradient graph is the
    step's own training-mode forward and loss, differentiated again; the update graph is built
    by `optimizer`, flat when the step's slots are (`<slot>/*`). DataError if the optimizer's
    slots are not the step's."""
    gradient = _gradient_graph(train, params, buffers)
    flat_slots = [s for s in slots if s.endswith("/" + FLAT)]
    param_values = [train.value(p) for p in params]
    flat = bool(flat_slots) if slots else use_flat_update(optimizer, param_values)
    update = Graph("update_step")
    inputs = [update.add_input(p.name, p.dtype, p.shape) for p in param_values]
    size = sum(_size(p) for p in param_values)
    grad = update.add_input(GRADS, param_values[0].dtype, (size,))
    made, new_values = _optimizer_step(update, optimizer, inputs, grad, flat, rule)
    if sorted(made) != sorted(slots):
        raise DataError(f"the {optimizer.name or 'given'} optimizer keeps the state "
                        f"{sorted(made)}, the train step {sorted(slots)}; resume with the "
                        "optimizer the run was started with")
    _add_next_outputs(update, new_values, [])
    simplify(update)
    return SplitGraphs(gradient, update, size)


def _gradient_graph(train: Graph, params: list[str], buffers: list[str]) -> Graph:
    """The train step's forward and loss (everything `loss`, `correct` and the buffers' next
    values depend on), with the loss's gradients as one flat output `grad/*`."""
    graph = train.copy()
    keep = [LOSS, CORRECT, COUNT] + [next_name(b) for b in buffers]
    graph.outputs = [graph.value(n) for n in keep if graph.has_value(n)]
    EliminateDeadNodesPass()(graph)
    for v in list(graph.inputs):
        if not v.uses and v not in graph.outputs:
            graph.remove_input(v)
    grads = gradients(graph, graph.value(LOSS), [graph.value(p) for p in params])
    with graph.name_scope("grad/"):
        flat = ops.own_output(_flatten(graph, grads), graph.outputs)
    graph.rename_value(flat, GRADS)
    graph.outputs = [*graph.outputs, flat]
    simplify(graph)
    return graph


def split_step(graphs: StepGraphs, optimizer: Optimizer, settings) -> SplitGraphs:
    """The SplitGraphs of a model's step graphs, the gradient graph checkpointed as the
    one-graph step is (`settings.recompute`, irkit.passes.apply_checkpointing)."""
    split = build_split_graphs(graphs.train, graphs.params, graphs.buffers, graphs.slots,
                               optimizer, UpdateRule.of(settings))
    if settings.recompute != "none":
        from irkit.passes import apply_checkpointing
        apply_checkpointing(split.gradient, settings.recompute, settings.batch_size)
    return split
