"""ONNX external data, read by irkit itself: only files inside the model's folder.

onnx's own loader followed symlinks out of the model's folder up to 1.20.1 (CVE-2026-27489);
irkit does not depend on which onnx is installed. A location must be a relative path without
`..`, its real path (symlinks resolved) must lie inside the model's real folder, the file must
be regular, and the bytes read are exactly those the tensor's dims and type need, within the
size caps.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import onnx
from onnx import TensorProto

from irkit.errors import ModelFileError, printable
from irkit.onnx_io._validate import check_tensor
from irkit.safe_io import LIMITS, limit


def load_external_data(model: onnx.ModelProto, folder: str | os.PathLike) -> None:
    """Read every external tensor of `model` from files inside `folder` into raw_data."""
    folder = os.path.realpath(os.fspath(folder))
    total = 0
    for t, what in _tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        nbytes = check_tensor(t, what, external_ok=True)
        if t.data_type == TensorProto.STRING:
            raise ModelFileError(f"{what}: strings cannot be stored as external data")
        total += nbytes
        if total > limit("model"):
            raise ModelFileError(f"{what}: the external data add up to more than "
                                 f"{limit('model')} bytes; raise {LIMITS['model'][0]} if you "
                                 "trust the model")
        info = {e.key: e.value for e in t.external_data}
        path = _inside(folder, info.get("location", ""), what)
        offset, length = _int(info, "offset", 0, what), _int(info, "length", nbytes, what)
        if length != nbytes:
            raise ModelFileError(f"{what}: external length {length} differs from the {nbytes} "
                                 "bytes its dims and type need; the model is damaged")
        t.raw_data = _read(path, offset, nbytes, what)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[TensorProto, str]]:
    graphs = [model.graph, *[g for info in model.training_info
                             for g in (info.initialization, info.algorithm)]]
    while graphs:
        g = graphs.pop()
        for t in g.initializer:
            yield t, f"initializer {printable(t.name)}"
        for n in g.node:
            for a in n.attribute:
                what = f"node {printable(n.name or n.op_type)} attribute {printable(a.name)}"
                if a.HasField("t"):
                    yield a.t, what
                yield from ((t, what) for t in a.tensors)
                graphs.extend([a.g] if a.HasField("g") else [])
                graphs.extend(a.graphs)


def _int(info: dict[str, str], key: str, default: int, what: str) -> int:
    try:
        value = int(info.get(key, default))
    except ValueError:
        raise ModelFileError(f"{what}: external data {key} {printable(info[key])} is not a "
                             "number") from None
    if value < 0:
        raise ModelFileError(f"{what}: external data {key} {value} is negative")
    return value


def _inside(folder: str, location: str, what: str) -> str:
    """The real path of `location` if it is a relative path that stays inside `folder`."""
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) \
            or ".." in parts or ":" in parts[0]:
        raise ModelFileError(f"{what}: external data location {printable(location)} must be "
                             "a relative path inside the model's folder (no '..', not absolute)")
    real = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, real]) != folder:
        raise ModelFileError(f"{what}: external data location {printable(location)} leads out "
                             "of the model's folder (through a symbolic link); irkit reads "
                             "only files inside it")
    return real


def _read(path: str, offset: int, nbytes: int, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ModelFileError(f"{what}: cannot read external data {path} ({e.strerror})") \
            from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{what}: external data {path} is not a regular file")
        if offset + nbytes > st.st_size:
            raise ModelFileError(f"{what}: external data {path} has {st.st_size} bytes, too "
                                 f"few for {nbytes} bytes at offset {offset}")
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise ModelFileError(f"{what}: external data {path} ended early")
    return data
