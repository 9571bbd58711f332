"""Reading files from strangers and writing files users care about: the one place for the rules.

Reading: only regular files (a FIFO would hang, a device would never end), with a size cap
checked before reading (`read_capped`). Caps have defaults and an environment override each:

    IRKIT_MAX_MODEL_BYTES    ONNX models and training files     default 2 GiB
    IRKIT_MAX_EXTERNAL_BYTES a model's external data, in sum (each byte read once, so they
                             cost what the files hold)          default 32 GiB
    IRKIT_MAX_DATA_BYTES     datasets (also their decompressed size)  default 1 GiB
    IRKIT_MAX_RECIPE_BYTES   recipes (TOML)                      default 1 MiB
    IRKIT_MAX_ELEMENTS       elements of one tensor built from a file  default 2**28
    IRKIT_MAX_TENSOR_BYTES   bytes irkit makes rather than reads: a recipe's weights
                             together; before onnxruntime runs a model from a file, one value
                             of static shape, or its constants folded together (16 times the
                             model's stored tensors when that is more)  default 128 MiB
    IRKIT_MAX_NODES          nodes of a model's graph (an ONNX file's, a recipe's)
                             default 50,000 (onnxruntime's session setup grows faster than
                             linearly in nodes: a chain of 40,000 Adds takes it 88 s)
    IRKIT_MAX_GZIP_RATIO     how many times its size a compressed file or member may grow
                             beyond 16 MiB (gzip, the deflate/bzip2/lzma members of an .npz)
                             default 100

Decompressing (`read_decompressed`, the one guard every container reader uses: .csv.gz,
.npz members, IDX .gz): the stream is read in chunks and counted, and refused as soon as it
passes the data cap or the ratio rule (whichever is lower); a declared size (a zip member's)
is checked against the same caps before anything is decompressed.

Writing (`write_atomic`): a temporary file created exclusively beside the target (never
through a symlink), fsynced, then renamed over the target; a target that exists but is not a
regular file (a device, a FIFO, a directory) is refused; on any failure the temporary file is
removed and the target is untouched. `check_outputs` checks every output before work starts.
A temporary file is named `.TARGET.PID-XXXXXXXX.tmp` (PID: the writing process): a later
write of TARGET removes those whose process is gone (a SIGKILL's leftovers), never those of a
run still writing. SIGINT and SIGTERM wait while temporary files are created and renamed, so
a signal leaves both files of a pair new or both old, and no temporary file behind.
`lock_folder` gives one process a folder (a checkpoint folder) until it lets go or dies.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import tempfile

from irkit.errors import IrkitError

LIMITS = {
    "model": ("IRKIT_MAX_MODEL_BYTES", 2 << 30),
    "external": ("IRKIT_MAX_EXTERNAL_BYTES", 32 << 30),  # a model's external data, in sum
    "data": ("IRKIT_MAX_DATA_BYTES", 1 << 30),
    "recipe": ("IRKIT_MAX_RECIPE_BYTES", 1 << 20),
    "elements": ("IRKIT_MAX_ELEMENTS", 1 << 28),
    "tensor_bytes": ("IRKIT_MAX_TENSOR_BYTES", 1 << 27),
    "nodes": ("IRKIT_MAX_NODES", 50_000),
    "gzip_ratio": ("IRKIT_MAX_GZIP_RATIO", 100),  # decompressed / compressed, above 16 MiB
}
# a compressed stream may always grow to this size; beyond it, to IRKIT_MAX_GZIP_RATIO times
# its own size (real datasets compress 3-20x; a 65 KB bomb of 64 MB of CSV took gigabytes)
DECOMPRESSED_FLOOR = 16 << 20
_CHUNK = 1 << 20


class FileSafetyError(IrkitError):
    """A file irkit refuses to read or write (not a regular file, too large, same as an input)."""


def limit(kind: str) -> int:
    """The cap for `kind` (model, data, recipe, elements): the environment's, else the default."""
    env, default = LIMITS[kind]
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FileSafetyError(f"{env}={raw!r} is not an integer; set it to a count") from None
    if value <= 0:
        raise FileSafetyError(f"{env}={raw!r} must be > 0")
    return value


