"""The networkx view of an IR graph: depth, critical path, cycles, Graphviz and GraphML.

The IR stays the one source of truth; `to_networkx` builds a fresh `networkx.DiGraph` each
call (one vertex per node, graph input and graph output; an edge per value read, labelled
with the value's name). networkx is imported inside the functions, so importing this module
(and `import irkit`) does not load it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from irkit.passes.analysis import Sizes, node_flops, part_of

from irkit.errors import IRError
from irkit.ir import Graph

INPUT, OUTPUT = "input:", "output:"


def to_networkx(graph: Graph, dims: Mapping[str, int] | None = None,
                default: int | None = None) -> Any:
    """A `networkx.DiGraph`: vertices are node names (`input:<name>`, `output:<name>` for the
    graph's interface) with attributes kind, op_type, part, flops; edges carry `value`, the
    name of the value that flows (comma-joined when a node reads a value twice). FLOPs use
    `dims`/`default` for symbolic dims (see `irkit.passes.analysis.Sizes`)."""
    import networkx as nx

    sizes = Sizes(dims, default)
    view = nx.DiGraph(name=graph.name)
    for v in graph.inputs:
        view.add_node(INPUT + v.name, kind="input", op_type="", part="input", flops=0)
    for node in graph.nodes:
        view.add_node(node.name, kind="node", op_type=node.op_type, part=part_of(node),
                      flops=node_flops(node, sizes))
    for node in graph.nodes:
        for v in node.inputs:
            if v is None or v.is_initializer:
                continue
            source = v.producer.name if v.producer is not None else INPUT + v.name
            _add_edge(view, source, node.name, v.name)
    for v in graph.outputs:
        view.add_node(OUTPUT + v.name, kind="output", op_type="", part="output", flops=0)
        source = v.producer.name if v.producer is not None else INPUT + v.name
        if view.has_node(source):
            _add_edge(view, source, OUTPUT + v.name, v.name)
    return view


def _add_edge(view, source: str, target: str, value: str) -> None:
    if view.has_edge(source, target):
        names = view.edges[source, target]["value"].split(",")
        if value not in names:
            view.edges[source, target]["value"] = ",".join([*names, value])
        return
    view.add_edge(source, target, value=value)


def find_cycle(view) -> list[str] | None:
    """The vertex names of one cycle of a networkx view, or None if it is acyclic."""
    import networkx as nx

    try:
        edges = nx.find_cycle(view)
    except nx.NetworkXNoCycle:
        return None
    return [u for u, _ in edges]


def depth(graph: Graph, dims: Mapping[str, int] | None = None) -> tuple[int, list[str]]:
    """Depth (nodes on the longest chain from an input to an output) and that chain."""
    import networkx as nx

    view = _ops_only(to_networkx(graph, dims))
    path = nx.dag_longest_path(view, weight=None, default_weight=1)
    return len(path), path


def critical_path(graph: Graph, dims: Mapping[str, int] | None = None,
                  default: int | None = None) -> tuple[int, list[str]]:
    """The chain of nodes with the most FLOPs (what bounds a perfectly parallel run) and its
    FLOPs."""
    import networkx as nx

    view = _ops_only(to_networkx(graph, dims, default))
    source = object()  # a vertex before every node, so each node's FLOPs weigh an edge in
    view.add_edges_from((source, n) for n in list(view.nodes))
    for u, v in view.edges:
        view.edges[u, v]["w"] = view.nodes[v].get("flops", 0)
    path = [n for n in nx.dag_longest_path(view, weight="w", default_weight=0) if n is not source]
    return sum(view.nodes[n]["flops"] for n in path), path


def _ops_only(view):
    acyclic = find_cycle(view)
    if acyclic is not None:
        raise IRError(f"the graph has a cycle: {' -> '.join(acyclic)}; a graph must be acyclic")
    return view.subgraph([n for n, d in view.nodes(data=True) if d["kind"] == "node"]).copy()


def to_graphml(graph: Graph, dims: Mapping[str, int] | None = None) -> bytes:
    """GraphML text of the networkx view (for yEd, Gephi, networkx.read_graphml)."""
    import networkx as nx

    buffer = io.BytesIO()
    nx.write_graphml(to_networkx(graph, dims), buffer)
    return buffer.getvalue()


_PART_COLOURS = {"forward": "#dbe9f6", "backward": "#f6e0db", "optimizer": "#e2f0d9",
                 "input": "#ffffff", "output": "#ffffff"}


def to_dot(graph: Graph, dims: Mapping[str, int] | None = None) -> str:
    """Graphviz DOT text: ops as boxes coloured by part, inputs/outputs as ellipses, edges
    labelled with value names (render with `dot -Tsvg FILE`)."""
    view = to_networkx(graph, dims)
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    ids = {name: f"n{i}" for i, name in enumerate(view.nodes)}
    for name, data in view.nodes(data=True):
        colour = _PART_COLOURS[data["part"]]
        if data["kind"] == "node":
            label = f"{data['op_type']}\\n{_escape(name)}"
            lines.append(f'  {ids[name]} [label="{label}", fillcolor="{colour}"];')
        else:
            lines.append(f'  {ids[name]} [label={_quote(name)}, shape=ellipse, '
                         f'fillcolor="{colour}"];')
    for u, v, data in view.edges(data=True):
        lines.append(f"  {ids[u]} -> {ids[v]} [label={_quote(data['value'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append(f"\\\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'
