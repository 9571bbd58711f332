"""The external data files an ONNX file names, read without loading it (and without onnx).

Before a command writes anything, its outputs are checked against every file it reads
(`safe_io.check_outputs`), and a model's external data are files it reads too: `-o` (or the
PATH.data beside it) must not be the data of the model being loaded, which the run would
overwrite. This module finds those files from the model's protobuf wire format, through
mmap: only the fields on the way to a TensorProto's `external_data` entries are touched; raw
data and everything else are skipped by their length, so a 2 GiB model costs a few pages.

The walk follows ModelProto -> graph, training_info (its two graphs), functions -> nodes ->
attributes (tensors, graphs, sparse tensors) -> TensorProto.external_data -> "location". A
file that is not a model, or is damaged, gives what was found before the damage: loading it
reports its own error later.
"""

from __future__ import annotations

import mmap
import os

from irkit.onnx_io._read import varint

# message -> {field number: the message that field holds}, for the fields on the way
_FIELDS = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse",
                  23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
MAX_DEPTH = 64          # nested graphs deeper than this are not followed
MAX_FIELDS = 1 << 22    # fields visited at most (a hostile file of tiny fields stays cheap)


def external_data_files(path: str | os.PathLike) -> list[str]:
    """The paths (the model's folder joined with each location, normalized) of the external
    data the ONNX file at `path` names, each once, in the order first named; [] for a file
    that cannot be read or names none."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return []
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                found: list[str] = []
                try:
                    _walk(buf, 0, len(buf), "model", 0, found, [0])
                except (IndexError, ValueError):  # damaged: what was found before it
                    pass
    except (OSError, ValueError):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    files = [os.path.normpath(os.path.join(folder, loc)) for loc in found
             if loc and not os.path.isabs(loc)]
    return list(dict.fromkeys(files))


def _walk(buf, i: int, end: int, message: str, depth: int, found: list[str],
          visited: list[int]) -> None:
    """Visit the fields of `message` between i and end, collecting locations."""
    fields, key = _FIELDS.get(message, {}), None
    while i < end:
        visited[0] += 1
        if visited[0] > MAX_FIELDS:
            raise ValueError("too many fields")
        tag, i = varint(buf, i)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            _, i = varint(buf, i)
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        elif kind == 2:
            size, i = varint(buf, i)
            if i + size > end:
                raise ValueError("field past its message")
            if message == "entry" and number in (1, 2):
                text = bytes(buf[i:i + size]).decode("utf-8", "replace")
                if number == 1:
                    key = text
                elif key == "location":
                    found.append(text)
            elif number in fields and depth < MAX_DEPTH:
                _walk(buf, i, i + size, fields[number], depth + 1, found, visited)
            i += size
        else:
            raise ValueError(f"wire type {kind}")


def files_read(inputs: list[str | None]) -> dict[str, str]:
    """{external data file: the input model that names it} for the inputs that are ONNX
    files (a name ending in .onnx), for `safe_io.check_outputs(..., reads=...)`."""
    reads: dict[str, str] = {}
    for given in inputs:
        if given and os.fspath(given).lower().endswith(".onnx") and os.path.isfile(given):
            for file in external_data_files(given):
                reads.setdefault(file, os.fspath(given))
    return reads


def check_model_outputs(outputs: dict[str, str | None], inputs: list[str | None],
                        reads: dict[str, str] | None = None) -> None:
    """`safe_io.check_outputs` with the input models' external data (and `reads`, such
    files found before: `Model.files_read`) among the files read: an output, or the PATH.data
    beside a model output, that is one of them is refused."""
    from irkit.safe_io import check_outputs
    given = [os.fspath(p) for p in inputs if p]
    check_outputs(outputs, given, {**(reads or {}), **files_read(given)})