def check_readable(path: str | os.PathLike, kind: str, what: str = "file") -> int:
    """The size of `path` if it is a regular file within the `kind` cap; else a one-line error."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileSafetyError(f"{path}: no such file") from None
    except OSError as e:
        raise FileSafetyError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileSafetyError(f"{path}: not a regular file; give the path of a {what}")
    cap = limit(kind)
    if st.st_size > cap:
        env = LIMITS[kind][0]
        raise FileSafetyError(f"{path}: the {what} has {st.st_size} bytes, over the limit of "
                              f"{cap}; raise {env} if you trust it")
    return st.st_size


def read_capped(path: str | os.PathLike, kind: str, what: str = "file") -> bytes:
    """The bytes of a regular file within the `kind` size cap (checked before reading)."""
    check_readable(path, kind, what)
    cap = limit(kind)
    # O_NONBLOCK: a FIFO swapped in after the check must not hang the open
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileSafetyError(f"{path}: not a regular file; give the path of a {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            # read(n) allocates n bytes up front: ask for the file's size (+1 to see growth),
            # never the cap itself (2 GiB for a 1 kB model)
            data = f.read(min(cap, st.st_size) + 1)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise FileSafetyError(f"{path}: the {what} is over the limit of {cap} bytes; raise "
                              f"{LIMITS[kind][0]} if you trust it")
    return data


def check_element_count(count: int, what: str) -> None:
    """Refuse to allocate a tensor of more than the elements cap."""
    cap = limit("elements")
    if count > cap:
        raise FileSafetyError(f"{what} would have {count} elements, over the limit of {cap}; "
                              f"raise IRKIT_MAX_ELEMENTS if you trust the file")


def check_node_count(count: int, what: str) -> None:
    """Refuse a graph of more than the nodes cap (before it is converted or compiled)."""
    cap = limit("nodes")
    if count > cap:
        raise FileSafetyError(f"{what} has {count} nodes, over the limit of {cap} (onnxruntime "
                              "takes minutes to set up graphs that large); raise "
                              "IRKIT_MAX_NODES if you have the time")


def decompressed_cap(compressed: int) -> tuple[int, str]:
    """The most bytes `compressed` bytes may decompress to, and the setting that decides it."""
    by_ratio = max(limit("gzip_ratio") * compressed, DECOMPRESSED_FLOOR)
    if by_ratio < limit("data"):
        return by_ratio, "gzip_ratio"
    return limit("data"), "data"


def _too_big(name: str, size: int | str, compressed: int) -> FileSafetyError:
    cap, rule = decompressed_cap(compressed)
    if rule == "gzip_ratio":
        return FileSafetyError(f"{name}: decompresses to {size} bytes, over {cap} "
                               f"({limit('gzip_ratio')} times its size of {compressed} bytes; a "
                               "compression bomb?); raise IRKIT_MAX_GZIP_RATIO if you trust it")
    return FileSafetyError(f"{name}: decompresses to {size} bytes, over the limit of {cap} for "
                           "a dataset; raise IRKIT_MAX_DATA_BYTES if you trust it")


def check_decompressed_size(size: int, compressed: int, name: str) -> None:
    """Refuse a declared decompressed size over the caps before decompressing anything."""
    if size > decompressed_cap(compressed)[0]:
        raise _too_big(name, size, compressed)


def read_decompressed(stream, compressed: int, name: str,
                      declared: int | None = None) -> bytearray:
    """All bytes of a decompressing `stream` (a GzipFile, a zip member) that came from
    `compressed` bytes, read in chunks and refused once past the caps: at most cap + 1 MiB is
    ever held. `declared`: the size the container announces, checked first and then held to
    (a member that decompresses to more or fewer bytes is damaged)."""
    cap = decompressed_cap(compressed)[0]
    if declared is not None:
        check_decompressed_size(declared, compressed, name)
        cap = declared
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(_CHUNK, cap + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            if declared is not None:
                raise FileSafetyError(f"{name}: decompresses to more than the {declared} bytes "
                                      "it declares; the file is damaged")
            raise _too_big(name, f"more than {cap}", compressed)
        chunks.append(chunk)
    if declared is not None and total != declared:
        raise FileSafetyError(f"{name}: decompresses to {total} bytes, not the {declared} it "
                              "declares; the file is damaged")
    return bytearray().join(chunks)  # writable: arrays viewing it need no copy


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path: str | os.PathLike, option: str = "-o") -> str:
    """The path, if it can be written: its folder exists and the target, if any, is a regular
    file (never a directory, device, FIFO or symlink). Checked before any work starts."""
    path = os.fspath(path)
    if not path:
        raise FileSafetyError(f"{option}: an empty path; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileSafetyError(f"{path}: the directory {directory} does not exist; create it "
                              "first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise FileSafetyError(f"{path}: the directory {directory} is not writable")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        raise FileSafetyError(f"{path}: is a symbolic link; irkit does not write through links, "
                              "give the real path")
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise FileSafetyError(f"{path}: {kind}; {option} needs a file path")
    return path


def data_file(path: str | os.PathLike) -> str:
    """The external data file irkit writes beside a model at `path` when its weights are
    large (onnx_io.file_parts): PATH.data."""
    return os.fspath(path) + ".data"


def check_outputs(outputs: dict[str, str | None], inputs: list[str] = (),
                  reads: dict[str, str] | None = None) -> None:
    """Check every named output (option -> path) up front: writable, none equal to an input
    or to another output. A model output may also write its weights to `data_file(path)`
    (checked for every output): that file, too, must be no input. `reads` maps the other
    files the run reads to what reads them (the external data of an input model:
    onnx_io.files_read): no output, nor an output's data file, may be one of them."""
    named = [(opt, os.fspath(p)) for opt, p in outputs.items() if p is not None]
    for opt, path in named:
        check_output(path, opt)
        for given in inputs:
            if given and os.path.exists(given) and _same_file(path, given):
                raise FileSafetyError(f"{opt} {path} is the input {given}; writing it would "
                                      "destroy the input, choose another name")
        _check_read_files(opt, path, [g for g in inputs if g], reads or {})
    for i, (opt_a, a) in enumerate(named):
        for opt_b, b in named[i + 1:]:
            if _same_file(a, b):
                raise FileSafetyError(f"{opt_a} and {opt_b} name the same file {a}; give each "
                                      "its own name")


