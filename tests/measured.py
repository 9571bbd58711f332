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

IRKIT = [sys.executable, "-c",
         "import sys; from irkit.cli import main; sys.exit(main(prog_name='irkit'))"]
MEMORY_MB = 1024  # the bound for any input under 1 MB


@dataclass
class Run:
    rc: int | None        # None: killed at the time limit (a hang)
    stdout: str
    stderr: str
    peak_mb: float        # the child's own peak resident memory
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_irkit(args: list[str], cwd: str | Path, timeout: float = 30.0,
              env: dict[str, str] | None = None) -> Run:
    """`irkit ARGS` in `cwd`: exit status, output, the child's peak RSS (by wait4, so only
    this child counts) and wall seconds; killed (rc None) after `timeout` seconds."""
    out, err = Path(cwd) / ".run.out", Path(cwd) / ".run.err"
    full_env = {**os.environ, **(env or {})}
    start = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen([*IRKIT, *args], cwd=cwd, stdout=fo, stderr=fe, env=full_env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    rc, usage = None, None
    while time.monotonic() - start < timeout:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.02)
    else:
        os.killpg(p.pid, signal.SIGKILL)
        _, _, usage = os.wait4(p.pid, 0)
    p.returncode = -9 if rc is None else rc  # reaped here; Popen must not wait again
    seconds = time.monotonic() - start
    run = Run(rc, out.read_text(errors="replace"), err.read_text(errors="replace"),
              usage.ru_maxrss / 1024, seconds)
    out.unlink()
    err.unlink()
    return run


def one_line_error(run: Run) -> bool:
    """Whether the run failed with exactly one `irkit: error:` line and nothing else."""
    return run.rc not in (0, None) and len(run.lines) == 1 \
        and run.lines[0].startswith("irkit: error: ")
