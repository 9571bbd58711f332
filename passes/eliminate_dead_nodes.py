"""EliminateDeadNodesPass: remove what no graph output depends on."""

from __future__ import annotations

from irkit.passes.manager import GraphPass, PassResult

from irkit.ir import Graph


class EliminateDeadNodesPass(GraphPass):
    """Remove dead code. Cases handled:

    1. nodes none of whose outputs reach a graph output (removed in reverse order, so chains go);
    2. initializers nobody reads that are not graph outputs (constants left by other passes);
    graph inputs are kept even when unused: they are the graph's interface.
    """

    def __init__(self, keep_initializers: bool = False) -> None:
        self.keep_initializers = keep_initializers

    def call(self, graph: Graph) -> PassResult:
        live = {id(v) for v in graph.outputs}
        dead = []
        for node in reversed(graph.nodes):
            if any(id(o) in live for o in node.outputs):
                live.update(id(v) for v in node.inputs if v is not None)
            else:
                dead.append(node)
        graph.remove_nodes(dead)  # at once: one node at a time is quadratic in the graph
        removed = 0
        if not self.keep_initializers:
            for name, v in list(graph.initializers.items()):
                if not v.uses and v not in graph.outputs:
                    graph.remove_initializer(name)
                    removed += 1
        return PassResult(graph, bool(dead) or bool(removed))