def _check_read_files(opt: str, path: str, inputs: list[str], reads: dict[str, str]) -> None:
    """FileSafetyError if the output, or the data file beside it, is a file the run reads."""
    data = data_file(path)  # a model's weights may go there (any output: one rule, no guess)
    for read, owner in reads.items():
        if os.path.exists(read) and _same_file(path, read):
            raise FileSafetyError(f"{opt} {path} is the external data of the input {owner}, "
                                  "which this run reads; choose another name")
    if not os.path.exists(data):
        return
    for given in inputs:
        if os.path.exists(given) and _same_file(data, given):
            raise FileSafetyError(f"{opt} {path} would write its weights to {data}, which is "
                                  f"the input {given}; choose another {opt} name")
    for read, owner in reads.items():
        if os.path.exists(read) and _same_file(data, read):
            raise FileSafetyError(f"{opt} {path} would write its weights to {data}, the "
                                  f"external data of the input {owner} that this run reads; "
                                  f"choose another {opt} name")


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a failure or a kill leaves the old file or the new one,
    never half of one (see the module docstring)."""
    write_all_atomic([(path, data)])


def write_all_atomic(files: list[tuple[str | os.PathLike, bytes | list]]) -> None:
    """Write several files that belong together (a model and its training file; a file's
    data may be a list of bytes-like chunks, written one after another): every one is
    written and fsynced to its temporary file first, then all are renamed into place back to
    back with SIGINT and SIGTERM held, so a signal leaves all new or all old (a SIGKILL could
    still land in the microseconds between two renames)."""
    temps: list[tuple[str, str]] = []
    current = ""
    try:
        for path, data in files:
            current = check_output(path)
            remove_stale_temporaries(current)
            _write_temp(current, data, temps)
        with signals_held():
            for _, current in temps:
                check_output(current)  # the target may have changed kind while we wrote
            for tmp, current in temps:
                os.replace(tmp, current)
    except BaseException as e:
        _remove([tmp for tmp, _ in temps])
        _reraise_for(current, e)
    for directory in {os.path.dirname(os.path.abspath(p)) for _, p in temps}:
        _fsync_dir(directory)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM wait until the block ends, then reach their usual handlers. (The
    Python-level handlers are swapped, not only the signal mask: a signal that arrived just
    before the block would otherwise have its handler run inside it.)"""
    held, pending = (signal.SIGINT, signal.SIGTERM), []
    try:
        before = {s: signal.signal(s, lambda signum, frame: pending.append(signum))
                  for s in held}
    except ValueError:  # not the main thread: Python runs handlers in the main thread only
        before = None
    try:
        yield
    finally:
        if before is not None:
            for s, handler in before.items():
                signal.signal(s, handler)
            for s in dict.fromkeys(pending):
                signal.raise_signal(s)


