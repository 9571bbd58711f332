"""An irkit graph written as ONNX bytes with numpy and the standard library alone.

onnxruntime takes a model as bytes, and `irkit train -o` writes bytes: neither needs the
onnx package, whose import is 30-45 ms of a 0.22 s `irkit train iris_mlp` process. This
module writes the part of onnx.proto (proto2) that an irkit graph fills in, the way
onnx.helper fills it: ModelProto (IR version, producer, one ai.onnx opset, metadata),
GraphProto, NodeProto, AttributeProto (float, int, string, tensor and their lists),
ValueInfoProto of tensors, TensorProto (raw_data; string tensors in string_data). Fields go
out in field-number order, as protobuf's serializers write them: the tests hold the bytes
equal to those of the same model built with onnx.helper, and `irkit.onnx_io.to_onnx` parses
these bytes, so there is one writer of ONNX in irkit.

The checks `onnx_validate.validate_model` would make of a written model that a graph in
memory can still fail are made here: a graph with outputs, names that are UTF-8 text,
tensors within the elements cap, element types ONNX has.
"""

from __future__ import annotations

import functools
import numbers
import os
import struct
from typing import Any

import numpy as np

from irkit.errors import ModelFileError, ShapeError, UnsupportedOpError
from irkit.ir import Graph, Node, Value, verification_enabled
from irkit.ops.dtypes import element_bits, onnx_dtype
from irkit.safe_io import check_element_count, data_file
from irkit.version import __version__

IRKIT_OPSET = 17  # the IR's op semantics are those of ai.onnx opset 17
IR_VERSION = 8    # the IR version that opset 17 came with (onnx.helper.VERSION_TABLE)
PRODUCER = "irkit"

STRING = 8  # TensorProto.DataType of str and bytes
# AttributeProto.AttributeType, and the field each kind's value goes in
_ATTRIBUTE = {"float": (1, 2), "int": (2, 3), "string": (3, 4), "tensor": (4, 5),
              "floats": (6, 7), "ints": (7, 8), "strings": (8, 9), "tensors": (9, 10)}
_SCHEMA_KINDS = {"FLOAT": "float", "INT": "int", "FLOATS": "floats", "INTS": "ints",
                 "TENSOR": "tensor", "STRING": "string", "STRINGS": "strings"}
_FLOAT = struct.Struct("<f")


# ---- protobuf's wire format --------------------------------------------------------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64: a negative number is its two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _sized(field: int, parts: list) -> list:
    """A length-delimited field whose payload is `parts` (bytes-like), left unjoined."""
    return [_varint(field << 3 | 2) + _varint(sum(len(p) for p in parts)), *parts]


def _float(field: int, x: float) -> bytes:
    return _varint(field << 3 | 5) + _FLOAT.pack(x)


def _text(field: int, text: str | bytes, what: str) -> bytes:
    return _bytes(field, _utf8(text, what))


def _utf8(text: str | bytes, what: str) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ModelFileError(f"{what} {text[:40]!r} is not UTF-8 text; rename it") from None


# ---- messages ----------------------------------------------------------------------------------
def tensor_bytes(array: Any, name: str = "") -> bytes:
    """A TensorProto of `array` (as numpy_helper.from_array writes it)."""
    return b"".join(_tensor_parts(array, name))


def _tensor_parts(array: Any, name: str = "") -> list:
    """A TensorProto as pieces: its raw data a view of the array (when it is C-ordered and
    little-endian), so a model's weights are copied once, into the model's bytes."""
    array = np.asarray(array)
    what = f"tensor {name!r}" if name else "a tensor"
    check_element_count(array.size, what)
    code = element_type(array.dtype, what)
    out = [_int(1, d) for d in array.shape] + [_int(2, code)]
    if code == STRING:  # string_data (field 6), before the name
        for e in array.flat:
            if not isinstance(e, (str, bytes)):
                raise UnsupportedOpError(f"{what} holds a {type(e).__name__}; ONNX string "
                                         "tensors hold str or bytes")
            out.append(_text(6, e, what))
    if name:
        out.append(_text(8, name, "a tensor name"))
    if code == STRING:
        return out
    raw = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).reshape(-1)
    bits = element_bits(code)
    if bits < 8:  # int4/uint4/float4 two to a byte, int2/uint2 four, the first lowest
        raw = _packed(raw.view(np.uint8), bits)
    return out + _sized(9, [memoryview(raw.view(np.uint8))])


