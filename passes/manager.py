"""`GraphPass` (requires -> call -> ensures) and the `PassManager` that runs them to a fixpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from irkit.errors import IRError
from irkit.ir import Graph, Node
from irkit.ops.registry import debug_verify


@dataclass
class PassResult:
    graph: Graph
    modified: bool


class GraphPass:
    """A graph transformation. Subclasses implement `call`; `requires`/`ensures` check it."""

    def requires(self, graph: Graph) -> None:
        """Preconditions; the default verifies the graph when debug verification is on
        (IRKIT_VERIFY=1; the test suite), and is free otherwise."""
        debug_verify(graph)

    def call(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def ensures(self, graph: Graph) -> None:
        """Postconditions; the default verifies the graph when debug verification is on."""
        debug_verify(graph)

    def __call__(self, graph: Graph) -> PassResult:
        self.requires(graph)
        result = self.call(graph)
        self.ensures(result.graph)
        return result


class NodeRewritePass(GraphPass):
    """A pass that offers each ai.onnx node of type `op_type` still in the graph, in graph
    order, to `rewrite`, which changes the graph around it or returns False; after any change
    the graph is sorted again when `sorts` (a rewrite that adds nodes after their readers)."""

    op_type = ""
    sorts = True

    def rewrite(self, graph: Graph, node: Node) -> bool:
        raise NotImplementedError

    def call(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if node.op_type == self.op_type and node.domain == "" and node in graph.nodes:
                changed = self.rewrite(graph, node) or changed
        if changed and self.sorts:
            graph.toposort()
        return PassResult(graph, changed)


class PassManager:
    """Run passes in order, repeating the whole list until none modifies the graph."""

    def __init__(self, passes: Sequence[GraphPass], max_iterations: int = 20) -> None:
        self.passes = list(passes)
        self.max_iterations = max_iterations

    def __call__(self, graph: Graph) -> PassResult:
        any_change = False
        for _ in range(self.max_iterations):
            changed = False
            for p in self.passes:
                result = p(graph)
                graph, changed = result.graph, changed or result.modified
            any_change = any_change or changed
            if not changed:
                return PassResult(graph, any_change)
        raise IRError(f"passes {[type(p).__name__ for p in self.passes]} did not reach a fixpoint "
                      f"in {self.max_iterations} rounds")
