"""ONNX external data, read by irkit itself: only files inside the model's folder.

onnx's own loader followed symlinks out of the model's folder up to 1.20.1 (CVE-2026-27489);
irkit does not depend on which onnx is installed. The rules:

1. a location is a relative path without `..`, not absolute, no drive;
2. it is opened once, by descriptor, from the model's folder held open: each step is an
   `openat` with O_NOFOLLOW (O_DIRECTORY for folders, O_NONBLOCK so a FIFO cannot hang), so a
   file that flips to a symlink between two looks cannot be followed; a symlink met on the way
   is resolved by irkit itself, inside the folder (a relative target; `..` never above the
   model's folder), at most 40 of them;
3. what was opened is checked on the descriptor: a regular file, reached through folders that
   are still, by device and inode, each inside the one before, up to the model's folder;
4. the bytes read are exactly those the tensor's dims and type need, read from that
   descriptor; each byte range of a file is read once: ranges that overlap
   another tensor's are refused, so the bytes materialized never exceed the files' sizes, and
   their sum is held to their own cap (IRKIT_MAX_EXTERNAL_BYTES, 32 GiB): since no byte is
   read twice, what they cost is what the files hold, so the cap is about the machine, not
   about amplification (the .onnx file itself has the 2 GiB model cap, protobuf's limit).
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from irkit.errors import ModelFileError, printable
from irkit.onnx_io._validate import check_tensor
from irkit.safe_io import LIMITS, limit

MAX_LINKS = 40  # as the kernel's own limit on symlinks in one lookup
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


def load_external_data(model: onnx.ModelProto, folder: str | os.PathLike,
                       detached: dict[str, np.ndarray | None] | None = None) -> None:
    """Read every external tensor of `model` from files inside `folder` into raw_data.

    With `detached` (an empty dict), each external initializer of the main graph that is a
    float tensor above DETACH_BYTES is read straight into a numpy array instead, never
    through protobuf: the tensor leaves the initializers and is declared as a graph input of
    its type and dims, and `detached` maps every initializer name, in the file's order, to
    its array (None: still in the model). `from_onnx(model, detached)` puts them back; a
    training file's reader (irkit.train.training_model) gives its algorithm the same arrays."""
    folder = os.fspath(folder)
    try:
        root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ModelFileError(f"cannot open the model's folder {folder} ({e.strerror})") from None
    reader = _Reader(root)
    try:
        _check_total(model)
        if detached is not None:
            _detach(model, reader, detached)
        for t, what in _tensors(model):
            if t.data_location == TensorProto.EXTERNAL:
                reader.load(t, what)
    finally:
        os.close(root)


# float initializers above this many bytes are read into numpy arrays by `load` (weights; a
# shape-like parameter that import folding reads is an integer or a few floats)
DETACH_BYTES = 1 << 16
DETACHED = "irkit: an initializer read into an array"  # the doc_string of its declaration
_DETACHABLE = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)


def _detach(model: onnx.ModelProto, reader: _Reader, detached: dict) -> None:
    g = model.graph
    gone, declared = [], {vi.name for vi in g.input}
    for i, t in enumerate(g.initializer):
        what = f"initializer {printable(t.name)}"
        if t.data_location != TensorProto.EXTERNAL or t.data_type not in _DETACHABLE \
                or check_tensor(t, what, external_ok=True) <= DETACH_BYTES:
            detached[t.name] = None
            continue
        detached[t.name] = reader.array(t, what)
        gone.append(i)
        if t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    for i in reversed(gone):
        del g.initializer[i]
    for vi in g.input:  # the declarations it adds, and those the file had (IR < 4 style)
        if detached.get(vi.name) is not None:
            vi.doc_string = DETACHED if vi.name not in declared else DETACHED + " (declared)"


