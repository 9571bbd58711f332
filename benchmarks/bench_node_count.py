"""Node count vs time for every graph command on chains (issue 23): a chain of N Relu nodes
and a chain of N Add nodes each with its own weight, through `irkit inspect`, `export`,
`optimize`, `grad` and `train` (one epoch on iris), each a fresh process.

    python benchmarks/bench_node_count.py                    # 10k and 100k nodes
    python benchmarks/bench_node_count.py --nodes 1000000    # 1M (minutes, GBs)
    python benchmarks/bench_node_count.py --command inspect --kind relu --nodes 10000
    python benchmarks/bench_node_count.py --nodes 100000 --repeats 5   # the refusal's time

A command refused by the node cap (IRKIT_MAX_NODES) shows `refused` and its time; with
`--repeats N` each time is the median of N runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COMMANDS = {
    "inspect": ["inspect", "{m}"],
    "export": ["export", "{m}", "-o", "out.onnx"],
    "optimize": ["optimize", "{m}", "-o", "opt.onnx", "--repeats", "0"],
    "grad": ["grad", "{m}", "--of", "y", "--wrt", "W", "-o", "grad.onnx"],
    "train": ["train", "{m}", "--data", "iris", "--epochs", "1", "-o", "trained.onnx"],
}


def chain(kind: str, nodes: int) -> onnx.ModelProto:
    """x (N, 4) -> `nodes` Relu (or Add of a weight each) -> MatMul W (4, 3) -> y: iris logits."""
    inits = [numpy_helper.from_array(np.full((4, 3), 0.1, np.float32), "W")]
    graph_nodes, prev = [], "x"
    for i in range(nodes):
        if kind == "relu":
            graph_nodes.append(helper.make_node("Relu", [prev], [f"h{i}"], name=f"n{i}"))
        else:
            inits.append(numpy_helper.from_array(np.full(4, 1e-6, np.float32), f"b{i}"))
            graph_nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"], name=f"n{i}"))
        prev = f"h{i}"
    graph_nodes.append(helper.make_node("MatMul", [prev, "W"], ["y"], name="head"))
    g = helper.make_graph(graph_nodes, f"{kind}_chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run(command: str, model: str, folder: str, timeout: float) -> tuple[str, float, float]:
    """(outcome, wall seconds, CPU seconds) of one irkit command in a fresh process (on a
    shared machine the CPU time moves less with the load than the wall time)."""
    cpu0 = _cpu()
    args = [a.format(m=model) for a in COMMANDS[command]]
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "irkit.cli", *args], cwd=folder,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"over {timeout:.0f} s", time.perf_counter() - t0, _cpu() - cpu0
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if p.returncode == 0:
        return "ok", seconds, cpu
    line = (p.stderr.strip().splitlines() or ["?"])[-1]
    return ("refused" if "IRKIT_MAX_NODES" in line else "error: " + line[:80]), seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, action="append", help="chain length (repeatable)")
    ap.add_argument("--kind", action="append", choices=["relu", "add"])
    ap.add_argument("--command", action="append", choices=list(COMMANDS))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (the median shown)")
    a = ap.parse_args()
    print(f"{'kind':5s} {'nodes':>8s} {'command':9s} {'seconds':>8s} {'cpu s':>7s}  outcome  "
          f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})", flush=True)
    for kind in a.kind or ["relu", "add"]:
        for n in a.nodes or [10_000, 100_000]:
            with tempfile.TemporaryDirectory() as folder:
                onnx.save(chain(kind, n), os.path.join(folder, "m.onnx"))
                for command in a.command or list(COMMANDS):
                    runs = [run(command, "m.onnx", folder, a.timeout) for _ in range(a.repeats)]
                    outcome = runs[-1][0]
                    seconds = statistics.median(t for _, t, _ in runs)
                    cpu = statistics.median(c for _, _, c in runs)
                    print(f"{kind:5s} {n:8d} {command:9s} {seconds:8.2f} {cpu:7.2f}  {outcome}",
                          flush=True)


if __name__ == "__main__":
    main()
