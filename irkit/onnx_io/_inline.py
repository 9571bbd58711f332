"""Import-side inlining of an If whose condition is known at import.

The legacy torch exporter writes data-independent Python branches on shapes as If nodes, e.g.
F.local_response_norm's `if x.size(1) == 1: squeeze` of a model with a dynamic batch: the
condition reads only static dims, yet the graph holds control flow irkit's IR has no place for.
Such an If is replaced by the nodes of the branch it always takes.
"""

from __future__ import annotations

import onnx
from onnx import helper

from irkit.onnx_io._compat import _drop_unread, _OpsetRewriter

MAX_INLINE_ROUNDS = 8  # inlining one If can make another's condition known


def inline_constant_ifs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` where each ai.onnx If whose condition folds at import (constants,
    static dims of shapes, within the folding cap) is replaced by its taken branch:

    1. the branch's nodes, with every name the branch defines (node outputs, initializers)
       renamed to a fresh one, and its initializers moved to the graph;
    2. an Identity from each branch output to the If's output of the same position;
    3. the nodes that only computed the condition, dropped.
    Rounds repeat while something was inlined (an inlined branch can make another condition
    known). An If whose condition is computed at run time, or whose branch holds subgraphs of
    its own, stays (and is refused as an unsupported op). A model without If is returned as
    it is.
    """
    if not any(_is_if(n) for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for _ in range(MAX_INLINE_ROUNDS):
        rewrite = _OpsetRewriter(model)
        nodes, conditions = [], []
        for n in model.graph.node:
            branch = _taken_branch(rewrite, n) if _is_if(n) else None
            if branch is None:
                nodes.append(n)
                continue
            nodes += _inlined(rewrite, n, branch)
            conditions.append(n.input[0])
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if not conditions:
            break
        _drop_unread(model.graph, conditions)  # what computed only the conditions
    return model


def _is_if(n: onnx.NodeProto) -> bool:
    return n.op_type == "If" and n.domain in ("", "ai.onnx")


def _taken_branch(rewrite: _OpsetRewriter, n: onnx.NodeProto) -> onnx.GraphProto | None:
    """The branch `n` always takes, if its condition folds to one element at import and the
    branch holds no nested subgraphs; else None."""
    condition = rewrite.fold(n.input[0]) if n.input and n.input[0] else None
    if condition is None or condition.size != 1:
        return None
    name = "then_branch" if bool(condition.reshape(())) else "else_branch"
    branch = next((a.g for a in n.attribute if a.name == name), None)
    if branch is None or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                             for m in branch.node for a in m.attribute):
        return None
    return branch


def _inlined(rewrite: _OpsetRewriter, n: onnx.NodeProto,
             branch: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The branch's nodes under fresh names, then Identities onto `n`'s outputs."""
    prefix = n.name or n.output[0]
    renamed: dict[str, str] = {}
    for name in [t.name for t in branch.initializer] + [o for m in branch.node for o in m.output]:
        if name:
            renamed[name] = rewrite.fresh(f"{prefix}/{name}")
            rewrite.producers[renamed[name]] = n  # taken: later fresh names avoid it
    for t in branch.initializer:
        moved = onnx.TensorProto()
        moved.CopyFrom(t)
        moved.name = renamed[t.name]
        rewrite.model.graph.initializer.append(moved)
    nodes = []
    for m in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(m)
        copy.name = f"{prefix}/{m.name or m.op_type}"
        copy.input[:] = [renamed.get(i, i) for i in m.input]
        copy.output[:] = [renamed.get(o, o) for o in m.output]
        nodes.append(copy)
    for inner, outer in zip(branch.output, n.output, strict=False):
        if outer:
            nodes.append(helper.make_node("Identity", [renamed.get(inner.name, inner.name)],
                                          [outer], name=f"{prefix}/{outer}"))
    return nodes