def restore_detached(model: onnx.ModelProto, detached: dict[str, np.ndarray | None]) -> None:
    """Undo `_detach` in `model` for a runtime that is given the arrays apart (onnxruntime's
    add_external_initializers): each detached tensor is an initializer again, of its type and
    dims, whose data are external in a file that is never read; the declarations `_detach`
    added are dropped."""
    g = model.graph
    keep = [vi for vi in g.input if vi.doc_string != DETACHED]
    del g.input[:]
    g.input.extend(keep)
    for name, array in detached.items():
        if array is None:
            continue
        t = g.initializer.add(name=name, dims=array.shape,
                              data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype),
                              data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "irkit-in-memory-initializers"), ("offset", "0"),
                           ("length", str(array.nbytes))):
            t.external_data.add(key=key, value=value)


def _check_total(model: onnx.ModelProto) -> None:
    """The model cap on the external data's sum, from the tensors' dims, before any is read
    (the reader checks it again as it reads)."""
    total = 0
    for t, what in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            total += check_tensor(t, what, external_ok=True)
            _hold_to_cap(total, what)


def _hold_to_cap(total: int, what: str) -> None:
    """ModelFileError once a model's external data add up to more than their cap."""
    if total > limit("external"):
        raise ModelFileError(f"{what}: the external data add up to more than "
                             f"{limit('external')} bytes; raise {LIMITS['external'][0]} if you "
                             "trust the model")


class _Reader:
    """The external files of one model: opened inside the folder, each byte range once."""

    def __init__(self, root: int):
        self.root = root
        self.total = 0
        self.ranges: dict[tuple[int, int], list[tuple[int, int, str]]] = {}

    def load(self, t: TensorProto, what: str) -> None:
        if t.data_type == TensorProto.STRING:
            raise ModelFileError(f"{what}: strings cannot be stored as external data")
        nbytes = check_tensor(t, what, external_ok=True)
        buffer = self._fill(t, what, nbytes, lambda: bytearray(nbytes))
        t.raw_data = bytes(buffer)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT

    def array(self, t: TensorProto, what: str) -> np.ndarray:
        """The tensor's external data as a new numpy array of its dims (little-endian)."""
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
        nbytes = check_tensor(t, what, external_ok=True)
        return self._fill(t, what, nbytes, lambda: np.empty(tuple(t.dims), dtype))

    def _fill(self, t: TensorProto, what: str, nbytes: int, allocate):
        """The tensor's `nbytes` external bytes read into `allocate()` (a bytearray or an
        array of that size), made only once the caps, the location, the file's size and the
        byte range are checked (a tensor that claims more than its file has costs nothing)."""
        self.total += nbytes
        _hold_to_cap(self.total, what)
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        offset, length = _int(info, "offset", 0, what), _int(info, "length", nbytes, what)
        if length != nbytes:
            raise ModelFileError(f"{what}: external length {length} differs from the {nbytes} "
                                 "bytes its dims and type need; the model is damaged")
        fd = open_inside(self.root, location, what)
        try:
            st = os.fstat(fd)
            if offset + nbytes > st.st_size:
                raise ModelFileError(f"{what}: external data {printable(location)} has "
                                     f"{st.st_size} bytes, too few for {nbytes} bytes at "
                                     f"offset {offset}")
            self._claim((st.st_dev, st.st_ino), offset, nbytes, what, location)
            out = allocate()
            view = memoryview(out).cast("B") if isinstance(out, bytearray) else \
                memoryview(out.reshape(-1).view(np.uint8))
            done = _read_into(fd, offset, view)
        finally:
            os.close(fd)
        if done != nbytes:
            raise ModelFileError(f"{what}: external data {printable(location)} ended early")
        return out

    def _claim(self, file: tuple[int, int], offset: int, nbytes: int, what: str,
               location: str) -> None:
        """Refuse a byte range that overlaps one already read (data that would amplify)."""
        if nbytes == 0:
            return
        taken = self.ranges.setdefault(file, [])
        i = bisect.bisect(taken, (offset, offset + nbytes, what))
        for start, end, other in taken[max(i - 1, 0):i + 1]:
            if start < offset + nbytes and offset < end:
                raise ModelFileError(
                    f"{what}: its external data (bytes {offset} to {offset + nbytes} of "
                    f"{printable(location)}) overlap those of {other}; each byte of an "
                    "external file may belong to one tensor only, the model is damaged")
        taken.insert(i, (offset, offset + nbytes, what))


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


