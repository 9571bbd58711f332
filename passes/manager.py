"""`GraphPass` (requires -> call -> ensures) and the `PassManager` that runs them to a fixpoint.

Two contracts are checked on every run, as onnx-ir's pass infrastructure and torch.fx's pass
manager do:

1. A pass says whether it works in place (`in_place = True`: it edits the graph it is given
   and returns that graph) or functionally (`in_place = False`: it returns a new graph and
   leaves its input as it was). Returning the wrong one is a `PassError`; under debug
   verification (IRKIT_VERIFY=1) a functional pass that edits its input is one too.
2. `call` returns a `PassResult` whose `modified` is a bool.

A pass that fails inside a `PassManager` raises its error again with the failing pass and
the passes that ran before it named (same exception class, so callers' handlers still match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from irkit.errors import IRError, IrkitError
from irkit.ir import Graph, Node, Value, verification_enabled
from irkit.ops.registry import debug_verify


class PassError(IRError):
    """A pass broke its contract (in place vs functional, or what `call` returns), or failed
    with an error that is not irkit's own."""


@dataclass
class PassResult:
    graph: Graph
    modified: bool


def _fingerprint(graph: Graph) -> tuple:
    """What a functional pass must leave unchanged in its input: the nodes (identity and
    order), the inputs, outputs and initializers."""
    return (tuple(map(id, graph.nodes)), tuple(v.name for v in graph.inputs),
            tuple(v.name for v in graph.outputs), tuple(graph.initializers))


class GraphPass:
    """A graph transformation. Subclasses implement `call`; `requires`/`ensures` check it.
    `in_place`: whether `call` edits and returns its input (True) or returns a new graph."""

    in_place = True

    @property
    def name(self) -> str:
        return type(self).__name__

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
        before = _fingerprint(graph) if not self.in_place and verification_enabled() else None
        result = self.call(graph)
        self._check_result(graph, result, before)
        self.ensures(result.graph)
        return result

    def _check_result(self, graph: Graph, result, before: tuple | None) -> None:
        if not isinstance(result, PassResult) or not isinstance(result.modified, bool):
            raise PassError(f"pass {self.name}: call() must return PassResult(graph, modified: "
                            f"bool), not {result!r:.80}")
        if self.in_place and result.graph is not graph:
            raise PassError(f"pass {self.name} is in place (in_place = True) but returned a new "
                            "graph; return the graph it was given, or set in_place = False")
        if not self.in_place and result.graph is graph:
            raise PassError(f"pass {self.name} is functional (in_place = False) but returned "
                            "its input; return a new graph, or set in_place = True")
        if before is not None and _fingerprint(graph) != before:
            raise PassError(f"pass {self.name} is functional (in_place = False) but changed "
                            "its input graph; work on a copy (graph.copy())")


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
            if node.op_type == self.op_type and node.domain == "" and graph.holds(node):
                changed = bool(self.rewrite(graph, node)) or changed
        if changed and self.sorts:
            graph.toposort()
        return PassResult(graph, changed)


def replace_node(graph: Graph, node: Node, new_outputs: Sequence[Value]) -> None:
    """A lowering's last step: `node`'s outputs replaced by the first `new_outputs` (one for
    each output it has), which take their names, so the graph's interface is unchanged; then
    `node` is removed."""
    if len(new_outputs) < len(node.outputs):
        raise IRError(f"node {node.name!r} has {len(node.outputs)} outputs; "
                      f"{len(new_outputs)} given to replace them")
    pairs = list(zip(node.outputs, new_outputs))
    for old, new in pairs:
        graph.replace_all_uses_with(old, new)
    graph.remove_node(node)
    for old, new in pairs:
        graph.rename_value(new, old.name)


class PassManager:
    """Run passes in order, repeating the whole list until none modifies the graph."""

    def __init__(self, passes: Sequence[GraphPass], max_iterations: int = 20) -> None:
        self.passes = list(passes)
        self.max_iterations = max_iterations

    def __call__(self, graph: Graph) -> PassResult:
        any_change = False
        ran: list[str] = []
        for round_ in range(1, self.max_iterations + 1):
            changed = False
            for p in self.passes:
                result = self._run(p, graph, ran, round_)
                graph, changed = result.graph, changed or result.modified
                ran.append(p.name)
            any_change = any_change or changed
            if not changed:
                return PassResult(graph, any_change)
        raise IRError(f"passes {[p.name for p in self.passes]} did not reach a fixpoint "
                      f"in {self.max_iterations} rounds")

    @staticmethod
    def _run(p: GraphPass, graph: Graph, ran: list[str], round_: int) -> PassResult:
        try:
            return p(graph)
        except PassError:
            raise
        except Exception as e:
            before = ", ".join(dict.fromkeys(ran)) or "none"
            where = f"pass {p.name} failed (round {round_}; passes run before it: {before})"
            if isinstance(e, IrkitError):
                try:
                    again = type(e)(f"{where}: {e}")
                except TypeError:  # an error class with arguments of its own
                    again = PassError(f"{where}: {e}")
                raise again from e
            raise PassError(f"{where}: {type(e).__name__}: {e}") from e
