"""Where this process stands in a data-parallel job, and how such a job starts and ends.

irkit trains data-parallel on MPI (`pip install "irkit[distributed]"`: mpi4py and the MPICH
wheel, which brings `mpiexec`):

    mpiexec -n 4 irkit train RECIPE -o model.onnx      # any MPI launcher, any number of nodes
    irkit train RECIPE -o model.onnx --workers 4       # the same, on this machine

The world is read from the variables MPI launchers set (MPICH/Hydra: PMI_SIZE, PMI_RANK,
MPI_LOCALNRANKS; Open MPI: OMPI_COMM_WORLD_*), so a process started without a launcher never
imports mpi4py: one-process training stays exactly as it is. Only `comm()` imports it.

Ending: a worker that fails prints one line, `irkit: error: rank R: ...`, and aborts the whole
job (`abort`); the launcher then ends every other worker. `launch` runs mpiexec for
`--workers N` and turns a worker that died without a word (killed) into one such line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from typing import NoReturn

from irkit.errors import RuntimeUnavailableError

INSTALL_HINT = 'pip install "irkit[distributed]"'
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID")
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
# a failing rank other than 0 waits this long before it speaks: when every rank fails alike
# (bad input), rank 0's abort ends the others first and the job prints one line, not N
ABORT_GRACE_S = 1.0
# a rank that finds another gone waits this long: the launcher (which knows which rank died
# and how) normally ends it first, and the job's one line names the dead rank, not this one
LOST_GRACE_S = 5.0


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
    return _comm


_comm = None


def abort(message: str, code: int = 1, wait: float | None = None) -> NoReturn:
    """End the whole job: print `irkit: error: rank R: message` and abort every worker.
    Waits `wait` seconds first (default: none on rank 0, ABORT_GRACE_S elsewhere), so that a
    failure that is not this rank's own is reported by the launcher, which knows the rank."""
    r = rank()
    time.sleep(wait if wait is not None else (0.0 if r == 0 else ABORT_GRACE_S))
    sys.stdout.flush()
    sys.stderr.write(f"irkit: error: rank {r}: {message}\n")
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        # MPI_Abort prints a notice of its own; the line above is the job's one line
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        mpi.COMM_WORLD.Abort(code)
    os._exit(code)  # no MPI yet: the launcher ends the others when one exits non-zero


def fail_job(error: BaseException, message: str, code: int = 1) -> NoReturn:
    """`abort` for the CLI's error handler: a lost worker is reported after LOST_GRACE_S (the
    launcher usually ends this process first and names the rank that died); a missing mpi4py
    (the same on every rank) by rank 0 alone."""
    if isinstance(error, MpiMissingError) and rank() != 0:
        os._exit(code)  # without MPI no rank can stop the others: rank 0 alone says why
    abort(message, code, LOST_GRACE_S if isinstance(error, WorkerLostError) else None)


# ---- --workers: mpiexec on this machine -------------------------------------------------------
def find_mpiexec() -> str:
    """The mpiexec beside this Python (the MPICH wheel's), else the first on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None or importlib.util.find_spec("mpi4py") is None:
        raise RuntimeUnavailableError(f"--workers needs mpiexec and mpi4py: {INSTALL_HINT}")
    return found


def launch(args: list[str], workers: int) -> int:
    """Run `irkit ARGS` in `workers` processes under mpiexec on this machine; returns the exit
    code. Worker output passes through; mpiexec's own banners are replaced by one line naming
    the rank that died, when no worker said why."""
    if world_size() > 1:
        raise RuntimeUnavailableError("--workers starts mpiexec itself; under mpiexec leave "
                                      "it out (mpiexec -n sets the number of workers)")
    command = [find_mpiexec(), "-print-all-exitcodes", "-n", str(workers), sys.executable,
               "-m", "irkit.cli", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    relay = _Relay()
    try:
        relay.run({proc.stdout.fileno(): sys.stdout, proc.stderr.fileno(): sys.stderr})
        code = proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        return 130
    if code != 0 and not relay.worker_spoke:
        sys.stderr.write(f"irkit: error: {relay.culprit(code)}\n")
    return code


# the lines Hydra (MPICH's mpiexec) prints around a failed job
_HYDRA_NOISE = re.compile(r"^(=|\[mpiexec@|\[proxy:|YOUR APPLICATION TERMINATED|This typically "
                          r"refers|Please see the FAQ|Abort\(\d+\) on node|"
                          r"\w+\(\d+\)\.*: )")  # the last: MPICH's error stacks
_EXIT_CODES = re.compile(r"Exit codes: \[[^\]]*\] ([\d,\s]+)")
_EXIT_STRING = re.compile(r"EXIT STRING: (.+)")


class _Relay:
    """Copies the workers' stdout and stderr through, line by line (\\r ends a line too:
    progress bars), minus Hydra's banners, from which it keeps the per-rank exit codes."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.exit_string = ""
        self.worker_spoke = False   # a worker printed its own `irkit: error:` line

    def run(self, pipes: dict) -> None:
        """Relay until every pipe (fd -> text stream to copy to) is closed."""
        import selectors
        pending = dict.fromkeys(pipes, b"")
        with selectors.DefaultSelector() as sel:
            for fd in pipes:
                sel.register(fd, selectors.EVENT_READ)
            while pending:
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                        chunk = pending.pop(key.fd) + b"\n"  # a last line without newline
                    else:
                        chunk, pending[key.fd] = self._lines(pending[key.fd] + chunk)
                    self._copy(chunk, pipes[key.fd])

    @staticmethod
    def _lines(data: bytes) -> tuple[bytes, bytes]:
        """(the complete lines of data, the rest)."""
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        return data[:cut], data[cut:]

    def _copy(self, data: bytes, stream) -> None:
        parts = re.split(rb"(\r|\n)", data)
        for line, end in zip(parts[0::2], parts[1::2]):
            text = line.decode("utf-8", "replace")
            codes, why = _EXIT_CODES.search(text), _EXIT_STRING.search(text)
            self.codes += [int(c) for c in re.findall(r"\d+", codes.group(1))] if codes else []
            self.exit_string = why.group(1).strip() if why else self.exit_string
            if _HYDRA_NOISE.match(text) or not line.strip():
                continue
            self.worker_spoke |= text.startswith("irkit: error:")
            stream.buffer.write(line + end)
        stream.buffer.flush()

    def culprit(self, code: int) -> str:
        """'rank R: ...' for the first worker that failed, from mpiexec's exit codes."""
        for r, c in enumerate(self.codes):
            if c != 0:
                return f"rank {r}: the worker died ({self.exit_string or f'exit code {c}'})"
        return f"a worker failed (mpiexec exit code {code})"