def _parts(location: str, what: str) -> list[str]:
    """The steps of a location that may name a file inside the folder (rule 1)."""
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) \
            or ".." in parts or ":" in parts[0] or "\0" in location:
        raise ModelFileError(f"{what}: external data location {printable(location)} must be "
                             "a relative path inside the model's folder (no '..', not absolute)")
    return [p for p in parts if p not in ("", ".")]


def _outside(what: str, location: str) -> ModelFileError:
    return ModelFileError(f"{what}: external data location {printable(location)} leads out "
                          "of the model's folder (through a symbolic link); irkit reads only "
                          "files inside it")


def open_inside(root: int, location: str, what: str) -> int:
    """A descriptor of the regular file `location` names inside the folder open as `root`
    (rules 2 and 3 of the module docstring); the caller closes it."""
    pending = _parts(location, what)[::-1]
    if not pending:
        raise ModelFileError(f"{what}: external data location {printable(location)} names "
                             "the model's folder, not a file")
    chain, links = [os.dup(root)], 0
    try:
        while True:
            part = pending.pop()
            if part == "..":  # only from a symlink's target: up the chain irkit walked
                if len(chain) == 1:
                    raise _outside(what, location)
                os.close(chain.pop())
                continue
            try:
                fd = os.open(part, _FLAGS | (os.O_DIRECTORY if pending else 0), dir_fd=chain[-1])
            except OSError as e:
                target = _link_target(chain[-1], part, e, what, location)
                links += 1
                if links > MAX_LINKS:
                    raise ModelFileError(f"{what}: external data location "
                                         f"{printable(location)} goes through more than "
                                         f"{MAX_LINKS} symbolic links") from None
                pending.extend([p for p in target.split("/") if p not in ("", ".")][::-1])
                if not pending:
                    raise _outside(what, location) from None
                continue
            if not pending:
                return _checked(fd, chain, what, location)
            chain.append(fd)
    finally:
        for fd in chain:
            os.close(fd)


def _link_target(folder: int, part: str, error: OSError, what: str, location: str) -> str:
    """The target of the symlink `part` that an O_NOFOLLOW open refused, if it stays relative;
    else the one-line error for `error`."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            if stat.S_ISLNK(os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode):
                target = os.readlink(part, dir_fd=folder)
                if os.path.isabs(target) or not target:
                    raise _outside(what, location)
                return target
        except OSError:
            pass  # it changed again: say what the open said
    raise ModelFileError(f"{what}: cannot read external data {printable(location)} "
                         f"({error.strerror})") from None


def _checked(fd: int, chain: list[int], what: str, location: str) -> int:
    """`fd` if it is a regular file reached through folders each still inside the one before."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelFileError(f"{what}: external data {printable(location)} is not a "
                                 "regular file")
        for parent, child in zip(chain, chain[1:]):
            up, there = os.stat("..", dir_fd=child), os.fstat(parent)
            if (up.st_dev, up.st_ino) != (there.st_dev, there.st_ino):
                raise _outside(what, location)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_into(fd: int, offset: int, into: memoryview) -> int:
    """Read the open file from `offset` into `into`: the bytes read (fewer if it shrank
    meanwhile). Read, not memory-mapped: a mapped file that another process truncates kills
    the reader with SIGBUS."""
    done = 0
    while done < len(into):
        n = os.preadv(fd, [into[done:done + (1 << 30)]], offset + done)
        if not n:
            break
        done += n
    return done