def _packed(codes: np.ndarray, bits: int) -> np.ndarray:
    """Sub-byte elements (one per byte, as ml_dtypes holds them) packed as ONNX stores them."""
    per = 8 // bits
    lanes = np.zeros(-(-codes.size // per) * per, np.uint8)
    lanes[:codes.size] = codes & ((1 << bits) - 1)
    lanes = lanes.reshape(-1, per) << (np.arange(per, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(lanes, axis=1).astype(np.uint8)


def element_type(dtype: Any, what: str) -> int:
    """The TensorProto.DataType of a numpy dtype (UnsupportedOpError if ONNX has none)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return STRING
    try:
        return onnx_dtype(dtype.newbyteorder("="))
    except ShapeError:
        raise UnsupportedOpError(f"{what} has element type {dtype}, which ONNX has no type "
                                 "for; cast it first") from None


def _value_info(v: Value) -> bytes:
    tensor = _int(1, element_type(v.dtype, f"value {v.name!r}"))
    if v.shape is not None:  # a scalar has an empty shape, which is not the same as none
        dims = []
        for d in v.shape:
            dim = b"" if d is None else _int(1, d) if isinstance(d, numbers.Integral) \
                else _text(2, str(d), f"a dimension of {v.name!r}")
            dims.append(_bytes(1, dim))
        tensor += _bytes(2, b"".join(dims))
    return _text(1, v.name, "a value name") + _bytes(2, _bytes(1, tensor))


def _attribute(node: Node, name: str, value: Any) -> bytes:
    """An AttributeProto: the value converted to the type irkit's op declares (an int given
    for a float attribute is still written as a float), then typed by its Python type."""
    declared = attribute_kind(node.op_type, node.domain, name)
    if declared == "float":
        value = float(value)
    elif declared == "int":
        value = int(value)
    elif declared == "floats":
        value = [float(x) for x in value]
    elif declared == "ints":
        value = [int(x) for x in value]
    elif isinstance(value, np.ndarray) or (declared == "tensor" and not _is_proto(value)):
        value = np.asarray(value)
    kind = _kind_of(value, declared, node, name)
    code, field = _ATTRIBUTE[kind]
    out = [_text(1, name, "an attribute name")]
    if kind == "float":
        out.append(_float(field, value))
    elif kind == "int":
        out.append(_int(field, value))
    elif kind == "string":
        out.append(_text(field, value, f"attribute {name!r}"))
    elif kind == "tensor":
        out.append(_bytes(field, _tensor_value(value)))
    elif kind == "floats":
        out += [_float(field, x) for x in value]
    elif kind == "ints":
        out += [_int(field, x) for x in value]
    elif kind == "strings":
        out += [_text(field, x, f"attribute {name!r}") for x in value]
    else:
        out += [_bytes(field, _tensor_value(x)) for x in value]
    out.append(_int(20, code))
    return b"".join(out)


def _is_proto(value: Any) -> bool:
    return hasattr(value, "SerializeToString")


def _tensor_value(value: Any) -> bytes:
    return value.SerializeToString() if _is_proto(value) else tensor_bytes(value)


def _kind_of(value: Any, declared: str | None, node: Node, name: str) -> str:
    """The attribute kind of a value by its Python type (as onnx.helper.make_attribute); an
    empty list takes the declared kind."""
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, np.ndarray) or _is_proto(value):
        return "tensor"
    if isinstance(value, (list, tuple)):
        if not value and declared in ("ints", "floats", "strings", "tensors"):
            return declared
        for kind, types in (("ints", numbers.Integral), ("floats", numbers.Real),
                            ("strings", (str, bytes))):
            if value and all(isinstance(x, types) for x in value):
                return kind
        if value and all(isinstance(x, np.ndarray) or _is_proto(x) for x in value):
            return "tensors"
    raise UnsupportedOpError(f"attribute {name!r} of node {node.name!r} ({node.op_type}) is "
                             f"{value!r:.60}, which is no ONNX attribute value")


def _node(node: Node) -> bytes:
    out = [_text(1, v.name if v is not None else "", "an input name") for v in node.inputs]
    out += [_text(2, o.name, "an output name") for o in node.outputs]
    if node.name:
        out.append(_text(3, node.name, "a node name"))
    out.append(_text(4, node.op_type, "an op type"))
    out += [_bytes(5, _attribute(node, k, a)) for k, a in sorted(node.attributes.items())
            if a is not None]
    if node.domain:
        out.append(_text(7, node.domain, "a domain"))
    return b"".join(out)


def graph_bytes(graph: Graph) -> bytes:
    """A GraphProto: nodes, name, initializers, inputs, outputs."""
    return b"".join(_graph_parts(graph))


def _graph_parts(graph: Graph, external: Externals | None = None) -> list:
    if not graph.outputs:
        raise ModelFileError(f"graph {graph.name!r} has no outputs; a model must compute "
                             "something")
    out = [_bytes(1, _node(n)) for n in graph.nodes]
    out.append(_text(2, graph.name, "the graph name"))
    for name, v in graph.initializers.items():
        parts = _tensor_parts(v.const, name)
        if external is not None and name in external.names:
            parts = external.take(parts, parts[-1].nbytes)  # the bytes stored (packed)
        out += _sized(5, parts)
    out += [_bytes(11, _value_info(v)) for v in graph.inputs]
    out += [_bytes(12, _value_info(v)) for v in graph.outputs]
    return out


# a model whose weights hold more bytes than this is written with its large weights as
# external data (protobuf cannot hold a message above 2 GiB); IRKIT_EXTERNAL_DATA_BYTES
# overrides it (0: always, for tests of the path)
EXTERNAL_DATA_BYTES = 1 << 30
EXTERNAL_DATA_ENV = "IRKIT_EXTERNAL_DATA_BYTES"
LARGE_BYTES = 1 << 16  # only weights above this go to the external file


def external_names(graph: Graph) -> list[str]:
    """The initializers a file of `graph` keeps as external data: the large non-string ones,
    when the weights add up to more than the threshold (EXTERNAL_DATA_ENV); else none."""
    raw = os.environ.get(EXTERNAL_DATA_ENV, "")
    threshold = int(raw) if raw.strip().isdigit() else EXTERNAL_DATA_BYTES
    consts = [(n, v.const) for n, v in graph.initializers.items()]
    if sum(c.nbytes for _, c in consts if c.dtype.kind not in "OSU") <= threshold:
        return []
    return [n for n, c in consts if c.dtype.kind not in "OSU" and c.nbytes > LARGE_BYTES]


class Externals:
    """Initializers written as external data to one file (`location`, beside the model):
    their TensorProtos reference it, and `chunks` are its bytes (views of the arrays)."""

    def __init__(self, names: list[str], location: str) -> None:
        self.names, self.location = set(names), location
        self.chunks: list[memoryview] = []
        self.offset = 0

    def take(self, parts: list, nbytes: int) -> list:
        """A TensorProto's pieces (dims, type, name, raw data: `_tensor_parts`) with the raw
        data moved to the file: external_data entries and data_location EXTERNAL instead."""
        head, raw = parts[:-2], parts[-1]
        self.chunks.append(raw)
        entries = [("location", self.location), ("offset", str(self.offset)),
                   ("length", str(nbytes))]
        self.offset += nbytes
        return [*head, *(_bytes(13, _text(1, k, "a key") + _text(2, v, "external data"))
                         for k, v in entries), _int(14, 1)]


def model_files(graph: Graph, location: str, names: list[str] | None = None
                ) -> tuple[bytes, list[memoryview]]:
    """`model_bytes(graph)` with the initializers `names` (default: those `external_names`
    picks) written as external data in a file named `location` beside the model: (the
    model's bytes, that file's bytes as views of the weights, never joined; empty when
    nothing is external)."""
    external = Externals(external_names(graph) if names is None else names, location)
    return model_bytes(graph, external), external.chunks


def file_parts(graph: Graph, path: str) -> list[tuple[str, Any]]:
    """The files of `graph` written as the model `path`, for `safe_io.write_all_atomic`:
    [(path, model bytes)], or, when its weights go to external data (`external_names`),
    [(PATH.data, the weights' chunks), (path, model bytes)], the data named relative to the
    model (its basename + ".data", beside it)."""
    data_name = os.path.basename(data_file(path))
    head, chunks = model_files(graph, data_name)
    if not chunks:
        return [(path, head)]
    return [(os.path.join(os.path.dirname(os.fspath(path)), data_name), chunks), (path, head)]


def model_bytes(graph: Graph, external: Externals | None = None) -> bytes:
    """The graph as the bytes of an ONNX ModelProto (ai.onnx opset IRKIT_OPSET), joined once
    from its pieces (the weights are copied once). Under debug verification (IRKIT_VERIFY=1,
    the test suite) the graph is verified first and the model validated after as a file
    from a stranger would be (this imports onnx)."""
    from irkit.ops.registry import debug_verify
    debug_verify(graph)
    out = [_int(1, IR_VERSION), _text(2, PRODUCER, "the producer"),
           _text(3, __version__, "the version"), *_sized(7, _graph_parts(graph, external)),
           _bytes(8, _text(1, "", "a domain") + _int(2, IRKIT_OPSET))]
    out += [_bytes(14, _text(1, k, "a metadata key") + _text(2, v, "a metadata value"))
            for k, v in sorted(graph.metadata.items())]
    data = b"".join(out)
    if verification_enabled():
        import onnx

        from irkit.onnx_io._validate import validate_model
        validate_model(onnx.ModelProto.FromString(data), external_ok=external is not None)
    return data


@functools.cache
def attribute_kind(op_type: str, domain: str, name: str) -> str | None:
    """The attribute's type from irkit's op; from onnx's schema (imported only then: its
    registry takes tens of milliseconds to start) for an attribute the op does not declare."""
    from irkit.ops.registry import get_op, has_op
    kind = get_op(op_type, domain).attribute_kind(name) if has_op(op_type, domain) else None
    if kind is not None:
        return kind
    import onnx
    try:
        code = onnx.defs.get_schema(op_type, IRKIT_OPSET, domain).attributes[name].type
    except Exception:
        return None
    return _SCHEMA_KINDS.get(onnx.AttributeProto.AttributeType.Name(code))

