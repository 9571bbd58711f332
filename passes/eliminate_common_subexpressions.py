"""EliminateCommonSubexpressionsPass: one node for each distinct computation."""

from __future__ import annotations

import numpy as np
from irkit.passes.fold_constants import FoldConstantsPass
from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph


def _freeze(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


class EliminateCommonSubexpressionsPass(GraphPass):
    """Merge duplicate nodes. Cases handled:

    1. two nodes with the same op, domain, attributes and inputs (the same Values, in order)
       compute the same outputs: readers of the later one read the earlier one's outputs;
    2. equal small constants (initializers that are not graph inputs' defaults and not named
       parameters) are shared by value, so their readers become duplicates too;
    3. random ops (Dropout in training mode, Random*) are never merged.
    """

    def __init__(self, variables=()) -> None:
        self.variables = set(variables)

    def call(self, graph: Graph) -> PassResult:
        changed = self._merge_constants(graph)
        seen: dict[tuple, object] = {}
        for node in list(graph.nodes):
            if node.op_type in FoldConstantsPass.NONDETERMINISTIC:
                continue
            key = (node.domain, node.op_type, tuple(id(v) if v is not None else None
                                                   for v in node.inputs),
                   tuple(sorted((k, _freeze(v)) for k, v in node.attributes.items())),
                   len(node.outputs))
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            if any(o in graph.outputs for o in node.outputs):
                continue  # keep graph outputs' names
            for dup, orig in zip(node.outputs, first.outputs):
                graph.replace_all_uses_with(dup, orig)
            graph.remove_node(node)
            changed = True
        return PassResult(graph, changed)

    def _merge_constants(self, graph: Graph) -> bool:
        by_value: dict[tuple, object] = {}
        changed = False
        for name, v in list(graph.initializers.items()):
            if name in self.variables or v in graph.outputs or v.const.size > 64:
                continue
            key = _freeze(v.const)
            first = by_value.setdefault(key, v)
            if first is not v and v.uses:
                graph.replace_all_uses_with(v, first)
                changed = True
        return changed
