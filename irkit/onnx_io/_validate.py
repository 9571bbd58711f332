"""Structural checks of an ONNX model, run before irkit imports one and before it writes one.

Every check raises a one-line `ModelFileError` (`UnsupportedOpError` for element types irkit
does not hold: FLOAT6 and later) that names the tensor, node or value at fault,
before anything is allocated from the file:

1. an ai.onnx opset in the range irkit reads, once; an IR version the installed onnx knows;
2. a graph with at least one output; no name defined twice (inputs, initializers, node
   outputs, graph outputs);
3. known element types; dims >= 0 and at most 64 of them (numpy's and onnxruntime's limit) on
   tensors and declared shapes;
4. tensors (initializers, Constant values, tensor attributes): element count within the
   elements cap, and the stored bytes (raw_data or the typed field) exactly as many as the
   dims and element type need (sub-byte types packed); no unresolved external data; no
   segments;
5. attributes in range, by the one table `ATTRIBUTE_RULES` (what irkit hands onnxruntime must
   be in the op's documented range, or onnxruntime fails with its own C++ message): strides,
   dilations, kernel_shape and group > 0; pads >= 0; axis and axes within rank 64, axes
   distinct; perm a permutation; Dropout's ratio (attribute, or constant input) in [0, 1);
   UTF-8 strings.
`check_schemas` then checks input counts against each op's schema and runs onnx's checker
(node schemas, shape inference) on what passed.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

from irkit.errors import ModelFileError, UnsupportedOpError, printable
from irkit.ops.dtypes import LAST_ELEMENT_TYPE, NEWER_TYPES, element_bits, stored_bytes
from irkit.safe_io import check_element_count

MIN_READ_OPSET = 7  # older models are converted by onnx.version_converter, which starts here
MAX_OPSET = onnx.defs.onnx_opset_version()
LAST_SUPPORTED_TYPE = LAST_ELEMENT_TYPE  # INT2; FLOAT6 (27, 28) have no onnxruntime kernel

# where each element type keeps its data when not in raw_data, and values per element
_TYPED_FIELD = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1),
    **{t: ("int32_data", 1) for t in (TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
                                      TensorProto.UINT16, TensorProto.UINT8, TensorProto.BOOL,
                                      TensorProto.FLOAT16, TensorProto.BFLOAT16)},
    **{t: ("int32_data", 1) for t in NEWER_TYPES if t != TensorProto.BFLOAT16},  # bytes packed
}
MAX_RANK = 64  # numpy's and onnxruntime's most dimensions


def _ratio(v: float) -> bool:
    return 0.0 <= v < 1.0


def _axis(v: int) -> bool:
    return -MAX_RANK <= v < MAX_RANK


# The attribute rules: (ops, or None for every ai.onnx op; attribute; kind of value: "ints",
# "int" or "float"; rule; what the value must be, for the message). One row per rule.
ATTRIBUTE_RULES = [
    (None, "strides", "ints", lambda v: all(x > 0 for x in v), "> 0"),
    (None, "dilations", "ints", lambda v: all(x > 0 for x in v), "> 0"),
    (None, "kernel_shape", "ints", lambda v: all(x > 0 for x in v), "> 0"),
    (None, "pads", "ints", lambda v: all(x >= 0 for x in v), ">= 0"),
    (None, "group", "int", lambda v: v > 0, "> 0"),
    (None, "axis", "int", _axis, f"an axis within rank {MAX_RANK} (-{MAX_RANK}..{MAX_RANK - 1})"),
    (None, "axes", "ints", lambda v: all(map(_axis, v)) and len(set(v)) == len(v),
     f"distinct axes within rank {MAX_RANK}"),
    (("Transpose",), "perm", "ints", lambda v: sorted(v) == list(range(len(v))),
     "a permutation of 0..n-1"),
    (("Dropout",), "ratio", "float", _ratio, "in [0, 1)"),
]
# constant inputs onnxruntime reads as settings: (op, input index, rule, what it must be)
CONSTANT_INPUT_RULES = [("Dropout", 1, _ratio, "a ratio in [0, 1)")]


def type_name(elem: int) -> str:
    """The name of an element type, or its number when onnx knows no such type."""
    try:
        return TensorProto.DataType.Name(elem)
    except ValueError:
        return f"number {elem}"


def validate_model(model: onnx.ModelProto, external_ok: bool = False) -> None:
    """ModelFileError (one line) for the first structural problem of `model` (module doc).
    `external_ok`: initializers of the graph may reference external data (a model irkit
    writes with its weights beside it)."""
    _check_text(model)
    _check_versions(model)
    _check_graph(model.graph, "the graph", needs_outputs=True, external_ok=external_ok)
    for i, info in enumerate(model.training_info):
        _check_graph(info.initialization, f"training_info[{i}].initialization")
        _check_graph(info.algorithm, f"training_info[{i}].algorithm")


def check_schemas(model: onnx.ModelProto) -> None:
    """onnx's own node checks (attribute names and types, input and output counts) and
    strict shape inference (type constraints, shapes that cannot fit), after `validate_model`,
    as a one-line ModelFileError. Nodes of ops onnx does not know are left to the importer
    (it names unsupported ops); graph inputs and outputs may leave their shapes out."""
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version or onnx.IR_VERSION
    ctx.opset_imports = {("" if o.domain == "ai.onnx" else o.domain): o.version
                         for o in model.opset_import}
    for n in model.graph.node:
        if n.domain in ("", "ai.onnx") and onnx.defs.has(n.op_type, ""):
            _check_input_count(n, ctx.opset_imports.get("", MAX_OPSET))
    try:
        for n in model.graph.node:
            domain = "" if n.domain == "ai.onnx" else n.domain
            # a control-flow node (If, Loop, Scan) reads outer names that check_node, without
            # the enclosing scope, takes for unsorted ones: left to the importer, which names it
            if domain == "" and onnx.defs.has(n.op_type, domain) and not _has_subgraph(n):
                onnx.checker.check_node(n, ctx)
        onnx.shape_inference.infer_shapes(_without_large_tensors(model), check_type=True,
                                          strict_mode=True)
    except Exception as e:  # ValidationError, InferenceError: long multi-line texts
        text = " ".join(str(e).split())
        text = text.removeprefix("[ShapeInferenceError] Inference error(s): ")
        raise ModelFileError(f"not a valid ONNX model: {text[:300]}") from None


def _without_large_tensors(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` for shape inference: itself when no initializer holds more than _sizes' small
    ones; else its skeleton (`_sizes._skeleton`: a large initializer becomes a graph input of
    its type and shape; inference reads values only of shape-like inputs, and the C++ pass
    would copy the weights twice and refuses a model beyond 2 GB), with the graph's declared
    value_info and sparse initializers kept, so strict inference checks what it checked."""
    from irkit.onnx_io._sizes import _SMALL, _skeleton
    g = model.graph
    if all(math.prod(t.dims) <= _SMALL for t in g.initializer):
        return model
    skeleton = _skeleton(model)[0]
    skeleton.graph.value_info.extend(g.value_info)
    skeleton.graph.sparse_initializer.extend(g.sparse_initializer)
    return skeleton


