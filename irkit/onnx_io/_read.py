"""Reading an ONNX file: the caps that need no onnx import come first.

`load_proto` reads the file within the model size cap and counts the graph's nodes straight
from the protobuf bytes (ModelProto field 7 `graph`, GraphProto field 1 `node`), so a graph
over IRKIT_MAX_NODES is refused before the onnx package is imported (that import alone is
most of a second; a 100,000-node chain was refused after 1.1 s). Only then is the file parsed
by onnx (`_convert.parse_proto`). A file whose bytes are not well-formed protobuf gets no
count here: onnx's parser names the problem.
"""

from __future__ import annotations

import os

from irkit.errors import IrkitError, ModelFileError
from irkit.safe_io import FileSafetyError, check_node_count, read_capped

_MODEL_GRAPH, _GRAPH_NODE = 7, 1
_LENGTH_DELIMITED = 2


class _Malformed(ValueError):
    """Bytes that are not protobuf: left to onnx's parser."""


def varint(data: bytes, i: int) -> tuple[int, int]:
    """The protobuf varint at data[i] and the index after it (_Malformed, a ValueError, if
    it runs past the data or past 64 bits)."""
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise _Malformed
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes, start: int, end: int):
    """(field number, wire type, value start, value end) of each field of data[start:end]."""
    i = start
    while i < end:
        key, i = varint(data, i)
        wire = key & 7
        if wire == 0:
            j = varint(data, i)[1]
        elif wire == 1:
            j = i + 8
        elif wire == _LENGTH_DELIMITED:
            n, i = varint(data, i)
            j = i + n
        elif wire == 5:
            j = i + 4
        else:
            raise _Malformed
        if j > end:
            raise _Malformed
        yield key >> 3, wire, i, j
        i = j


def _count_nodes(data: bytes, start: int, end: int) -> int:
    """The `node` fields of the GraphProto in data[start:end]. A graph's fields are nearly all
    one-byte keys of length-delimited fields: those are skipped inline (a 100,000-node graph
    in 0.05 s, not 0.26 s), any other through `_fields`."""
    count, i = 0, start
    node_key = _GRAPH_NODE << 3 | _LENGTH_DELIMITED
    while i < end:
        key = data[i]
        if key < 0x80 and key & 7 == _LENGTH_DELIMITED and i + 1 < end:
            n = data[i + 1]
            i += 2
            if n >= 0x80:
                n, i = varint(data, i - 1)
            count += key == node_key
            i += n
            continue
        _, _, _, i = next(_fields(data, i, end))
    if i != end:
        raise _Malformed
    return count


def node_count(data: bytes) -> int | None:
    """The number of nodes of the main graph of a serialized ModelProto (None: malformed)."""
    try:
        return sum(_count_nodes(data, start, end) for field, wire, start, end
                   in _fields(data, 0, len(data))
                   if field == _MODEL_GRAPH and wire == _LENGTH_DELIMITED)
    except _Malformed:
        return None


def read_model(path: str | os.PathLike) -> bytes:
    """The bytes of an ONNX file within the size and node caps (one-line ModelFileError)."""
    try:
        data = read_capped(path, "model", "ONNX model")
        count = node_count(data)
        if count is not None:
            check_node_count(count, f"{path}: the model")
    except FileSafetyError as e:
        raise ModelFileError(str(e)) from None
    return data


def load_proto(path: str | os.PathLike, check: bool = False, detached: dict | None = None):
    """Read an ONNX file: a regular file within the model size and node caps, parsed, its
    external data read from inside its folder only (one-line errors that name the file).
    `check`: also validate it as an import does (`validate_model`, `check_schemas`), for a
    model handed to onnxruntime as it is. `detached` (an empty dict): large external weights
    are read into numpy arrays there, not into the model (`_external.load_external_data`)."""
    data = read_model(path)
    from irkit.onnx_io._convert import parse_proto
    return parse_proto(data, path, check, detached)


def load(path: str | os.PathLike, convert=None):
    """Read an ONNX file into the IR; errors name the file. `convert(proto, detached) ->
    Graph` replaces the plain conversion `from_exported(proto, detached)` (from_onnx, with
    what the exporter changed tied again or recorded: irkit.onnx_io._exported), e.g. to read
    a training model. The large external weights are read straight into arrays, never
    through protobuf (`detached`; see `load_proto`)."""
    detached: dict = {}
    model = load_proto(path, detached=detached)
    from irkit.onnx_io._exported import from_exported
    try:
        return (convert or from_exported)(model, detached)
    except IrkitError as e:
        raise type(e)(f"{path}: {e}") from None
