"""Where this process stands in a data-parallel job, and how such a job starts and ends.

irkit trains data-parallel on MPI (`pip install "irkit-nn[distributed]"`: mpi4py and the MPICH
wheel, which brings `mpiexec`):

    mpiexec -n 4 irkit train RECIPE -o model.onnx      # any MPI launcher, any number of nodes
    irkit train RECIPE -o model.onnx --workers 4       # the same, on this machine

The world is read from the variables MPI launchers set (MPICH/Hydra: PMI_SIZE, PMI_RANK,
MPI_LOCALNRANKS; Open MPI: OMPI_COMM_WORLD_*), so a process started without a launcher never
imports mpi4py: one-process training stays exactly as it is. Only `comm()` imports it.

Ending: a worker that fails prints one line, `irkit: error: rank R: ...`, and aborts the whole
job (`abort`); the launcher then ends every other worker. A failure before MPI has started
cannot stop the other ranks (Hydra ends a job only for ranks inside MPI), so `irkit train`
starts MPI first. `irkit.cli.launch` runs mpiexec for `--workers N`.

A worker killed under a bare `mpiexec` (SIGKILL, the out-of-memory killer) cannot speak, and
Hydra SIGKILLs the others at once. So each worker of such a job starts a watchdog first
(`_start_watchdog`: a tiny Python in its own session, holding the worker's stderr, reading a
pipe from it): when the pipe ends without the worker having said it ends cleanly, the
watchdog prints `irkit: error: rank R: the worker died ...` if no other has spoken for the job
(a claim file named after the launcher's proxy, created exclusively). Under `--workers` the
launcher names the dead rank itself (with the signal), so no watchdog starts there.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from typing import NoReturn

from irkit.errors import RuntimeUnavailableError
from irkit.version import install_hint

INSTALL_HINT = install_hint("distributed")
READY_DIR = "IRKIT_LAUNCH_READY"   # the folder where `--workers` ranks mark that MPI started
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID")
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
# a failing rank other than 0 waits this long before it speaks: when every rank fails alike
# (bad input), rank 0's abort ends the others first and the job prints one line, not N
ABORT_GRACE_S = 1.0
# a rank that finds another gone waits this long: the launcher (which knows which rank died
# and how) normally ends it first, and the job's one line names the dead rank, not this one
LOST_GRACE_S = 5.0
# the rank that aborts waits this long after its line: the launcher forwards each rank's
# stderr through a proxy, and an abort at once tore the job down before the proxy had passed
# the line on (an empty stderr in 1 of 6 runs of the raising-worker test)
ABORT_FLUSH_S = 0.3
# the watchdog that spoke keeps the job's claim this long (the other ranks' watchdogs wake as
# Hydra kills them), then removes it
CLAIM_HOLD_S = 3.0
WATCHDOG = """
import os, sys, time
rank, claim = sys.argv[1], sys.argv[2]
said = b""
while True:
    chunk = os.read(0, 64)
    if not chunk:
        break
    said += chunk
if b"ok" in said:
    sys.exit(0)
if b"said" not in said:  # the worker died: the first watchdog of the job to claim speaks
    try:
        os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        sys.exit(0)
    os.write(2, ("irkit: error: rank " + rank + ": the worker died without a word (killed by a "
                 "signal, or out of memory); the job was stopped\\n").encode())
os.close(2)
time.sleep(float(sys.argv[3]))
try:
    os.unlink(claim)
except OSError:
    pass
"""


class MpiMissingError(RuntimeUnavailableError):
    """Started by an MPI launcher without a working mpi4py (the same on every rank)."""


class WorkerLostError(RuntimeUnavailableError):
    """A collective operation failed: another worker died, or the network between them."""


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw.isdigit():
            return int(raw)
    return default


def world_size() -> int:
    """How many processes the MPI launcher started (1 without one)."""
    return max(1, _env_int(SIZE_VARS, 1))


def rank() -> int:
    """This process's rank in the job (0 without a launcher)."""
    return _env_int(RANK_VARS, 0) if world_size() > 1 else 0


def is_root() -> bool:
    """Whether this process writes the job's files and prints its report (rank 0)."""
    return rank() == 0


def step_runtime(requested: str) -> str:
    """The step runner for a run that asked for runtime `requested`: 'mpi' (data-parallel on
    onnxruntime) under an MPI launcher, else `requested`."""
    if world_size() == 1:
        return requested
    if requested != "onnxruntime":
        raise RuntimeUnavailableError(f"runtime {requested!r} trains in one process; under "
                                      "an MPI launcher irkit trains on onnxruntime")
    return "mpi"


