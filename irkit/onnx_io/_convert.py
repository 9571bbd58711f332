"""ONNX export (IR -> ModelProto) and import (ModelProto -> IR)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irkit.errors import IrkitError, ModelFileError, UnsupportedOpError
from irkit.ir import Graph, verification_enabled
from irkit.onnx_io._ceil_pool import spell_ceil_pools
from irkit.onnx_io._compat import constant_value, downgrade_to_opset_17, fold_constant_inputs
from irkit.onnx_io._external import DETACHED, load_external_data
from irkit.onnx_io._inline import inline_constant_ifs
from irkit.onnx_io._lower import lower_below_17
from irkit.onnx_io._needs import check_opset
from irkit.onnx_io._sequences import sequences_to_split
from irkit.onnx_io._validate import MAX_OPSET, check_schemas, validate_model
from irkit.onnx_io._widen import widen_types
from irkit.onnx_io._wire import IRKIT_OPSET, file_parts, model_bytes
from irkit.ops.base import apply
from irkit.ops.dtypes import numpy_dtype, onnx_dtype
from irkit.ops.registry import has_op
from irkit.safe_io import FileSafetyError, check_node_count, write_all_atomic

DEFAULT_OPSET = IRKIT_OPSET
MIN_OPSET = 13


# ---- export ----------------------------------------------------------------------------------
def to_onnx(graph: Graph, opset: int | None = None,
            check: bool | None = None) -> onnx.ModelProto:
    """The graph as a standard ONNX model, readable by the installed onnxruntime: the bytes
    `irkit.onnx_io._wire.model_bytes` writes, parsed; a type an op takes only in a later
    opset widened between Casts (`widen_types`), a ceil_mode pool whose last window irkit
    drops written in floor mode (`spell_ceil_pools`); converted to `opset` and validated.

    `opset` None: the lowest opset that holds the graph (`irkit.onnx_io._needs`): 17 unless
    it holds a newer element type or form; an `opset` below that is an UnsupportedOpError.

    `check`: run `onnx.checker.check_model(full_check=True)` on the result; by default only
    under debug verification (IRKIT_VERIFY=1; the test suite), which also verifies the graph
    first: irkit's export is tested to be valid, and the checker's schema registry costs
    tens of milliseconds to start.
    """
    if check is None:
        check = verification_enabled()
    model = _finished(onnx.ModelProto.FromString(model_bytes(graph)), graph, opset)
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # a graph from a damaged file that only shows here
            text = " ".join(str(e).split())[:300]
            raise ModelFileError(f"the model to write fails onnx's checker, so it is not "
                                 f"written: {text}") from None
    return model


def _finished(model: onnx.ModelProto, graph: Graph, opset: int | None,
              external_ok: bool = False) -> onnx.ModelProto:
    """The parsed bytes of `graph` as written: types widened, ceil pools spelled, converted
    to `opset` (None: the lowest that holds it), validated (irkit never writes a model it
    would refuse to read)."""
    opset = check_opset(graph, opset, MAX_OPSET)
    widen_types(model, {v.name: onnx_dtype(v.dtype) for v in graph.values()}, IRKIT_OPSET)
    spell_ceil_pools(model, {v.name: v.shape for v in graph.values()})
    if opset != IRKIT_OPSET:
        model = convert_opset(model, opset)
    validate_model(model, external_ok=external_ok)
    return model


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert an opset-17 model to another ai.onnx opset with onnx.version_converter, after
    lowering what the converter cannot (`lower_below_17`); a one-line error if it can't."""
    if opset < MIN_OPSET:
        raise UnsupportedOpError(f"opset {opset} is older than irkit supports; use "
                                 f"--opset {MIN_OPSET} or newer")
    if opset > MAX_OPSET:
        raise UnsupportedOpError(f"opset {opset} is newer than the installed onnx knows "
                                 f"({MAX_OPSET}); use --opset {MAX_OPSET} or older")
    model = lower_below_17(model, opset)
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises bare RuntimeErrors
        converted = _relabel_opset(model, opset)
        if converted is None:
            raise UnsupportedOpError(f"cannot convert the model to opset {opset}: "
                                     f"{str(e).splitlines()[0]}; try another --opset") from None
    converted.ir_version = helper.find_min_ir_version_for(list(converted.opset_import))
    return converted


def _relabel_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto | None:
    """Declare an older opset when every node is valid there as written.

    The version converter has no down-adapters for changes that only widened type lists
    (e.g. Relu 13 -> 14); the full checker, run against the older opset's schemas, decides
    whether the model as written means the same there.
    """
    relabeled = onnx.ModelProto()
    relabeled.CopyFrom(model)
    for o in relabeled.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    relabeled.ir_version = helper.find_min_ir_version_for(list(relabeled.opset_import))
    try:
        onnx.checker.check_model(relabeled, full_check=True)
    except Exception:
        return None
    return relabeled


