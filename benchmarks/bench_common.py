"""What the benchmark scripts share: thread setup, interleaved timing, the machine's
description, and tables as text or markdown. Not a benchmark itself."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def set_threads(threads: int) -> str:
    """Give the peers `threads` threads; call before importing jax or torch. Returns how jax
    got them (XLA's CPU client has no exact count: 1 thread, or all cores)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
        return "1 (XLA single-threaded)"
    if threads == os.cpu_count():
        return f"{threads} (XLA default: all cores)"
    return f"all {os.cpu_count()} cores (XLA cannot be set to {threads})"


def torch_threads(threads: int) -> None:
    """torch.set_num_threads(threads), where torch is installed."""
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def optional(name: str):
    """The module `name`, or None when it is not installed (its peers are then skipped)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def timed(fn: Callable[[], None]) -> float:
    """Seconds one call of `fn` takes (after a gc.collect, so no collection lands inside)."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each `runs[name]()` (which returns a time) `repeats` times, the names taking turns
    run by run, the order rotating each repeat so none always goes first."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        k = rep % len(names) if names else 0
        for name in names[k:] + names[:k]:
            times[name].append(runs[name]())
    return times


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of some timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_model() -> str:
    """lscpu's model name (platform.processor() is often empty on Linux)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The machine and the versions a figure depends on."""
    import numpy as np
    import onnxruntime as ort
    info: dict[str, object] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "onnxruntime": ort.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    for name in ("torch", "jax"):
        module = optional(name)
        info[name] = getattr(module, "__version__", None)
    return info


def machine_line(info: dict[str, object]) -> str:
    """The machine() description as one line for a table's header."""
    versions = ", ".join(f"{k} {info[k]}" for k in ("onnxruntime", "torch", "jax") if info[k])
    return (f"{info['cpu']}, {info['cores']} cores; {versions}; {info['date']}; "
            f"load average {info['load_average']:.2f} at start")


def table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Rows of cells as a markdown table or as aligned text (first column left)."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "-" * len(line(head))] + [line(r) for r in rows])


def fmt_time(seconds: float, unit: str = "us") -> str:
    """A time in µs or ms with 3 significant digits."""
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    v = seconds * scale
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def cell(s: dict[str, float], unit: str = "us", spread: bool = True) -> str:
    """'median [min-max]' of a stats() dict."""
    text = fmt_time(s["median"], unit)
    if spread:
        text += f" [{fmt_time(s['min'], unit)}-{fmt_time(s['max'], unit)}]"
    return text
