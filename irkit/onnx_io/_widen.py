"""Export-side widening: a node whose element type its op accepts only in a later opset.

irkit's ops follow their numpy references, which run any numeric type (a float16 Celu, a
bool ReduceMax); opset 17's schemas accept fewer (Celu float only, IsInf float/double, Range
no float16, ReduceMax no bool). Such a node is written between Casts: its inputs of the
constraint cast to the first wider type the schema allows (float16/bfloat16 -> float32,
bool -> uint8, whose max/min over 0/1 are any/all, False/True over an empty set), the op run
there, and its outputs of that constraint cast back.
"""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto, helper

from irkit.ir import fresh_name

_WIDER = {TensorProto.FLOAT16: (TensorProto.FLOAT,), TensorProto.BFLOAT16: (TensorProto.FLOAT,),
          TensorProto.BOOL: (TensorProto.UINT8, TensorProto.INT32)}


def widen_types(model: onnx.ModelProto, types: dict[str, int], opset: int) -> onnx.ModelProto:
    """`model` (edited in place and returned) with each ai.onnx node whose input types the
    opset-`opset` schema refuses, and that a wider type fixes, written between Casts.
    `types`: element type of every value name (irkit's IR knows them all)."""
    if not any(t in _WIDER for t in types.values()):
        return model
    nodes = []
    taken = set(types)
    for n in model.graph.node:
        nodes += _widened(n, types, opset, taken) if n.domain in ("", "ai.onnx") else [n]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@functools.cache
def _constraints(op_type: str, opset: int) -> tuple | None:
    """(input constraint names, output constraint names, {name: allowed element types})."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except Exception:  # not an op of that opset: the checker speaks for it
        return None
    allowed = {c.type_param_str: {_elem(s) for s in c.allowed_type_strs}
               for c in schema.type_constraints}
    return ([f.type_str for f in schema.inputs], [f.type_str for f in schema.outputs], allowed)


def _elem(type_str: str) -> int | None:
    name = type_str.removeprefix("tensor(").removesuffix(")").upper()
    return TensorProto.DataType.Value(name) if name in TensorProto.DataType.keys() else None


def _formal(names: list[str], i: int) -> str | None:
    """The constraint of actual argument i (the last formal one repeats: variadic)."""
    return names[min(i, len(names) - 1)] if names else None


def _widened(n: onnx.NodeProto, types: dict[str, int], opset: int,
             taken: set[str]) -> list[onnx.NodeProto]:
    spec = _constraints(n.op_type, opset)
    if spec is None:
        return [n]
    ins, outs, allowed = spec
    wider: dict[str, int] = {}
    for i, name in enumerate(n.input):
        param, elem = _formal(ins, i), types.get(name)
        if not name or param not in allowed or elem is None or elem in allowed[param]:
            continue
        choice = next((w for w in _WIDER.get(elem, ()) if w in allowed[param]), None)
        if choice is None:
            return [n]  # nothing wider fits: the checker names the node
        wider[param] = choice
    if not wider:
        return [n]
    before, after = [], []
    for i, name in enumerate(n.input):
        if name and _formal(ins, i) in wider:
            to = wider[_formal(ins, i)]
            cast = fresh_name(f"{name}_as_{TensorProto.DataType.Name(to)}", taken)
            before.append(helper.make_node("Cast", [name], [cast],
                                           name=fresh_name(f"{cast}/Cast", taken), to=to))
            n.input[i] = cast
    for i, name in enumerate(n.output):
        if name and _formal(outs, i) in wider:
            inner = fresh_name(f"{name}_wide", taken)
            after.append(helper.make_node("Cast", [inner], [name],
                                          name=fresh_name(f"{name}/Cast", taken),
                                          to=types[name]))
            n.output[i] = inner
    return [*before, n, *after]


def first_opset_taking(op_type: str, types: list[int | None], start: int,
                       last: int) -> int | None:
    """The first ai.onnx opset from `start` to `last` whose `op_type` schema takes inputs of
    these element types (None: not given or unknown), or None if none does."""
    for opset in range(start, last + 1):
        spec = _constraints(op_type, opset)
        if spec is None:
            continue
        ins, _, allowed = spec
        if all(elem is None or _formal(ins, i) not in allowed or elem in allowed[_formal(ins, i)]
               for i, elem in enumerate(types)):
            return opset
    return None
