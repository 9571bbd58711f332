"""Measure the peak memory one onnxruntime run takes, in a fresh process.

How (Linux): a child Python process loads the model and the feeds, makes a CPU session as
irkit's runtime does (`make_session`: ORT_ENABLE_ALL, the CPU memory arena on, `threads`
intra-op threads, memory patterns on unless `memory_pattern` is False), runs it once to warm
up, then resets the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`, which resets
VmHWM), reads the resident size, runs `runs` more times and reads VmHWM. Each figure is VmHWM
minus the resident size before the runs it covers: the memory those runs touched beyond what
the process already held.

What each figure means depends on the memory pattern (measured on onnxruntime 1.31):

1. Memory pattern on (inference sessions, and `planned_bytes`' model): the first run traces
   its allocations; from the second run on, onnxruntime allocates one block laid out from that
   trace, from its arena. `steady_bytes` is that block: the figure to compare with the
   estimate `Memory.planned_bytes`.
2. Memory pattern off (train sessions: OrtStepRunner): every value is allocated from the
   arena as its node runs and goes back to the arena when freed; the arena keeps what it
   grew to, so later runs touch no new memory (`steady_bytes` about 0). `first_run_bytes`,
   the arena's growth over the first run, is then the step's working set as training
   sees it: the live values, plus one-time allocations and the arena's fragmentation.
3. Arena off too (`arena=False`, a measure, not how irkit runs): each value is its own
   malloc, and the child's malloc gives every block of 64 KiB or more its own mapping
   (MALLOC_MMAP_THRESHOLD_), returned at free, so the resident size follows the bytes live;
   `steady_bytes` is then the live peak of a run: the figure the estimate `Memory.peak_bytes`
   (liveness over onnxruntime's order) models. What (2) adds to it is onnxruntime's
   allocator, not the graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from irkit.errors import RuntimeUnavailableError

_CHILD = r"""
import json, sys, time
import numpy as np
from irkit.runtimes.onnxruntime import make_session

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

import os
PAGE = os.sysconf("SC_PAGE_SIZE")
model_path, feeds_path, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pattern, arena, reuse = (sys.argv[i] == "1" for i in (5, 6, 7))
feeds = dict(np.load(feeds_path))
with open(model_path, "rb") as f:
    session = make_session(f.read(), "cpu", threads or None, memory_pattern=pattern,
                           arena=arena, memory_reuse=reuse)
reset_peak(); before = rss()
session.run(None, feeds)
first = hwm() - before
times = []
reset_peak(); before = rss()
for _ in range(runs):
    t0 = time.perf_counter(); session.run(None, feeds); times.append(time.perf_counter() - t0)
steady = hwm() - before
print(json.dumps({"first_run_bytes": first, "steady_bytes": steady, "seconds": times}))
"""


def measure_peak(model_bytes: bytes, feeds: dict[str, np.ndarray], runs: int = 3,
                 threads: int = 1, memory_pattern: bool = True, arena: bool = True,
                 memory_reuse: bool = True) -> dict:
    """Peak bytes of onnxruntime runs of the model, measured in a child process (see the
    module docstring): `first_run_bytes` (the arena's growth in the first run),
    `steady_bytes` (the peak of later runs) and `seconds` per later run; `memory_pattern`
    False measures a session made as train steps are (then `first_run_bytes` is the step's
    working set); `arena` False too measures the bytes live (`steady_bytes`);
    `memory_reuse` False as a checkpointed step runs (onnxruntime.recomputes)."""
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeUnavailableError("measuring peak memory needs Linux /proc (clear_refs)")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "model.onnx")
        feeds_path = os.path.join(tmp, "feeds.npz")
        with open(model_path, "wb") as f:
            f.write(model_bytes)
        np.savez(feeds_path, **feeds)
        # cwd: `-c` puts the working directory first on sys.path, and a source checkout's
        # irkit/ there would shadow the installed package (whose irkit.runtimes it lacks)
        argv = [model_path, feeds_path, str(runs), str(threads),
                *("1" if flag else "0" for flag in (memory_pattern, arena, memory_reuse))]
        env = dict(os.environ) if arena else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True,
                              text=True, check=False, cwd=tmp, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeUnavailableError(f"the measuring process failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