def _temp_pattern(path: str) -> re.Pattern:
    """write_atomic's temporary names for `path` (group 1: the writer's process id)."""
    return re.compile(re.escape(f".{os.path.basename(path)}.") + r"(\d+)-[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files of `path` (irkit's names only, beside it, regular files of
    this user) whose writing process is gone; returns their paths."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern, removed = _temp_pattern(path), []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None or _alive(int(found.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid: not ours to judge
    return True


def _write_temp(path: str, data: bytes | list, temps: list[tuple[str, str]]) -> str:
    """`data` in a new temporary file beside `path`, fsynced, added to `temps` as (temporary,
    path) the moment it exists (so that whoever catches a signal can remove it); its name."""
    directory = os.path.dirname(os.path.abspath(path))
    try:  # O_EXCL|O_CREAT with a random name: never an existing file (a user's OUT.tmp) or link
        with signals_held():
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-",
                                       suffix=".tmp", dir=directory)
            temps.append((tmp, path))
    except OSError as e:
        raise _write_error(path, e) from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, _mode_for(path))
        for chunk in (data if isinstance(data, list) else [data]):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return tmp


class FolderLock:
    """`lock_folder`'s hold on a folder: `release()` (or the process's end) lets go."""

    def __init__(self, path: str, file) -> None:
        self.path, self._file = path, file

    def release(self) -> None:
        """Remove the lock file (still holding the lock, so no one takes a removed one), then
        let go."""
        if self._file is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._file.close()
        self._file = None


def lock_folder(directory: str, what: str) -> FolderLock:
    """Hold `directory` (its lock file `.irkit.lock`, flock: let go on release or when the
    process dies, SIGKILL included); a one-line FileSafetyError naming the process that holds
    it otherwise."""
    import fcntl
    path = os.path.join(directory, ".irkit.lock")
    for _ in range(100):  # retried only when the holder removed the file as we took it
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise FileSafetyError(f"{path}: cannot create the lock file ({e.strerror})") \
                from None
        file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = file.read(32).strip() or "unknown"
            file.close()
            raise FileSafetyError(f"{what} {directory}: in use by {_who(holder)}; wait for "
                                  "it to end or give another folder") from None
        if _same_inode(fd, path):
            file.truncate(0)
            file.write(str(os.getpid()))
            file.flush()
            return FolderLock(path, file)
        file.close()
    raise FileSafetyError(f"{what} {directory}: its lock file keeps changing; give another "
                          "folder")


def _who(holder: str) -> str:
    if holder == str(os.getpid()):
        return "an earlier run in this process (release it first)"
    return f"another irkit run (pid {holder})"


def _same_inode(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _reraise_for(path: str, e: BaseException) -> None:
    """Re-raise `e`; an OSError as a one-line FileSafetyError naming `path`."""
    if isinstance(e, OSError) and not isinstance(e, FileSafetyError):
        raise _write_error(path, e) from None
    raise e


def _write_error(path: str, e: OSError) -> FileSafetyError:
    return FileSafetyError(f"{path}: could not write ({e.strerror or e}); nothing was changed")


def _mode_for(path: str) -> int:
    """The permissions of the file being replaced, else those of a new file (0666 less umask);
    mkstemp's own 0600 would hide a model from the user's group."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