def save(graph: Graph, path: str | os.PathLike, opset: int | None = None) -> onnx.ModelProto:
    """Export `graph` and write it to `path`; written to a temporary name first, then moved.
    Weights above the external-data threshold (`_wire.external_names`) go to `PATH.data`
    beside it, streamed from the arrays; the two files are renamed into place together.
    Returns the model as written (its large tensors referencing that file)."""
    files, model = model_files_for(graph, path, opset)
    write_all_atomic(files)
    return model


def model_files_for(graph: Graph, path: str | os.PathLike, opset: int | None = None
                    ) -> tuple[list[tuple[str, Any]], onnx.ModelProto]:
    """The files of `graph` as a model at `path` for `write_all_atomic` (`file_parts`:
    with PATH.data first when its weights go to external data), and the model; validated,
    at `opset`."""
    files = file_parts(graph, os.fspath(path))
    if len(files) == 1:
        model = to_onnx(graph, opset)
        return [(path, model.SerializeToString())], model
    model = _finished(onnx.ModelProto.FromString(files[-1][1]), graph, opset, external_ok=True)
    return [files[0], (path, model.SerializeToString())], model


# ---- import ----------------------------------------------------------------------------------
def parse_proto(data: bytes, path: str | os.PathLike, check: bool = False,
                detached: dict[str, np.ndarray | None] | None = None) -> onnx.ModelProto:
    """The ModelProto of an ONNX file's bytes (read within the caps by `_read.load_proto`),
    with its external data read from inside its folder only; `check`: validated as an import
    validates (`validate_model`, `check_schemas`). One-line errors that name the file.
    `detached` (an empty dict): large external weights are read into numpy arrays there, not
    into the model (see `load_external_data`; for `from_onnx`)."""
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as e:  # protobuf's DecodeError, or a message it cannot hold
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'parse error'})") from None
    try:
        check_node_count(len(model.graph.node), f"{path}: the model")
    except FileSafetyError as e:  # the count from the bytes was not taken (malformed there)
        raise ModelFileError(str(e)) from None
    try:
        load_external_data(model, os.path.dirname(os.path.abspath(path)), detached)
        if check:
            validate_model(model)
            check_schemas(model)
    except IrkitError as e:
        raise type(e)(f"{path}: {e}") from None
    return model


def with_dynamic_batch(model: onnx.ModelProto, name: str = "N") -> onnx.ModelProto:
    """A copy whose graph inputs and outputs have a symbolic first (batch) dim, and no stored
    intermediate shapes (irkit infers them again), so any batch size runs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name for t in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.output]:
        t = vi.type.tensor_type
        if vi.name in inits or vi.doc_string.startswith(DETACHED) or not t.HasField("shape") \
                or not t.shape.dim:
            continue
        t.shape.dim[0].Clear()
        t.shape.dim[0].dim_param = name
    del model.graph.value_info[:]
    return model


def from_onnx(model: onnx.ModelProto,
              detached: dict[str, np.ndarray | None] | None = None) -> Graph:
    """Convert a ModelProto to an IR Graph (ops irkit knows; older opsets are converted).
    The model is validated first (irkit.onnx_io._validate): a damaged file is a ModelFileError.
    `detached`: the initializers `load_proto` read into arrays (declared as graph inputs in
    `model`), which become initializers again, in the file's order."""
    validate_model(model)
    g = model.graph
    _sorted_nodes(g, {vi.name for vi in g.input} | {t.name for t in g.initializer})  # names
    _check_ops(g, other_domains_only=True)  # ai.onnx ops are checked after opset conversion
    check_schemas(model)
    model = _normalize_opset(model)
    g = model.graph
    _check_ops(g)
    graph = Graph(g.name or "model")
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    _add_initializers(graph, g, detached or {})
    init_names = set(graph.initializers)
    for vi in g.input:
        if vi.name not in init_names:
            graph.add_input(vi.name, *_type_of(vi))
    for proto in _sorted_nodes(g, {v.name for v in graph.values()}):
        _add_node(graph, proto)
    undefined = [vi.name for vi in g.output if not graph.has_value(vi.name)]
    if undefined:
        raise ModelFileError(f"graph outputs {undefined} are not defined by any node, input or "
                             "initializer")
    graph.outputs = [graph.value(vi.name) for vi in g.output]
    for vi in g.output:  # declared output shapes are more precise than inference may be
        dtype, shape = _type_of(vi)
        v = graph.value(vi.name)
        if shape is not None and v.shape is None:
            v.shape = shape
    graph.verify()
    return graph


def _add_initializers(graph: Graph, g: onnx.GraphProto,
                      detached: dict[str, np.ndarray | None]) -> None:
    """The model's initializers and the detached arrays, in the file's order (those import
    folding added after)."""
    protos = {t.name: t for t in g.initializer}
    for name in [*(n for n in detached if detached[n] is not None or n in protos),
                 *(n for n in protos if n not in detached)]:
        array = detached.get(name)
        graph.add_initializer(name, numpy_helper.to_array(protos[name]) if array is None
                              else array)


