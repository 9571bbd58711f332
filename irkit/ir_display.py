"""A drawing of a graph for Jupyter (`Graph._repr_html_`): an SVG of layered boxes.

Each node sits in the row of its depth (one more than the deepest node feeding it); graph
inputs are the top row and edges run from producer to consumer. Readable up to a few hundred
nodes; beyond `MAX_NODES` the first ones are drawn and the rest counted. The module reads a
graph through its attributes only (it imports nothing from irkit), so the IR can use it.
"""

from __future__ import annotations

import html
from typing import Any

MAX_NODES = 300
BOX_W, BOX_H, GAP_X, ROW_H, MARGIN = 120, 26, 12, 54, 10
MAX_ROW = 40  # nodes per row beyond this wrap into the next row band


def _layers(graph: Any, nodes: list) -> list[list[tuple[str, str, Any]]]:
    """Rows of (label, tooltip, key): the inputs, then nodes by depth."""
    depth: dict[int, int] = {id(v): 0 for v in graph.inputs}
    rows: dict[int, list] = {0: [(v.name, f"input {v.name}", id(v)) for v in graph.inputs]}
    for node in nodes:
        d = 1 + max([depth.get(id(v), -1) for v in node.inputs if v is not None] + [-1])
        d = max(d, 1)
        for out in node.outputs:
            depth[id(out)] = d
        rows.setdefault(d, []).append((node.op_type, f"{node.name}: {node.op_type}", id(node)))
    bands: list[list] = []
    for d in sorted(rows):
        row = rows[d]
        bands += [row[i:i + MAX_ROW] for i in range(0, len(row), MAX_ROW)] or [[]]
    return bands


def graph_svg(graph: Any) -> str:
    """The graph as an SVG drawing (an HTML fragment with a one-line caption)."""
    nodes = list(graph.nodes)[:MAX_NODES]
    bands = _layers(graph, nodes)
    where: dict[Any, tuple[float, float]] = {}
    width = MARGIN * 2 + max(len(b) for b in bands) * (BOX_W + GAP_X)
    parts = []
    for r, band in enumerate(bands):
        y = MARGIN + r * ROW_H
        for c, (label, tip, key) in enumerate(band):
            x = MARGIN + c * (BOX_W + GAP_X)
            where[key] = (x + BOX_W / 2, y)
            fill = "#e8f0fe" if r else "#fdf3d8"
            parts.append(f"<g><title>{html.escape(tip)}</title><rect x='{x}' y='{y}' "
                         f"width='{BOX_W}' height='{BOX_H}' rx='4' fill='{fill}' "
                         f"stroke='#557'/><text x='{x + BOX_W / 2}' y='{y + 17}' "
                         f"text-anchor='middle' font-size='11' font-family='monospace'>"
                         f"{html.escape(label[:16])}</text></g>")
    edges = []
    for node in nodes:
        for v in node.inputs:
            src = None if v is None else (id(v.producer) if v.producer is not None else id(v))
            if src in where and id(node) in where:
                (x1, y1), (x2, y2) = where[src], where[id(node)]
                edges.append(f"<line x1='{x1}' y1='{y1 + BOX_H}' x2='{x2}' y2='{y2}' "
                             "stroke='#99a' stroke-width='1'/>")
    height = MARGIN * 2 + len(bands) * ROW_H
    more = len(graph.nodes) - len(nodes)
    caption = html.escape(repr(graph)) + (f"; the first {len(nodes)} nodes drawn, {more} more "
                                          "not drawn" if more > 0 else "")
    return (f"<div style='overflow:auto;max-height:600px'><div>{caption}</div>"
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"
            f"{''.join(edges)}{''.join(parts)}</svg></div>")