def _has_subgraph(n: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute)


def _check_input_count(n: onnx.NodeProto, opset: int) -> None:
    """A node's input count within its op's schema, said in one short line."""
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, "")
    except onnx.defs.SchemaError:
        return  # not defined at this opset: onnx's checker says so
    count, low, high = len(n.input), schema.min_input, schema.max_input
    if not low <= count <= high:
        takes = f"{low}" if low == high else f"{low} to {high}" if high < 1 << 20 else \
            f"at least {low}"
        raise ModelFileError(f"node {printable(n.name or n.op_type)} ({n.op_type}) has {count} "
                             f"inputs; {n.op_type} takes {takes}, the file is damaged")


def _check_text(model: onnx.ModelProto) -> None:
    """Names, op types, domains and metadata must be UTF-8 (protobuf hands back bytes for a
    damaged string field)."""
    g = model.graph
    texts = [("a metadata entry", x) for p in model.metadata_props for x in (p.key, p.value)]
    texts += [("an opset domain", o.domain) for o in model.opset_import]
    texts += [("the graph name", g.name), ("the producer name", model.producer_name)]
    texts += [("a value name", v.name) for v in [*g.input, *g.output, *g.value_info,
                                                 *g.initializer]]
    for n in g.node:
        texts += [("a node's name, op type or domain", x) for x in (n.name, n.op_type, n.domain)]
        texts += [("a node's input or output name", x) for x in [*n.input, *n.output]]
        texts += [("an attribute name", a.name) for a in n.attribute]
    for what, text in texts:
        if not isinstance(text, str):
            raise ModelFileError(f"{what} is not UTF-8 text ({text[:40]!r}); the file is "
                                 "damaged")


