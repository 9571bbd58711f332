"""The op registry: one `OpDef` per (domain, op_type), filled by the op-family modules; and
what the rest of irkit asks about a node's op through it (the IR itself knows no op):
`opdef_of(node)`, `attr(node, name)` with the op's defaults, `verify(graph)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from irkit.errors import IRError, UnsupportedOpError

if TYPE_CHECKING:
    from irkit.ir import Graph, Node
    from irkit.ops.base import OpDef

_REGISTRY: dict[tuple[str, str], OpDef] = {}


def _canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register(opdef: OpDef) -> OpDef:
    """Add an op; registering the same op twice is a programming error."""
    key = (_canonical_domain(opdef.domain), opdef.op_type)
    if key in _REGISTRY:
        raise RuntimeError(f"op {opdef.op_type!r} is registered twice")
    _REGISTRY[key] = opdef
    return opdef


def get_op(op_type: str, domain: str = "", node_name: str | None = None) -> OpDef:
    """The OpDef of `op_type`, or UnsupportedOpError naming the op (and node)."""
    opdef = _REGISTRY.get((_canonical_domain(domain), op_type))
    if opdef is None:
        where = f" (node {node_name!r})" if node_name else ""
        dom = f" in domain {domain!r}" if _canonical_domain(domain) else ""
        raise UnsupportedOpError(f"op {op_type!r}{dom}{where} is not supported by irkit; "
                                 "run `irkit ops` for the list of supported ops")
    return opdef


def has_op(op_type: str, domain: str = "") -> bool:
    return (_canonical_domain(domain), op_type) in _REGISTRY


def all_ops() -> list[OpDef]:
    """Every registered op, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda o: (o.domain, o.op_type))


def opdef_of(node: Node) -> OpDef:
    """The OpDef of the node's op; UnsupportedOpError naming the op and node if irkit has none."""
    return get_op(node.op_type, node.domain, node_name=node.name)


def attr(node: Node, name: str) -> Any:
    """The node's attribute, or its op's default when the node does not set it.

    Floats come back rounded to float32: ONNX stores float attributes as float32, so this is
    the value an exported model computes with.
    """
    attributes = node.attributes
    if name in attributes:
        value = attributes[name]
    else:
        value = opdef_of(node).attribute_default(name, node)
    return float(np.float32(value)) if isinstance(value, float) else value


def verify(graph: Graph) -> None:
    """Full verification: the IR's invariants (`Graph.verify`) and every op one irkit knows;
    IRError naming the first problem."""
    graph.verify()
    for node in graph.nodes:
        try:
            opdef_of(node)
        except UnsupportedOpError as e:
            raise IRError(str(e)) from None


def debug_verify(graph: Graph) -> None:
    """`verify(graph)` when debug verification is on (IRKIT_VERIFY=1; the test suite)."""
    from irkit.ir import verification_enabled

    if verification_enabled():
        verify(graph)
