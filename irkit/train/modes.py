"""Training and inference forms of an imported graph: torch's `model.train()` and `eval()`.

A training-mode export (`torch.onnx.export(..., training=TrainingMode.TRAINING)`) normalizes
with the batch's statistics (BatchNormalization training_mode=1) and drops activations
(Dropout with a constant true training_mode). irkit trains such a graph as torch trains the
module, and writes what it trained as an inference model:

1. `running_statistics`: the running mean and variance initializers (inputs 3 and 4) of the
   training-mode BatchNormalizations. They are state, never weights: `untie_running_statistics`
   gives each such node its own (the exporters merge initializers of equal value, e.g. the
   zero means of a fresh model), so that each is updated from its own batch.
2. `training_form`: the graph as exported, plus the outputs `next/<running statistic>` with
   torch's update, running = m running + (1 - m) batch statistic (m the ONNX momentum, the
   weight of the old value: torch's momentum 0.1 is ONNX's 0.9), the variance unbiased as in
   torch (onnxruntime's and ONNX's running_var output uses the biased one: it is rescaled by
   n / (n - 1), n the elements per channel). Each training Dropout with a constant ratio draws
   its mask from irkit's hash of (seed, step count, element index), as `nn.Dropout` does, so
   a resumed run draws the masks of an uninterrupted one (onnxruntime's generator keeps a
   state no training file holds).
3. `inference_form`: each training-mode BatchNormalization becomes training_mode=0 (its one
   output, reading the running statistics), each Dropout's constant true training flag a
   constant false; nothing else changes (names, order, other nodes).
4. `set_batch_norm_mode`: how BatchNorm trains, whatever mode the file was exported in
   (BATCHNORM_MODES, the one list of the choice: `irkit train --batchnorm`, `load_model(...,
   batchnorm=)`). "train" (the default, as torch's `model.train()`): every BatchNormalization
   whose running statistics are initializers normalizes with the batch's statistics and
   updates them (2.), an inference-mode one included: the dynamo exporter writes inference
   BatchNorm even for a module in training mode, and an eval-mode export is what most files
   are. "frozen": every one reads its running statistics and keeps them (torch's `bn.eval()`
   inside a training model, the usual choice for small batches); its scale and bias still
   train unless frozen. Either way the written model is in inference mode (3.).
"""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.errors import DataError
from irkit.ir import Graph, Node, Value
from irkit.ops.base import const_array
from irkit.ops.norm import batch_moments
from irkit.ops.shape import onnx_dtype
from irkit.signature import next_name

BATCH_NORM, DROPOUT = "BatchNormalization", "Dropout"
MEAN, VAR = 3, 4  # BatchNormalization's running statistics, by input position
BATCHNORM_MODES = ("train", "frozen")  # how BatchNorm trains (4.); the first is the default


def training_batch_norms(graph: Graph) -> list[Node]:
    """The BatchNormalization nodes in training mode (batch statistics)."""
    return [n for n in graph.nodes if n.op_type == BATCH_NORM and n.domain == ""
            and ops.attr(n, "training_mode")]


def training_dropouts(graph: Graph) -> list[Node]:
    """The Dropout nodes whose training_mode is a constant true."""
    found = []
    for node in graph.nodes:
        if node.op_type != DROPOUT or node.domain != "" or len(node.inputs) < 3:
            continue
        flag = const_array(node.inputs[2], "training_mode")
        if flag is not None and bool(flag):
            found.append(node)
    return found


def _statistics_of(node: Node) -> list[Value]:
    """The running statistics a training-mode BatchNormalization reads that are initializers
    (the state it updates)."""
    return [v for v in node.inputs[MEAN:VAR + 1] if v is not None and v.const is not None
            and v.name in node.graph.initializers]


def running_statistics(graph: Graph) -> list[str]:
    """The initializers that training-mode BatchNormalizations read as running mean and
    variance, in node order."""
    names: list[str] = []
    for node in training_batch_norms(graph):
        names += [v.name for v in _statistics_of(node) if v.name not in names]
    return names


def untie_running_statistics(graph: Graph) -> None:
    """Give every reader but the first of a running statistic read by several nodes its own
    copy (`<name>_<k>`), in place: each BatchNormalization updates its own."""
    for node in training_batch_norms(graph):
        for index in (MEAN, VAR):
            v = node.inputs[index] if len(node.inputs) > index else None
            if v is None or v.const is None or len(v.uses) < 2:
                continue
            if v.uses[0] == (node, index):
                continue  # the first reader keeps the name
            copy = graph.add_initializer(graph.unique_name(v.name), np.array(v.const))
            graph.set_input(node, index, copy)


def set_batch_norm_mode(graph: Graph, mode: str) -> list[str]:
    """`graph`'s BatchNormalizations set to train on batch statistics ("train") or to read
    their running statistics ("frozen"), in place (the module docstring, 4.); the names of the
    nodes changed. A node whose running statistics are not initializers (nothing to update),
    or whose running-statistic outputs are read, is left as it is. DataError for another
    mode."""
    if mode not in BATCHNORM_MODES:
        raise DataError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {mode!r}")
    train = mode == BATCHNORM_MODES[0]
    changed = []
    for node in [n for n in graph.nodes if n.op_type == BATCH_NORM and n.domain == ""]:
        if bool(ops.attr(node, "training_mode")) == train or not _unread(node.outputs[1:]) \
                or len(_statistics_of(node)) < 2:
            continue
        _rebuilt(graph, node, {**node.attributes, "training_mode": int(train)}, 1)
        changed.append(node.name)
    if changed:
        graph.toposort()
    return changed