def threads_per_worker() -> int:
    """Intra-op threads for each worker: this machine's cores shared among the workers on it
    (1 each when there are as many workers as cores: more would only contend)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, _env_int(LOCAL_SIZE_VARS, 1)))


def comm():
    """The job's communicator (a copy of MPI.COMM_WORLD whose errors raise; importing mpi4py
    starts MPI); a one-line error saying what to install when mpi4py is missing or cannot
    load an MPI library."""
    size = world_size()
    _start_watchdog()
    try:
        from mpi4py import MPI
    except ImportError:
        raise MpiMissingError(f"this process is one of {size} started by an MPI launcher, but "
                              f"mpi4py is not installed: {INSTALL_HINT}") from None
    except Exception as e:  # mpi4py present, no MPI library it can load
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MpiMissingError(f"mpi4py cannot start MPI ({first}): {INSTALL_HINT}") from None
    world = MPI.COMM_WORLD
    if world.Get_size() != size:
        raise RuntimeUnavailableError(
            f"the launcher started {size} processes but MPI sees {world.Get_size()}: mpi4py "
            "uses another MPI library than this mpiexec; use the mpiexec installed with it")
    global _comm
    if _comm is None:  # errors as exceptions (the CLI reports them), never MPI's own abort
        _comm = world.Dup()
        _comm.Set_errhandler(MPI.ERRORS_RETURN)
        _mark_started()
    return _comm


def _mark_started() -> None:
    """Tell `irkit train --workers` that this rank has started MPI (its launch time limit)."""
    folder = os.environ.get(READY_DIR)
    if folder:
        try:
            with open(os.path.join(folder, f"rank-{rank()}"), "x"):
                pass
        except OSError:  # the launcher's folder is gone (it ended): nothing to tell
            pass


_comm = None
_watchdog: int | None = None  # the write end of the pipe to this worker's watchdog


def _claim_path() -> str:
    """The job's claim file: named after the launcher's proxy (every local rank's parent),
    with its start time, so a reused pid names another file."""
    ppid = os.getppid()
    try:
        start = open(f"/proc/{ppid}/stat").read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "0"
    return os.path.join(tempfile.gettempdir(), f"irkit-job-{ppid}-{start}.said")


def _start_watchdog() -> None:
    """Start this worker's watchdog (module doc): under a bare MPI launcher only, before MPI
    starts (no fork of an MPI process), once."""
    global _watchdog
    if _watchdog is not None or READY_DIR in os.environ or world_size() == 1:
        return
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "MPI_", "PMIX_", "HYDRA_"))}
    try:
        subprocess.Popen([sys.executable, "-S", "-c", WATCHDOG, str(rank()), _claim_path(),
                          str(CLAIM_HOLD_S)], stdin=read, stdout=subprocess.DEVNULL, env=env,
                         start_new_session=True, close_fds=True)
    except OSError:  # no watchdog: the job still runs, a killed worker is not named
        os.close(write)
        return
    finally:
        os.close(read)
    _watchdog = write
    atexit.register(_tell_watchdog, b"ok")


def _tell_watchdog(message: bytes) -> None:
    """b"ok": this worker ends cleanly; b"said": it has said the job's one line (and holds
    the claim, which its watchdog removes)."""
    global _watchdog
    if _watchdog is None:
        return
    try:
        os.write(_watchdog, message)
        os.close(_watchdog)
    except OSError:
        pass
    _watchdog = None


def _claim() -> None:
    """Take the job's claim before saying its one line, so that no watchdog adds another."""
    if _watchdog is None:
        return
    try:
        os.close(os.open(_claim_path(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        _tell_watchdog(b"said")
    except OSError:  # another rank spoke first
        _tell_watchdog(b"ok")


def abort(message: str, code: int = 1, wait: float | None = None) -> NoReturn:
    """End the whole job: print `irkit: error: rank R: message` and abort every worker.
    Waits `wait` seconds first (default: none on rank 0, ABORT_GRACE_S elsewhere: when every
    rank fails alike, rank 0's abort ends the others before they speak)."""
    r = rank()
    time.sleep(wait if wait is not None else (0.0 if r == 0 else ABORT_GRACE_S))
    _claim()
    sys.stdout.flush()
    sys.stderr.write(f"irkit: error: rank {r}: {message}\n")
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        time.sleep(ABORT_FLUSH_S)
        # MPI_Abort prints a notice of its own; the line above is the job's one line
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        mpi.COMM_WORLD.Abort(code)
    os._exit(code)  # MPI not started: nothing here can stop the other ranks


def fail_job(error: BaseException | None, message: str, code: int = 1) -> NoReturn:
    """`abort` for the CLI's error handler: a lost worker is reported after LOST_GRACE_S (the
    launcher usually ends this process first and names the rank that died); a missing mpi4py
    (the same on every rank) by rank 0 alone."""
    if isinstance(error, MpiMissingError) and rank() != 0:
        _tell_watchdog(b"ok")
        os._exit(code)  # without MPI no rank can stop the others: rank 0 alone says why
    abort(message, code, LOST_GRACE_S if isinstance(error, WorkerLostError) else None)
