"""Running the irkit CLI in a subprocess with its own peak memory and a time limit: the one
helper for tests that bound what a small hostile input may cost (issue 23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# the child writes its own peak (VmHWM, per address space) at exit: wait4's ru_maxrss would
# count the parent's memory at fork time (Linux keeps the pre-exec high-water mark)
PEAK = ("import atexit, os, sys\n"
        "def peak():\n"
        "    kb = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
        "    open(os.environ['IRKIT_TEST_PEAK'], 'w').write(kb[0])\n"
        "atexit.register(peak)\n"
        "from irkit.cli import main\n"
        "sys.exit(main(prog_name='irkit'))\n")
IRKIT = [sys.executable, "-c", PEAK]
MEMORY_MB = 1024  # the bound for any input under 1 MB


@dataclass
class Run:
    rc: int | None        # None: killed at the time limit (a hang)
    stdout: str
    stderr: str
    peak_mb: float        # the child's own peak resident memory (VmHWM)
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_irkit(args: list[str], cwd: str | Path, timeout: float = 30.0,
              env: dict[str, str] | None = None) -> Run:
    """`irkit ARGS` in `cwd`: exit status, output, the child's own peak RSS and wall
    seconds; killed (rc None) after `timeout` seconds."""
    out, err, peak = (Path(cwd) / f".run.{k}" for k in ("out", "err", "peak"))
    peak.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {}), "IRKIT_TEST_PEAK": str(peak)}
    start = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen([*IRKIT, *args], cwd=cwd, stdout=fo, stderr=fe, env=full_env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = None
    seconds = time.monotonic() - start
    peak_kb = float(peak.read_text()) if peak.exists() else 0.0  # none when killed
    run = Run(rc, out.read_text(errors="replace"), err.read_text(errors="replace"),
              peak_kb / 1024, seconds)
    for f in (out, err, peak):
        f.unlink(missing_ok=True)
    return run


def one_line_error(run: Run) -> bool:
    """Whether the run failed with exactly one `irkit: error:` line and nothing else."""
    return run.rc not in (0, None) and len(run.lines) == 1 \
        and run.lines[0].startswith("irkit: error: ")
