"""Reverse-mode automatic differentiation over the IR (the flagship pass).

`gradients(graph, of, wrt)` appends the gradient subgraph to `graph` and returns one Value per
`wrt` entry. Only nodes on a path from `wrt` to `of` are visited; each op's VJP rule emits IR
ops (so the result can be differentiated again); gradients of values used more than once are
summed; broadcasting is undone in one place (`unbroadcast`); every new node is named `grad/...`.
Subgraphs that stand for one function (an imported Erf-GELU) get their own rule
(`passes/composite_gradients.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from irkit.passes.composite_gradients import composite_vjp
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.manager import GraphPass, PassResult

from irkit import ops
from irkit.errors import IRError, ShapeError, UnsupportedOpError
from irkit.ir import Graph, Node, Value
from irkit.ops.dtypes import differentiable, onnx_dtype
from irkit.ops.registry import opdef_of
from irkit.ops.shape import shape_of, zeros_like


def gradients(graph: Graph, of: Value, wrt: Sequence[Value], seed: Value | None = None,
              scope: str = "grad/") -> list[Value]:
    """d(of)/d(wrt) as new Values of `graph` (a zero constant where `of` does not depend on w).

    `seed` is the cotangent of `of` (its shape); without it `of` must hold one element.
    """
    if seed is None:
        if of.shape is None or any(d != 1 for d in of.shape):
            raise ShapeError(f"gradient of {of.name!r} {of.shape}: it is not a scalar; pass the "
                             "cotangent (seed) of the same shape, i.e. ask for a VJP")
    if not differentiable(of.dtype):
        raise ShapeError(f"cannot differentiate {of.name!r}: dtype {of.dtype} is not floating "
                         "(float16, float32 or float64)")
    with graph.name_scope(scope):
        if seed is None:
            seed = graph.constant(np.ones(of.shape, dtype=of.dtype))
        grads = _backward(graph, of, list(wrt), seed)
        return [grads.get(id(w)) or zeros_like(w) for w in wrt]


def _backward(graph: Graph, of: Value, wrt: list[Value], seed: Value) -> dict[int, Value]:
    nodes = _nodes_between(graph, of, wrt)
    varied = _float_dependents(nodes, wrt)
    # the gradient contributions of each value, summed once when it is read (one Sum node,
    # not a chain of Adds): linear in the number of uses
    pending: dict[int, list[Value]] = {id(of): [seed]}
    for node in reversed(nodes):
        outs = [_total(pending, o) for o in node.outputs]
        if all(g is None for g in outs):
            continue
        opdef = opdef_of(node)
        if not opdef.has_gradient:
            raise UnsupportedOpError(f"op {node.op_type} (node {node.name!r}) has no gradient "
                                     "rule; irkit cannot differentiate through it yet")
        outs = [g if g is not None or not differentiable(o.dtype) else zeros_like(o)
                for g, o in zip(outs, node.outputs)]
        composite = composite_vjp(node, outs, varied)
        if composite is not None:  # the nodes inside get no gradient: nothing else reads them
            for x, gx in composite:
                pending.setdefault(id(x), []).append(gx)
            continue
        in_grads = opdef.vjp(node, outs)
        if len(in_grads) < len(node.inputs):
            raise IRError(f"VJP of {node.op_type} returned {len(in_grads)} gradients for "
                          f"{len(node.inputs)} inputs (node {node.name!r})")
        for i, (x, gx) in enumerate(zip(node.inputs, in_grads)):
            if x is None or not differentiable(x.dtype):
                continue
            if gx is None:
                if id(x) in varied and opdef.differentiable and i not in opdef.type_only_inputs:
                    _refuse_lost_gradient(node, i, x)
                continue
            pending.setdefault(id(x), []).append(unbroadcast(gx, x, _may_broadcast(node, x)))
    return {id(w): g for w in wrt if (g := _total(pending, w)) is not None}


def _float_dependents(nodes: list[Node], wrt: list[Value]) -> set[int]:
    """The float values that vary with `wrt` through float values (an integer or boolean
    value in between, a Shape or a comparison, carries no gradient, so what it feeds does not
    count)."""
    varied = {id(w) for w in wrt}
    for node in nodes:
        if any(v is not None and differentiable(v.dtype) and id(v) in varied for v in node.inputs):
            varied.update(id(o) for o in node.outputs if differentiable(o.dtype))
    return varied


def _refuse_lost_gradient(node: Node, index: int, x: Value) -> None:
    """A float input that varies with what is differentiated, but whose op rule gives it no
    gradient (Resize's roi and scales, Dropout's ratio, Pad's value): its gradient would be
    taken as 0 silently, so it is an error instead (piecewise-constant ops and inputs read
    only for their type, whose gradient is 0, and constant or frozen inputs are not asked
    about)."""
    raise UnsupportedOpError(
        f"node {node.name!r} ({node.op_type}): input {index} ({x.name!r}) varies with what is "
        f"differentiated, but {node.op_type} has no gradient for it; freeze what it is "
        "computed from, or take the gradient with respect to other values")


def _total(pending: dict[int, list[Value]], x: Value) -> Value | None:
    """The summed gradient of `x` (None if nothing reached it); replaces its parts by it."""
    parts = pending.get(id(x))
    if not parts:
        return None
    if len(parts) > 1:
        parts[:] = [ops.Sum(*parts) if len(parts) > 2 else ops.Add(*parts)]
    return parts[0]


def _nodes_between(graph: Graph, of: Value, wrt: list[Value]) -> list[Node]:
    """Nodes (in topological order) that depend on some `wrt` value and that `of` depends on."""
    needed = {id(of)}
    upstream: set[int] = set()
    for node in reversed(graph.nodes):
        if any(id(o) in needed for o in node.outputs):
            upstream.add(id(node))
            needed.update(id(v) for v in node.inputs if v is not None)
    reached = {id(w) for w in wrt}
    result = []
    for node in graph.nodes:
        if id(node) in upstream and any(v is not None and id(v) in reached for v in node.inputs):
            reached.update(id(o) for o in node.outputs)
            result.append(node)
    return result


# ops whose float inputs broadcast against each other (ONNX's multidirectional broadcasting)
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
                          "Where", "PRelu"})


def _may_broadcast(node, x: Value) -> bool:
    """Whether `node` can have broadcast its input `x` at run time: Expand, or a broadcasting
    op with another input that has an axis of a dim other than 1 (a scalar or a (1,) constant
    never widens x). Other ops give back gradients shaped like their inputs."""
    if node.op_type == "Expand":
        return True
    return node.op_type in BROADCASTING and any(
        o is not None and o is not x and (o.shape is None or any(d != 1 for d in o.shape))
        for o in node.inputs)


def unbroadcast(g: Value, x: Value, may_broadcast: bool = True) -> Value:
    """Sum `g` (shaped like a broadcast result) back to the shape of `x`.

    Broadcasting is decided on what the shapes can be: an axis of `x` of dim 1 is summed at
    once; where the node can have broadcast x (`may_broadcast`), an axis whose dim is unknown
    at build time (None, or a symbol other than g's) may be 1 at run time, so it is summed
    in-graph where `Shape(x)` holds 1 there (`_sum_where_one`). A graph differentiated at one
    batch size thus runs at every batch size, and a step whose batch dim is unknown (after a
    Reshape to -1) pays for no run-time check where nothing can have broadcast.
    """
    if g.shape == x.shape and (not may_broadcast or g.shape is None or None not in g.shape):
        return g
    if g.shape is None or x.shape is None:
        raise ShapeError(f"cannot un-broadcast the gradient of {x.name!r}: the rank of "
                         f"{g.name if g.shape is None else x.name!r} is unknown; give inputs "
                         "static ranks")
    lead = len(g.shape) - len(x.shape)
    if lead < 0:
        raise ShapeError(f"the gradient reaching {x.name!r} has rank {len(g.shape)}, lower than "
                         f"its rank {len(x.shape)}; the graph's shapes do not fit together")
    inner = [lead + i for i, d in enumerate(x.shape) if d == 1 and g.shape[lead + i] != 1]
    unknown = [lead + i for i, d in enumerate(x.shape)
               if may_broadcast and _may_be_one(d, g.shape[lead + i])]
    if not inner and not unknown:  # only leading axes: one ReduceSum that drops them
        return ops.ReduceSum(g, np.arange(lead, dtype=np.int64), keepdims=0) if lead else g
    if lead or inner:
        g = ops.ReduceSum(g, np.array(list(range(lead)) + inner, dtype=np.int64), keepdims=1)
    if unknown:
        g = _sum_where_one(g, x, unknown, lead)
    return ops.Reshape(g, shape_of(x)) if lead or unknown else g


def _may_be_one(d, g_dim) -> bool:
    """Whether an axis of x of dim `d` can be 1 at run time while g's (`g_dim`) is not."""
    if isinstance(d, int) or g_dim == 1:
        return False
    return not (isinstance(d, str) and d == g_dim)  # symbols that meet are equal


def _sum_where_one(g: Value, x: Value, axes: list[int], lead: int) -> Value:
    """Sum `g` (keepdims) over those of `axes` where x's run-time dim is 1.

    One ReduceSum per candidate axis, its axes input computed as the candidate or nothing
    (a Slice of [axis] ending at 1 or 0) with noop_with_empty_axes: where x's dim is not 1
    the ReduceSum is a no-op (onnxruntime copies g, 8x faster than reducing a unit axis
    put in front of g, as this did before).
    """
    graph = g.graph
    x_dims = ops.Gather(ops.Shape(x), graph.constant(np.array([a - lead for a in axes],
                                                              np.int64)), axis=0)
    is_one = ops.Cast(ops.Equal(x_dims, graph.constant(np.ones(len(axes), np.int64))),
                      to=onnx_dtype(np.int64))
    zero = graph.constant(np.zeros(1, np.int64))
    for j, axis in enumerate(axes):
        end = ops.Slice(is_one, graph.constant(np.array([j], np.int64)),
                        graph.constant(np.array([j + 1], np.int64)))
        chosen = ops.Slice(graph.constant(np.array([axis], np.int64)), zero, end)
        g = ops.ReduceSum(g, chosen, keepdims=1, noop_with_empty_axes=1)
    return g


class AutodiffPass(GraphPass):
    """Add gradient outputs `<name>_grad` of graph output `of` with respect to `wrt` names.

    Cases handled:
    1. `of` a scalar: seed 1; otherwise a new graph input `<of>_grad` is the cotangent (a VJP);
    2. `wrt` names graph inputs or initializers; the original inputs and outputs are kept;
    3. dead gradient nodes (rules that emit more than needed) are removed afterwards.
    """

    def __init__(self, of: str, wrt: Sequence[str]) -> None:
        self.of, self.wrt = of, list(wrt)

    def call(self, graph: Graph) -> PassResult:
        of = graph.value(self.of)
        wrt = []
        for name in self.wrt:
            v = graph.value(name)
            if v.producer is not None:
                raise IRError(f"--wrt {name!r} is computed by node {v.producer.name!r}; name a "
                              "graph input or an initializer")
            wrt.append(v)
        seed = None
        if of.shape is None or any(d != 1 for d in of.shape):
            seed = graph.add_input(f"{self.of}_grad", of.dtype, of.shape)
        grads = gradients(graph, of, wrt, seed)
        for name, g in zip(self.wrt, grads):
            out = ops.own_output(g, graph.outputs)
            graph.rename_value(out, f"{name}_grad")
            graph.outputs.append(out)
        EliminateDeadNodesPass()(graph)
        return PassResult(graph, True)
