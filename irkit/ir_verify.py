"""The IR verifier: every invariant of a `Graph`, checked in one pass, first failure raised."""

from __future__ import annotations

from typing import TYPE_CHECKING

from irkit.errors import IRError

if TYPE_CHECKING:
    from irkit.ir import Graph


def verify_graph(graph: Graph) -> None:
    """Raise IRError if `graph` breaks an invariant.

    1. every value is registered once under its own name and belongs to this graph;
    2. inputs and initializers have no producer, node outputs have their node as producer;
    3. nodes are in topological order and read only values defined before them;
    4. every use recorded on a value matches a node input, and every node input is recorded;
    5. graph outputs are defined; node names are unique.
    Whether each op is one irkit knows is the ops layer's check (`irkit.ops.verify`).
    """
    defined: set[int] = set()
    # every recorded use, once: membership tests stay O(1) however many readers a value has
    recorded = {(id(v), id(node), i) for v in graph.values() for node, i in v.uses}
    for v in graph.inputs:
        _check_registered(graph, v)
        if v.producer is not None or v.is_initializer:
            raise IRError(f"graph input {v.name!r} must not have a producer or data")
        defined.add(id(v))
    for name, v in graph.initializers.items():
        _check_registered(graph, v)
        if v.name != name or v.const is None or v.producer is not None:
            raise IRError(f"initializer {name!r} is inconsistent (name, data or producer)")
        defined.add(id(v))
    node_names: set[str] = set()
    for node in graph.nodes:
        if node.name in node_names:
            raise IRError(f"node name {node.name!r} is used twice")
        node_names.add(node.name)
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if id(v) not in defined:
                raise IRError(f"node {node.name!r} ({node.op_type}) reads {v.name!r} before it "
                              "is defined (dangling name or nodes out of topological order)")
            if (id(v), id(node), i) not in recorded:
                raise IRError(f"use of {v.name!r} by node {node.name!r} is not recorded")
        for out in node.outputs:
            _check_registered(graph, out)
            if out.producer is not node:
                raise IRError(f"value {out.name!r} names the wrong producer")
            if id(out) in defined:
                raise IRError(f"value {out.name!r} is defined twice")
            defined.add(id(out))
    for v in graph.values():
        for node, i in v.uses:
            if node.graph is not graph or i >= len(node.inputs) or node.inputs[i] is not v:
                raise IRError(f"value {v.name!r} records a use by {node.name!r} that is not there")
    for v in graph.outputs:
        if id(v) not in defined:
            raise IRError(f"graph output {v.name!r} is not defined by any node, input or "
                          "initializer")


def _check_registered(graph: Graph, v) -> None:
    if v.graph is not graph or graph._values.get(v.name) is not v:
        raise IRError(f"value {v.name!r} is not registered in graph {graph.name!r} under its name")