def _rebuilt(graph: Graph, old: Node, attributes: dict, num_outputs: int) -> Node:
    """`old` replaced by a node of the same op, inputs, name and output names with
    `attributes` and `num_outputs` outputs (new ones named after the node); the readers of
    the outputs kept read the new node's. Outputs dropped must be unread."""
    inputs, names, node_name = list(old.inputs), [o.name for o in old.outputs], old.name
    extra = [graph.unique_name(f"{node_name}.out{i}") for i in range(len(names), num_outputs)]
    temp = ops.apply(graph, old.op_type, inputs, attributes, num_outputs=num_outputs)
    for a, b in zip(old.outputs, temp.outputs):
        graph.replace_all_uses_with(a, b)
    graph.remove_node(old)  # its names are free now
    node = ops.apply(graph, old.op_type, inputs, attributes, num_outputs=num_outputs,
                     name=node_name, output_names=(names + extra)[:num_outputs])
    for a, b in zip(temp.outputs, node.outputs):
        graph.replace_all_uses_with(a, b)
    graph.remove_node(temp)
    return node


def _unread(values: list[Value]) -> bool:
    return not any(v.uses or v in v.graph.outputs for v in values)


def _drop_if_unread(graph: Graph, value: Value) -> None:
    """Remove a constant nobody reads any more (a Constant node or an initializer)."""
    if value.uses or value in graph.outputs:
        return
    if value.producer is not None and value.producer.op_type == "Constant":
        graph.remove_node(value.producer)
    elif value.name in graph.initializers:
        graph.remove_initializer(value.name)


def inference_form(graph: Graph) -> Graph:
    """`graph` (in place, and returned) in inference form (the module docstring, 3)."""
    changed = False
    for node in training_batch_norms(graph):
        if _unread(node.outputs[1:]):
            _rebuilt(graph, node, {**node.attributes, "training_mode": 0}, 1)
            changed = True
    for node in training_dropouts(graph):
        flag = node.inputs[2]
        # named after the node: a training file holds this graph's initializers and the
        # train step's under one namespace, where a `const_<k>` may name another constant
        off = graph.add_initializer(graph.unique_name(f"{node.name}.inference"),
                                    np.array(False))
        graph.set_input(node, 2, off)
        _drop_if_unread(graph, flag)
    if changed:
        graph.toposort()
    return graph


def training_form(graph: Graph, statistics: list[str]) -> Graph:
    """`graph` (in place, and returned) in training form (the module docstring, 2), with the
    outputs `next/<name>` of the running statistics `statistics` (running_statistics of the
    graph it was made from)."""
    wanted, updates = set(statistics), []
    for node in training_batch_norms(graph):
        if not any(v.name in wanted for v in _statistics_of(node)):
            continue
        if len(node.outputs) < 3:
            node = _rebuilt(graph, node, dict(node.attributes), 3)
        updates += _running_updates(graph, node, wanted)
    for seed, node in enumerate(training_dropouts(graph)):
        _hashed_dropout(graph, node, seed)
    graph.toposort()
    for name, value in updates:
        value = ops.own_output(value, graph.outputs)
        graph.rename_value(value, next_name(name))
        graph.outputs.append(value)
    return graph


def _running_updates(graph: Graph, node: Node, wanted: set[str]) -> list[tuple[str, Value]]:
    """[(running statistic, its next value)] of one training-mode BatchNormalization: the
    mean as the op gives it, the variance with the unbiased batch variance (torch's update).

    Nothing but the node reads the running statistics: onnxruntime's CPU kernel writes its
    running outputs into those inputs' buffers, whether or not the outputs are read (seen
    with onnxruntime 1.31), so another reader could see them updated already."""
    x, mean, var = node.inputs[0], node.inputs[MEAN], node.inputs[VAR]
    m = float(ops.attr(node, "momentum"))
    found = []
    if mean.name in wanted:
        found.append((mean.name, node.outputs[1]))
    if var.name in wanted:
        # ONNX's output: m var + (1 - m) biased; torch's: m var + (1 - m) biased n / (n - 1),
        # so add (1 - m) biased / (n - 1). The batch variance is computed as the op's
        # gradient recomputes it (irkit.ops.norm.batch_moments), so the two are merged.
        biased = batch_moments(x, [0, *range(2, x.rank)])[2]
        channels = graph.constant(np.array(mean.const.size, var.dtype))
        n = ops.Div(ops.Cast(ops.Size(x), to=onnx_dtype(var.dtype)), channels)
        # n = 1 (a batch of one row after a Linear): torch refuses the batch; the unbiased
        # variance is undefined, so the update is ONNX's biased one (adds 0), not a NaN
        one = graph.constant(np.array(1.0, var.dtype))
        coefficient = ops.Div(graph.constant(np.array(1.0 - m, var.dtype)),
                              ops.Max(ops.Sub(n, one), one))
        flat = ops.Reshape(biased, graph.constant(np.array([-1], np.int64)))
        found.append((var.name, ops.Add(node.outputs[2], ops.Mul(flat, coefficient))))
    return found


def _hashed_dropout(graph: Graph, node: Node, seed: int) -> None:
    """A training Dropout replaced by x * keep / (1 - ratio), keep drawn by nn.Dropout's
    hash; left as it is when its ratio is not a constant."""
    from irkit.nn.layers import hashed_dropout
    ratio_input = node.inputs[1] if len(node.inputs) > 1 else None
    ratio = 0.5 if ratio_input is None else const_array(ratio_input, "ratio")
    if ratio is None:
        return
    seed = int(ops.attr(node, "seed") or seed) % 2**31
    dropped, keep = hashed_dropout(node.inputs[0], seed, float(ratio))
    graph.replace_all_uses_with(node.outputs[0], dropped)
    if len(node.outputs) > 1:
        graph.replace_all_uses_with(node.outputs[1], keep)
    graph.remove_node(node)