def _check_versions(model: onnx.ModelProto) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise ModelFileError(f"IR version {model.ir_version} is newer than the installed onnx "
                             f"reads ({onnx.IR_VERSION}); upgrade onnx or re-export the model")
    seen: set[str] = set()
    for o in model.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in seen:
            raise ModelFileError(f"opset of domain {o.domain or 'ai.onnx'!r} is imported twice")
        seen.add(domain)
        if domain == "" and not MIN_READ_OPSET <= o.version <= MAX_OPSET:
            raise ModelFileError(f"ai.onnx opset {o.version} is outside the range irkit reads "
                                 f"({MIN_READ_OPSET} to {MAX_OPSET}); re-export the model with "
                                 "a supported opset")
    if "" not in seen:
        raise ModelFileError("the model imports no ai.onnx opset")


def _check_graph(g: onnx.GraphProto, where: str, needs_outputs: bool = False,
                 external_ok: bool = False) -> None:
    if needs_outputs and not g.output:
        raise ModelFileError(f"{where} has no outputs; a model must compute something")
    _unique([vi.name for vi in g.input], "graph input")
    _unique([t.name for t in g.initializer], "initializer")
    _unique([vi.name for vi in g.output], "graph output")
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        for name in n.output:
            if name and name in defined:
                raise ModelFileError(f"value {printable(name)} is defined twice (node "
                                     f"{printable(n.name or n.op_type)})")
            defined.add(name)
    for vi in [*g.input, *g.output, *g.value_info]:
        _check_value_info(vi)
    for t in g.initializer:
        check_tensor(t, f"initializer {printable(t.name)}", external_ok)
    constants = {t.name: t for t in g.initializer}
    for n in g.node:
        _check_node(n)
        _check_constant_inputs(n, constants)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output:
            for a in n.attribute:
                if a.name == "value":
                    constants[n.output[0]] = a.t


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelFileError(f"{what} {printable(name)} is declared twice")
        seen.add(name)


def _check_value_info(vi: onnx.ValueInfoProto) -> None:
    if vi.type.WhichOneof("value") != "tensor_type":
        return  # the importer names non-tensor types itself
    t = vi.type.tensor_type
    if t.elem_type:  # 0: not given
        _check_elem_type(t.elem_type, f"value {printable(vi.name)}")
    if len(t.shape.dim) > MAX_RANK:
        raise ModelFileError(f"value {printable(vi.name)} declares {len(t.shape.dim)} "
                             f"dimensions; at most {MAX_RANK} are supported")
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value < 0:
            raise ModelFileError(f"value {printable(vi.name)} declares a negative dimension "
                                 f"{d.dim_value}")


def _check_elem_type(elem: int, what: str) -> None:
    if elem not in TensorProto.DataType.values() or elem == TensorProto.UNDEFINED:
        raise ModelFileError(f"{what} has an unknown element type {type_name(elem)}")
    if elem > LAST_SUPPORTED_TYPE:
        raise UnsupportedOpError(f"{what} has element type {type_name(elem)}, which irkit does "
                                 f"not support (it reads types up to "
                                 f"{type_name(LAST_SUPPORTED_TYPE)}); cast it in the exporter")


