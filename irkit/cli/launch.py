"""`irkit train --workers N`: mpiexec on this machine, its output relayed.

Worker output passes through; Hydra's (MPICH's mpiexec) banners are dropped, and when the job
fails without a worker saying why (a worker was killed), one line names the rank that died,
read from mpiexec's per-rank exit codes (`-print-all-exitcodes`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from irkit.distributed import INSTALL_HINT, READY_DIR, world_size
from irkit.errors import RuntimeUnavailableError


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
    the rank that died, when no worker said why. The workers must start within
    IRKIT_LAUNCH_TIMEOUT seconds (default 60); a signal or error here ends the whole job."""
    if world_size() > 1:
        raise RuntimeUnavailableError("--workers starts mpiexec itself; under mpiexec leave "
                                      "it out (mpiexec -n sets the number of workers)")
    check_worker_count(workers)
    command = [find_mpiexec(), "-print-all-exitcodes", "-n", str(workers), sys.executable,
               "-m", "irkit.cli", *args]
    with tempfile.TemporaryDirectory(prefix="irkit-launch-") as ready:
        env = {**os.environ, READY_DIR: ready}
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, preexec_fn=_end_with_parent)
        relay = _Relay()
        try:
            relay.run({proc.stdout.fileno(): sys.stdout, proc.stderr.fileno(): sys.stderr},
                      _launch_watch(ready, workers))
            code = proc.wait()
        except BaseException:  # a signal, a launch past its time: the job ends with us
            _stop(proc)
            raise
    if code != 0 and not relay.worker_spoke:
        sys.stderr.write(f"irkit: error: {relay.culprit(code)}\n")
    return code


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_worker_count(workers: int) -> None:
    """At most one worker per usable core (at least 2, so that a one-core machine can still
    try a job): a data-parallel job with more only contends, and a thousand workers of
    onnxruntime would not start at all."""
    cores = usable_cores()
    if workers > max(2, cores):
        raise RuntimeUnavailableError(f"--workers {workers}: this machine has {cores} usable "
                                      f"core{'s' if cores != 1 else ''}; use --workers "
                                      f"{max(2, cores)} or fewer (or mpiexec on more machines)")


def launch_timeout() -> float:
    raw = os.environ.get("IRKIT_LAUNCH_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RuntimeUnavailableError(f"IRKIT_LAUNCH_TIMEOUT={raw!r}: give the seconds the "
                                      "workers may take to start (a number > 0)")
    return value


def _launch_watch(ready: str, workers: int):
    """A check for the relay: raises once the launch has taken longer than launch_timeout()
    without every worker having started MPI (each marks READY_DIR); None when all have."""
    deadline = time.monotonic() + launch_timeout()

    def check() -> bool:
        started = len(os.listdir(ready))
        if started >= workers:
            return False  # launched: stop watching
        if time.monotonic() > deadline:
            raise RuntimeUnavailableError(
                f"only {started} of {workers} workers started within {launch_timeout():g} s; "
                "the job was stopped (fewer --workers, or raise IRKIT_LAUNCH_TIMEOUT)")
        return True
    return check


def _end_with_parent() -> None:
    """In mpiexec before it starts: SIGTERM to it when the launcher dies (even by SIGKILL), so
    that no job trains on, orphaned, and writes -o later (Linux; elsewhere nothing)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (no prctl here)
        pass


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End the job: SIGTERM to mpiexec (Hydra ends every worker), SIGKILL after `grace`."""
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()  # workers writing now get EPIPE instead of blocking on a full pipe
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# the lines Hydra (MPICH's mpiexec) prints around a failed job
_HYDRA_NOISE = re.compile(r"^(=|\[mpiexec@|\[proxy:|YOUR APPLICATION TERMINATED|This typically "
                          r"refers|Please see the FAQ|Abort\(\d+\) on node|"
                          r"(\w+|\(unknown\))\(\d*\)\.*: )")  # the last: MPICH's error stacks
_EXIT_CODES = re.compile(r"Exit codes: \[[^\]]*\] ([\d,\s]+)")
_EXIT_STRING = re.compile(r"EXIT STRING: (.+)")


class _Relay:
    """Copies the workers' stdout and stderr through, line by line (\\r ends a line too:
    progress bars), minus Hydra's banners, from which it keeps the per-rank exit codes."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.exit_string = ""
        self.worker_spoke = False   # a worker printed its own `irkit: error:` line

    def run(self, pipes: dict, watch=None) -> None:
        """Relay until every pipe (fd -> text stream to copy to) is closed; `watch()`, if
        given, is called every 0.05 s or sooner until it returns False (it may raise)."""
        import selectors
        pending = dict.fromkeys(pipes, b"")
        with selectors.DefaultSelector() as sel:
            for fd in pipes:
                sel.register(fd, selectors.EVENT_READ)
            while pending:
                if watch is not None and not watch():
                    watch = None
                for key, _ in sel.select(0.05 if watch is not None else None):
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