def _add_node(graph: Graph, proto: onnx.NodeProto) -> None:
    """The node in the IR; a node whose inputs or attributes do not fit its op (which the op's
    inference trips over) is a one-line ModelFileError naming it, as a file's fault."""
    inputs = [graph.value(n) if n else None for n in proto.input]
    try:
        apply(graph, proto.op_type, inputs, _node_attributes(proto),
              name=proto.name or proto.op_type, output_names=list(proto.output),
              domain=proto.domain)
    except IrkitError:
        raise
    except (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError) as e:
        raise ModelFileError(f"node {proto.name or proto.op_type!r} ({proto.op_type}): its "
                             f"inputs or attributes do not fit the op ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None


def _normalize_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None:
        raise ModelFileError("the model imports no ai.onnx opset")
    model = sequences_to_split(model)
    if version < MIN_OPSET:
        model = convert_opset(model, IRKIT_OPSET)
    elif version > IRKIT_OPSET:
        model = downgrade_to_opset_17(model)
    model = fold_constant_inputs(model)
    inlined = inline_constant_ifs(model)  # conditions may read folded shapes
    return model if inlined is model else fold_constant_inputs(inlined)


def _check_ops(g: onnx.GraphProto, other_domains_only: bool = False) -> None:
    missing: dict[str, list[str]] = {}
    for n in g.node:
        if other_domains_only and n.domain in ("", "ai.onnx"):
            continue
        if not has_op(n.op_type, n.domain):
            op = f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
            missing.setdefault(op, []).append(n.name or "<unnamed>")
    if missing:
        parts = [f"{op} (nodes {', '.join(names[:3])}{'...' if len(names) > 3 else ''})"
                 for op, names in sorted(missing.items())]
        raise UnsupportedOpError(f"unsupported ops: {'; '.join(parts)}; run `irkit ops` for "
                                 "the supported list")


def _sorted_nodes(g: onnx.GraphProto, defined: set[str]) -> list[onnx.NodeProto]:
    """The nodes in topological order; ModelFileError for dangling names or cycles."""
    producers = {}
    for n in g.node:
        for o in n.output:
            if o in producers or o in defined:
                raise ModelFileError(f"value {o!r} is defined twice")
            producers[o] = n

    def deps(node: onnx.NodeProto):
        for name in node.input:
            if not name or name in defined:
                continue
            if name not in producers:
                raise ModelFileError(f"node {node.name!r} ({node.op_type}) reads {name!r}, "
                                     "which no node, input or initializer defines")
            yield producers[name]

    order: list[onnx.NodeProto] = []
    state: dict[int, int] = {}  # 1: on the current path, 2: placed
    for root in g.node:
        if state.get(id(root)) == 2:
            continue
        state[id(root)] = 1
        stack = [(root, deps(root))]
        while stack:
            node, pending = stack[-1]
            for dep in pending:
                if state.get(id(dep)) == 1:
                    raise ModelFileError(_cycle_message([n for n, _ in stack], dep))
                if state.get(id(dep)) is None:
                    state[id(dep)] = 1
                    stack.append((dep, deps(dep)))
                    break
            else:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order


def _cycle_message(path: list[onnx.NodeProto], back: onnx.NodeProto) -> str:
    """Name the nodes of the cycle closed by the edge from `back` into the path's last node:
    each node on the path reads the next one's output, so the cycle runs back to front."""
    start = next(i for i, n in enumerate(path) if n is back)
    cycle = list(reversed(path[start:]))
    names = " -> ".join(_printable(n.name or f"<unnamed {n.op_type}>") for n in
                        [*cycle, cycle[0]])
    return f"the graph has a cycle: {names}; ONNX graphs must be acyclic"


def _printable(text: str) -> str:
    """A name fit for a terminal: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _type_of(vi: onnx.ValueInfoProto) -> tuple[Any, Any]:
    kind = vi.type.WhichOneof("value")
    if kind not in (None, "tensor_type"):
        raise UnsupportedOpError(f"{vi.name!r} has a {kind.replace('_type', '')} type; irkit "
                                 "imports tensors only")
    t = vi.type.tensor_type
    dtype = numpy_dtype(t.elem_type) if t.elem_type else np.float32
    if not t.HasField("shape"):
        return dtype, None
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in t.shape.dim)
    return dtype, dims


def _node_attributes(proto: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values; a Constant's value_float(s)/value_int(s)/
    value_string(s) become its `value` array (the one spelling irkit's Constant reads)."""
    value = constant_value(proto)
    if value is not None:
        return {"value": value}
    return {a.name: _import_attr(a) for a in proto.attribute}


def _import_attr(a: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value