def check_tensor(t: onnx.TensorProto, what: str, external_ok: bool = False) -> int:
    """The byte size `t` must hold (ModelFileError if its type, dims or stored data do not fit
    together); checked before any array is built from it."""
    _check_elem_type(t.data_type, what)
    if any(d < 0 for d in t.dims):
        raise ModelFileError(f"{what} has a negative dimension in {list(t.dims)}")
    if len(t.dims) > MAX_RANK:
        raise ModelFileError(f"{what} has {len(t.dims)} dimensions; at most {MAX_RANK} are "
                             "supported")
    count = math.prod(t.dims)
    check_element_count(count, what)
    if t.HasField("segment"):
        raise ModelFileError(f"{what} is stored in segments, which irkit does not read")
    nbytes = 0 if t.data_type == TensorProto.STRING else stored_bytes(t.data_type, count)
    if t.data_location == TensorProto.EXTERNAL:
        if not external_ok:
            raise ModelFileError(f"{what} keeps its data in an external file that was not read;"
                                 " load the model with irkit.onnx_io.load(path)")
        return nbytes
    if t.raw_data:
        if t.data_type == TensorProto.STRING or len(t.raw_data) != nbytes:
            raise ModelFileError(f"{what}: raw_data has {len(t.raw_data)} bytes, but dims "
                                 f"{list(t.dims)} of {type_name(t.data_type)} need "
                                 f"{nbytes}; the file is damaged")
        return nbytes
    field, per = _TYPED_FIELD[t.data_type]
    stored = len(getattr(t, field))
    want = nbytes if element_bits(t.data_type) < 8 else count * per  # packed bytes, or values
    if stored != want:
        raise ModelFileError(f"{what}: {field} has {stored} values, but dims {list(t.dims)} "
                             f"need {want}; the file is damaged")
    return nbytes


def _check_node(n: onnx.NodeProto) -> None:
    where = f"node {printable(n.name or n.op_type)} ({printable(n.op_type)})"
    for a in n.attribute:
        what = f"{where}: attribute {printable(a.name)}"
        if a.type == onnx.AttributeProto.TENSOR or a.HasField("t"):
            check_tensor(a.t, what)
        for t in a.tensors:
            check_tensor(t, what)
        if a.HasField("sparse_tensor") or a.sparse_tensors:
            raise ModelFileError(f"{what} is a sparse tensor, which irkit does not read")
        for s in [a.s, *a.strings]:
            try:
                s.decode()
            except UnicodeDecodeError:
                raise ModelFileError(f"{what} is not UTF-8 text") from None
        if n.domain in ("", "ai.onnx"):
            _check_attribute(n.op_type, a, what)


def _check_attribute(op: str, a: onnx.AttributeProto, what: str) -> None:
    """The rows of ATTRIBUTE_RULES that apply to attribute `a` of an `op` node."""
    for ops, name, kind, rule, must in ATTRIBUTE_RULES:
        if name != a.name or (ops is not None and op not in ops):
            continue
        value = {"ints": lambda: list(a.ints), "int": lambda: a.i, "float": lambda: a.f}[kind]()
        if not rule(value):
            raise ModelFileError(f"{what} must be {must}, got {value}; fix or re-export the "
                                 "model")


def _check_constant_inputs(n: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> None:
    """CONSTANT_INPUT_RULES: settings given as constant inputs (a Dropout's ratio)."""
    if n.domain not in ("", "ai.onnx"):
        return
    for op, index, rule, must in CONSTANT_INPUT_RULES:
        if n.op_type != op or len(n.input) <= index or n.input[index] not in constants:
            continue
        t = constants[n.input[index]]
        if math.prod(t.dims) != 1 or t.data_type not in (TensorProto.FLOAT, TensorProto.DOUBLE,
                                                          TensorProto.FLOAT16):
            continue  # onnx's schema check names a wrong type or shape
        value = float(onnx.numpy_helper.to_array(t).reshape(-1)[0])
        if not rule(value):
            raise ModelFileError(f"node {printable(n.name or n.op_type)} ({op}): input {index} "
                                 f"({printable(n.input[index])}) must be {must}, got {value:g}; "
                                 "fix or re-export the model")
