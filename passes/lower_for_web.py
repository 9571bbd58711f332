"""LowerForWebPass: a step or evaluation graph in forms onnxruntime-web's WebGPU provider runs,
so that no node of it falls back to the CPU (`irkit export --bundle DIR --target web`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.lower_losses import LowerSoftmaxCrossEntropyPass
from irkit.passes.manager import GraphPass, PassResult, replace_node

from irkit import ops
from irkit.errors import UnsupportedOpError
from irkit.ir import Graph, Node, Value
from irkit.ops.dtypes import onnx_dtype
from irkit.ops.norm import batch_statistics

INT32 = np.dtype(np.int32)
INT64 = np.dtype(np.int64)
# ops that compute on int32 as on int64, and the inputs that share the integer dtype (the
# others, such as Reshape's shape or Unsqueeze's axes, stay int64 as ONNX wants them)
_SAME_DTYPE = {op: (0, 1) for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less",
                                       "Greater", "LessOrEqual", "GreaterOrEqual")}
_SAME_DTYPE.update({op: (0,) for op in ("Identity", "Neg", "Abs", "Reshape", "Unsqueeze",
                                        "Squeeze", "Flatten", "Expand", "Cast")})
_SAME_DTYPE["Where"] = (1, 2)
# int32 indices (labels) are as good as int64 here
_INDEX_INPUTS = {"Gather": 1, "GatherElements": 1, "SoftmaxCrossEntropyLoss": 1,
                 "NegativeLogLikelihoodLoss": 1}
_ANY_DTYPE = ("Size", "Shape")  # read only the shape (their int64 output: case 5)
# WebGPU's default (guaranteed) maxStorageBuffersPerShaderStage; SwiftShader's is 10, and
# onnxruntime-web fails a kernel that binds more ("Too many storage buffers in shader")
MAX_BUFFERS = 8


class LowerForWebPass(GraphPass):
    """Rewrite what onnxruntime-web 1.31's WebGPU provider hands to the CPU (measured by
    js/profile-step.mjs --webgpu in headless Chromium; benchmarks/README.md):

    1. `SoftmaxCrossEntropyLoss` becomes LowerSoftmaxCrossEntropyPass's plain ops (its ONNX
       function, which onnxruntime would run, computes shapes in int64);
    2. `LogSoftmax(x, axis)` (no WebGPU kernel) becomes `d - Log(ReduceSum(Exp(d)))` with
       `d = x - ReduceMax(x)` over the axis, the form onnxruntime's CPU kernel computes;
    3. the int64 graph inputs named `integers` (the class targets, the step counter) become
       int32 inputs of the same names (WebGPU has no int64 arithmetic): every node computing
       on them is rebuilt on int32, the int64 constants it reads converted (refused if out of
       int32's range); an op not known to compute the same on int32 is refused, naming it;
    4. `OneHot(indices, depth, [off, on])` of such a value (no WebGPU kernel) becomes
       `Where(Equal(Unsqueeze(indices, axis), arange(depth)), on, off)` (a Cast of the Equal
       for off, on = 0, 1), for indices in [0, depth) (negative ones are not wrapped);
    5. `Cast(Size(v), to=float)` (Size's int64 output has no WebGPU kernel) becomes v's known
       dims' product times each unknown dim counted on a graph input of rank <= 2 that has it
       (`ReduceSum(Cast(Equal(t, t)))` of an integer vector, or w's element count over its
       known dims; see 7 for why not v's own Shape, used if no input has the dim), exact
       below 2**24 elements;
    6. an `ArgMax` output meeting such an int32 value, or compared with another ArgMax's (the
       accuracy of one-hot targets), becomes `Gather(arange(C), ArgMax)` with C the (static)
       size of the reduced axis: the same index as int32;
    7. `Reshape(data, Shape(x))` with x's shape known but for one dim (the batch) becomes
       `Reshape(data, [-1 there, the known dims])`, and `Expand(data, Shape(x))` whose data
       has x's unknown dims becomes `Expand(data, [1 there, the known dims])`: onnxruntime
       turns the Shape of an image tensor, which WebGPU holds channels-last, into a Gather of
       int64 dims on the CPU;
    8. a `Concat` of more inputs, or a `Split` into more outputs, than a WebGPU shader may bind
       (MAX_BUFFERS storage buffers, inputs and outputs together; Adam's flat update of ten
       tensors needs eleven) becomes a tree of Concats (Splits) that each bind few enough;
    9. a training-mode `BatchNormalization` (onnxruntime-web's WebGPU kernel refuses
       training_mode, "not supported yet") becomes its ONNX definition in plain ops: the batch
       mean and biased variance over every axis but 1 (`irkit.ops.norm.batch_statistics`, the
       form its gradient recomputes them in), `(x - mean) / Sqrt(var + epsilon)` scaled and
       shifted, and the running outputs `momentum * running + (1 - momentum) *
       batch`.

    The graph's inputs and outputs keep their names; an output computed on the lowered inputs
    (the next step count) is int32 too. Graphs without those inputs or ops are left alone.
    """

    def __init__(self, integers: Sequence[str] = ()) -> None:
        self.integers = tuple(integers)

    def call(self, graph: Graph) -> PassResult:
        changed = LowerSoftmaxCrossEntropyPass()(graph).modified
        for node in list(graph.nodes):
            if node.op_type == "LogSoftmax" and graph.holds(node):
                _lower_log_softmax(graph, node)
                changed = True
            elif node.op_type == "BatchNormalization" and ops.attr(node, "training_mode"):
                _lower_training_batch_norm(graph, node)
                changed = True
        changed = _narrow_integers(graph, self.integers) or changed
        for node in list(graph.nodes):
            if node.op_type == "Equal" and all(_is_argmax(v) for v in node.inputs):
                for i, v in enumerate(list(node.inputs)):
                    graph.set_input(node, i, _as_int32(graph, node, v))
                changed = True
        for node in list(graph.nodes):
            if node.op_type == "Cast" and graph.holds(node) and _is_float_count(node):
                _lower_float_count(graph, node)
                changed = True
            elif node.op_type in ("Reshape", "Expand") and _known_shape(node) is not None:
                shape = graph.constant(np.array(_known_shape(node), np.int64))
                graph.set_input(node, 1, shape)
                changed = True
            elif node.op_type in ("Concat", "Split") and graph.holds(node) and \
                    len(node.inputs) + len(node.outputs) > MAX_BUFFERS + (node.op_type == "Split"):
                changed = _split_wide(graph, node) or changed
        if changed:
            graph.toposort()
            EliminateDeadNodesPass()(graph)  # the Size nodes case 5 leaves unread
        return PassResult(graph, changed)


def _lower_log_softmax(graph: Graph, node: Node) -> None:
    x = node.inputs[0]
    axis = ops.attr(node, "axis")
    with graph.name_scope(f"{node.name}/"):
        d = ops.Sub(x, ops.ReduceMax(x, axes=[axis], keepdims=1))
        total = ops.ReduceSum(ops.Exp(d), np.array([axis], np.int64), keepdims=1)
        out = ops.Sub(d, ops.Log(total))
    replace_node(graph, node, [out])


def _lower_training_batch_norm(graph: Graph, node: Node) -> None:
    x, scale, bias, running_mean, running_var = node.inputs[:5]
    epsilon, m = float(ops.attr(node, "epsilon")), float(ops.attr(node, "momentum"))
    with graph.name_scope(f"{node.name}/"):  # the statistics as the op's gradient makes them
        mean, centered, var, inv_std = batch_statistics(x, [0, *range(2, x.rank)], epsilon)
        channels = graph.constant(np.array([-1] + [1] * (x.rank - 2), np.int64))
        flat = graph.constant(np.array([-1], np.int64))
        y = ops.Add(ops.Mul(ops.Mul(centered, inv_std), ops.Reshape(scale, channels)),
                    ops.Reshape(bias, channels))
        outs = [y]
        for running, batch in ((running_mean, mean), (running_var, var)):
            outs.append(ops.Add(
                ops.Mul(running, graph.constant(np.array(m, running.dtype))),
                ops.Mul(ops.Reshape(batch, flat), graph.constant(np.array(1 - m, x.dtype)))))
    replace_node(graph, node, outs[:len(node.outputs)])


def _is_argmax(v: Value) -> bool:
    """An ArgMax's int64 index over an axis of static size (case 6 narrows it)."""
    node = v.producer
    if node is None or node.op_type != "ArgMax" or v.dtype != INT64:
        return False
    x = node.inputs[0]
    return x.shape is not None and isinstance(x.shape[ops.attr(node, "axis") % x.rank], int)


def _known_shape(node: Node) -> list[int] | None:
    """Case 7: the dims of the Shape a Reshape (Expand) node reads, -1 (1) for the unknown."""
    shape = node.inputs[1].producer
    if shape is None or shape.op_type != "Shape" or shape.attributes or \
            shape.inputs[0].shape is None:
        return None
    x, data = shape.inputs[0].shape, node.inputs[0].shape
    unknown = [i for i, d in enumerate(x) if not isinstance(d, int)]
    if node.op_type == "Reshape":
        return [-1 if i in unknown else d for i, d in enumerate(x)] if len(unknown) == 1 \
            else None
    if data is None or len(data) != len(x) or any(x[i] is None or data[i] != x[i]
                                                   for i in unknown):
        return None
    return [1 if i in unknown else d for i, d in enumerate(x)]


def _split_wide(graph: Graph, node: Node) -> bool:
    """Case 8 (a Split's sizes input is no storage buffer: it is read on the CPU)."""
    axis = ops.attr(node, "axis")
    with graph.name_scope(f"{node.name}/"):
        if node.op_type == "Concat":
            replace_node(graph, node, [_concat_tree(list(node.inputs), axis)])
            return True
        x, sizes = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if sizes is None or not sizes.is_initializer:
            return False  # even pieces (num_outputs) or computed sizes: left as they are
        replace_node(graph, node, _split_tree(x, [int(n) for n in sizes.const], axis))
    return True


def _concat_tree(pieces: list[Value], axis: int) -> Value:
    width = MAX_BUFFERS - 1
    while len(pieces) > width:
        pieces = [ops.Concat(*group, axis=axis) if len(group) > 1 else group[0]
                  for group in (pieces[i:i + width] for i in range(0, len(pieces), width))]
    return ops.Concat(*pieces, axis=axis)


def _split_tree(x: Value, sizes: list[int], axis: int) -> list[Value]:
    if len(sizes) == 1:
        return [x]
    if len(sizes) < MAX_BUFFERS:
        return list(ops.Split(x, np.array(sizes, np.int64), axis=axis,
                              _num_outputs=len(sizes)))
    per = -(-len(sizes) // (MAX_BUFFERS - 1))  # sizes per group: at most MAX_BUFFERS-1 groups
    groups = [sizes[i:i + per] for i in range(0, len(sizes), per)]
    parts = _split_tree(x, [sum(g) for g in groups], axis)
    return [out for part, group in zip(parts, groups, strict=True)
            for out in _split_tree(part, group, axis)]


def _is_float_count(node: Node) -> bool:
    size = node.inputs[0].producer
    return (size is not None and size.op_type == "Size" and node.outputs[0].dtype.kind == "f")


def _lower_float_count(graph: Graph, node: Node) -> None:
    (v,) = node.inputs[0].producer.inputs
    dtype = node.outputs[0].dtype
    one = graph.constant(np.array(1, dtype))
    with graph.name_scope(f"{node.name}/"):
        dims = [_dim_count(graph, d, dtype) for d in v.shape or () if not isinstance(d, int)]
        if v.shape is None or None in dims:
            count = ops.ReduceSum(ops.Expand(one, ops.Shape(v)), keepdims=0)
        else:
            count = graph.constant(np.array(math.prod(
                d for d in v.shape if isinstance(d, int)), dtype))
            for dim in dims:
                count = ops.Mul(count, dim)
    replace_node(graph, node, [count])


def _dim_count(graph: Graph, dim, dtype) -> Value | None:
    """The size of the symbolic dim `dim` as a float scalar, read from a graph input of rank
    <= 2 that has it (an integer vector first: Equal(w, w) counts it without a Shape), or
    None. (No Shape start/end: onnx cannot convert those below opset 15.)"""
    inputs = sorted((w for w in graph.inputs if dim is not None and w.shape is not None
                     and len(w.shape) <= 2 and dim in w.shape),
                    key=lambda w: (w.dtype.kind != "i" or len(w.shape) != 1))
    for w in inputs:
        if w.dtype.kind == "i" and len(w.shape) == 1:
            return ops.ReduceSum(ops.Cast(ops.Equal(w, w), to=onnx_dtype(dtype)), keepdims=0)
        rest = [d for d in w.shape if d != dim]
        if len(rest) == len(w.shape) - 1 and all(isinstance(d, int) for d in rest):
            total = ops.ReduceSum(ops.Expand(graph.constant(np.array(1, dtype)), ops.Shape(w)),
                                  keepdims=0)
            return ops.Div(total, graph.constant(np.array(math.prod(rest), dtype)))
    return None


def swap_input(graph: Graph, name: str, dtype) -> tuple[Value, Value]:
    """A new input `name` of `dtype` in the place of the input of that name, which is renamed
    `<name>/<its dtype>` and moved last (for the caller to move its readers and remove it)."""
    old = graph.value(name)
    graph.rename_value(old, graph.unique_name(f"{name}/{old.dtype.name}"))
    new = graph.add_input(name, dtype, old.shape)
    graph.inputs.remove(new)
    graph.inputs[graph.inputs.index(old)] = new
    graph.inputs.append(old)
    return old, new


# ---- int64 -> int32 ----------------------------------------------------------------------------
def _narrow_integers(graph: Graph, names: Sequence[str]) -> bool:
    """Case 3 (with 4 and 6 where they meet it): the int64 inputs `names` as int32."""
    narrowed: dict[int, Value] = {}  # the int32 values that replace int64 ones, by id
    for name in names:
        if graph.has_value(name) and graph.value(name) in graph.inputs and \
                graph.value(name).dtype == INT64:
            old, new = swap_input(graph, name, INT32)
            graph.replace_all_uses_with(old, new)
            graph.remove_input(old)
            narrowed[id(new)] = new
    if not narrowed:
        return False
    graph.toposort()
    for node in list(graph.nodes):
        if graph.holds(node) and any(v is not None and id(v) in narrowed for v in node.inputs):
            _rebuild(graph, node, narrowed)
    return True


def _rebuild(graph: Graph, node: Node, narrowed: dict[int, Value]) -> None:
    """`node` again on the int32 values it reads; its outputs that become int32 join them."""
    op = node.op_type
    if op == "OneHot":
        replace_node(graph, node, [_one_hot(graph, node, node.inputs[0])])
        return
    positions = _SAME_DTYPE.get(op)
    inputs = list(node.inputs)
    for i, v in enumerate(inputs):
        if v is None:
            continue
        if id(v) in narrowed:
            if positions is None and _INDEX_INPUTS.get(op) != i and op not in _ANY_DTYPE:
                raise UnsupportedOpError(
                    f"--target web: node {node.name!r} ({op}) computes on the int64 "
                    f"{v.name!r}, which WebGPU needs as int32, and irkit does not know {op} "
                    "to give the same on int32; export with the default target")
        elif positions is not None and i in positions and v.dtype == INT64:
            inputs[i] = _as_int32(graph, node, v)
    if positions is None:  # reads int32 indices or only the shape: as it is
        return
    attributes = dict(node.attributes)
    if op == "Cast" and attributes.get("to") == 7:  # to int64: the value stays int32
        attributes["to"] = 6
    with graph.name_scope(f"{node.name}/"):
        new = ops.apply(graph, op, inputs, attributes, num_outputs=len(node.outputs)).outputs
    narrowed.update({id(out): out for old, out in zip(node.outputs, new, strict=True)
                     if old.dtype == INT64 and out.dtype == INT32})
    replace_node(graph, node, new)


def _as_int32(graph: Graph, node: Node, v: Value) -> Value:
    """An int64 input beside a narrowed one as int32: a constant converted, an ArgMax's index
    (case 6) gathered from an int32 range; anything else refused."""
    if v.is_initializer:
        data = v.const
        if data.size and (data.min() < -2**31 or data.max() >= 2**31):
            raise UnsupportedOpError(f"--target web: node {node.name!r} ({node.op_type}) reads "
                                     f"the int64 constant {v.name!r} beyond int32's range; "
                                     "export with the default target")
        return graph.constant(data.astype(np.int32))
    producer = v.producer
    if producer is not None and producer.op_type == "ArgMax":
        x = producer.inputs[0]
        axis = ops.attr(producer, "axis") % x.rank
        if isinstance(x.shape[axis], int):
            with graph.name_scope(f"{producer.name}/"):
                return ops.Gather(graph.constant(np.arange(x.shape[axis], dtype=np.int32)), v)
    raise UnsupportedOpError(f"--target web: node {node.name!r} ({node.op_type}) compares the "
                             f"int64 value {v.name!r} with an int32 one, and irkit cannot narrow "
                             "it; export with the default target")


def _one_hot(graph: Graph, node: Node, indices: Value) -> Value:
    """Case 4: OneHot of int32 indices from Equal against a range."""
    _, depth, values = node.inputs
    if not (depth.is_initializer and values.is_initializer):
        raise UnsupportedOpError(f"--target web: OneHot node {node.name!r} needs a constant "
                                 "depth and values; export with the default target")
    n = int(np.ravel(depth.const)[0])
    rank = indices.rank
    axis = ops.attr(node, "axis") % (rank + 1)
    off, on = np.ravel(values.const)[:2]
    with graph.name_scope(f"{node.name}/"):
        arange = graph.constant(np.arange(n, dtype=np.int32).reshape([n] + [1] * (rank - axis)))
        hot = ops.Equal(ops.Unsqueeze(indices, np.array([axis], np.int64)), arange)
        if off == 0 and on == 1:
            return ops.Cast(hot, to=onnx_dtype(values.dtype))
        return ops.Where(hot, graph.constant(np.array(on, values.dtype)),
                         graph.constant(np.array(off, values.dtype)))
