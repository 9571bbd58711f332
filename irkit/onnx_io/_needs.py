"""The lowest ai.onnx opset an irkit graph can be written at.

The IR keeps opset 17's semantics, and a graph that needs nothing newer is written at 17. What
opset 17 cannot hold raises the opset the export declares (the opset-17 model is then converted
up with onnx's version converter, `convert_opset`):

1. an element type newer than opset 17: float8 (19), int4/uint4 (21), float4e2m1 (23),
   float8e8m0 (24), int2/uint2 (25), on any value;
2. Cast/CastLike `saturate` (19) and `round_mode` (24), which import keeps for float8 targets;
3. ScatterElements/ScatterND reduction max or min (18);
4. a node whose input types opset 17's schema refuses and a later schema takes (Equal on
   strings: 19; Identity of float8: 19), unless export widens it between Casts (float16,
   bfloat16 and bool forms: `irkit.onnx_io._widen`).
"""

from __future__ import annotations

from irkit.errors import UnsupportedOpError
from irkit.ir import Graph, Node
from irkit.onnx_io._wire import IRKIT_OPSET
from irkit.ops.dtypes import element_opset, onnx_dtype, type_name

STRING = 8
_ATTRIBUTE_OPSETS = {("Cast", "saturate"): 19, ("CastLike", "saturate"): 19,
                     ("Cast", "round_mode"): 24, ("CastLike", "round_mode"): 24}
_SCATTERS = ("ScatterElements", "ScatterND")


def holds_newer(graph: Graph) -> bool:
    """Whether the graph may need an opset above 17 (a newer element type or form, or a node
    reading strings, which `needed_opset` decides); without importing onnx, so that writing
    an opset-17 graph stays on irkit's own writer."""
    if any(element_opset(onnx_dtype(v.dtype)) > IRKIT_OPSET for v in graph.values()):
        return True
    return any(_form_needs(n)[0] > IRKIT_OPSET or any(
        v is not None and v.dtype.kind in "OSU" for v in n.inputs) for n in graph.nodes)


def needed_opset(graph: Graph, last: int) -> tuple[int, str]:
    """(the lowest opset that holds `graph`, what needs it: '' at IRKIT_OPSET); `last`: the
    newest opset the installed onnx knows, the furthest a node's type search goes."""
    best = (IRKIT_OPSET, "")
    for v in graph.values():
        code = onnx_dtype(v.dtype)
        if element_opset(code) > best[0]:
            best = (element_opset(code), f"value {v.name!r} has element type {type_name(code)}")
    for node in graph.nodes:
        opset, why = _node_needs(node, last)
        if opset > best[0]:
            best = (opset, why)
    return best


def check_opset(graph: Graph, opset: int | None, last: int) -> int:
    """The opset to write: `opset`, or the lowest that holds the graph when None;
    UnsupportedOpError (one line naming what needs more) when `opset` is below that."""
    needed, why = needed_opset(graph, last)
    if opset is None:
        return needed
    if why and opset < needed:  # (nothing newer: any opset, older ones lowered to)
        raise UnsupportedOpError(f"{why}, which opset {opset} cannot hold; use --opset {needed} "
                                 "or newer (or leave --opset out: the lowest that works)")
    return opset


def _form_needs(node: Node) -> tuple[int, str]:
    """The opset a node's attributes need (2. and 3. of the module's list)."""
    label = f"node {node.name!r} ({node.op_type})"
    if node.domain not in ("", "ai.onnx"):
        return IRKIT_OPSET, ""
    for (op, name), opset in _ATTRIBUTE_OPSETS.items():
        if node.op_type == op and name in node.attributes:
            return opset, f"{label} sets {name}"
    reduction = node.attributes.get("reduction")
    if node.op_type in _SCATTERS and reduction in ("max", "min"):
        return 18, f"{label} has reduction {reduction}"
    return IRKIT_OPSET, ""


def _node_needs(node: Node, last: int) -> tuple[int, str]:
    from irkit.onnx_io._widen import _WIDER, first_opset_taking

    label = f"node {node.name!r} ({node.op_type})"
    formed = _form_needs(node)
    if formed[0] > IRKIT_OPSET or node.domain not in ("", "ai.onnx"):
        return formed
    types = [onnx_dtype(v.dtype) if v is not None else None for v in node.inputs]
    if not any(t == STRING or (t is not None and t > 16) for t in types):
        return IRKIT_OPSET, ""
    if any(t in _WIDER for t in types):  # written between Casts at 17, if it must be
        return IRKIT_OPSET, ""
    opset = first_opset_taking(node.op_type, types, IRKIT_OPSET, last)
    if opset is None or opset == IRKIT_OPSET:
        return IRKIT_OPSET, ""  # no opset takes it: the checker names the node
    names = ", ".join(type_name(t) for t in dict.fromkeys(t for t in types if t is not None))
    return opset, f"{label} reads {names}"
