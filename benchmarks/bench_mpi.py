"""Data-parallel throughput on one machine, and what it projects to on a cluster.

    python benchmarks/bench_mpi.py [--steps 60] [--repeats 3] [--json]

For each model (digits_cnn, the bundled recipe, on the digits data; an MLP 784-1024-1024-10
on random data), at the same global batch:

  1w x 2t   one process, irkit's one-graph train step (OrtStepRunner), 2 intra-op threads
  2w x 1t   `mpiexec -n 2`, MpiStepRunner (gradient graph, one flat all-reduce, update graph),
            1 intra-op thread per worker

and, from the 2-worker run: the time per step spent in the all-reduce (waiting for the other
worker included), the same all-reduce alone (after a barrier: the transfer itself), and the
compute per step (step time minus the all-reduce alone: waiting for the slower worker counts
as compute). `1w x 1t` (one process, one thread) is shown for reference. Then a projection
for N nodes from those figures and a stated network (ring all-reduce: 2(N-1)/N S/BW +
2(N-1) latency; no overlap of communication and computation: irkit runs them in turn).
The script runs itself under mpiexec for the 2-worker figures (`--worker`).
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from irkit import distributed, nn
from irkit.cli.launch import find_mpiexec
from irkit.runtimes import get_runtime, make_step_runner
from irkit.train.losses import get_loss
from irkit.train.optimizers import get_optimizer
from irkit.train.sources import ModuleSource
from irkit.train.step import build_split_graphs, build_step_graphs

BATCH = {"digits_cnn": 64, "mlp_784_1024_1024_10": 128}
NETWORKS = {  # name: (bandwidth bytes/s, latency s per message)
    "10GbE": (1.25e9, 25e-6),
    "100Gb InfiniBand": (12.5e9, 2e-6),
}


def model(name: str):
    """(step graphs, initial state, x, y, optimizer) of a benchmark model."""
    rng = np.random.default_rng(0)
    if name == "digits_cnn":
        from irkit.data import load_dataset
        from irkit.spec import load_recipe
        data = load_dataset("digits")
        x, y = data.x.astype(np.float32), data.y.astype(np.int64)
        source = ModuleSource(load_recipe("digits_cnn").build(), tuple(x.shape[1:]), seed=0)
    else:
        x = rng.standard_normal((4096, 784)).astype(np.float32)
        y = rng.integers(0, 10, 4096).astype(np.int64)
        layers = [nn.Dense(1024, activation="relu"), nn.Dense(1024, activation="relu"),
                  nn.Dense(10)]
        source = ModuleSource(nn.Sequential(layers), (784,), seed=0)
    source.adapt(x, get_runtime("onnxruntime").compile)
    optimizer = get_optimizer("adam")
    g = build_step_graphs(source, get_loss("sparse_categorical_crossentropy"), optimizer)
    return g, g.initial_state(source.weights(), 0.001), x, y, optimizer


def timed_runs(runner, x, y, batch: int, steps: int, repeats: int, sync=None) -> list[float]:
    """Seconds per step of `repeats` runs of `steps` steps (after one warm-up run)."""
    staged = runner.stage(x, y)
    order = np.random.default_rng(1).permutation(len(x))
    order = np.resize(order, steps * batch)
    times = []
    for i in range(repeats + 1):
        if sync is not None:
            sync()
        if hasattr(runner, "allreduce_s"):
            runner.allreduce_s, runner.steps = 0.0, 0
        start = time.perf_counter()
        runner.train(staged, order, batch)
        if i:
            times.append((time.perf_counter() - start) / steps)
    return times


def one_process(name: str, threads: int, steps: int, repeats: int) -> dict:
    g, state, x, y, _ = model(name)
    runner = make_step_runner("onnxruntime", g, state, threads=threads)
    step = statistics.median(timed_runs(runner, x, y, BATCH[name], steps, repeats))
    return {"step_ms": step * 1e3, "samples_per_s": BATCH[name] / step}


def worker(name: str, steps: int, repeats: int) -> dict | None:
    """Under mpiexec: the 2-worker figures (rank 0 returns them, the others None)."""
    from mpi4py import MPI
    comm = distributed.comm()
    g, state, x, y, optimizer = model(name)
    split = build_split_graphs(g.train, g.params, g.buffers, g.slots, optimizer)
    runner = make_step_runner("mpi", g, state, split=split, comm=comm)
    times = timed_runs(runner, x, y, BATCH[name], steps, repeats, comm.Barrier)
    step = comm.allreduce(statistics.median(times), op=MPI.MAX)
    in_step = comm.allreduce(runner.allreduce_s / max(runner.steps, 1), op=MPI.MAX)
    buffer = runner._packed.copy()
    alone = []
    for _ in range(50):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        alone.append(time.perf_counter() - start)
    alone_s = comm.allreduce(statistics.median(alone), op=MPI.MAX)
    if comm.Get_rank():
        return None
    return {"step_ms": step * 1e3, "samples_per_s": BATCH[name] / step,
            "allreduce_in_step_ms": in_step * 1e3, "allreduce_alone_ms": alone_s * 1e3,
            "compute_ms": (step - alone_s) * 1e3, "allreduce_bytes": buffer.nbytes,
            "threads_per_worker": runner._grad.get_session_options().intra_op_num_threads}


def ring_allreduce_s(size_bytes: float, nodes: int, bandwidth: float, latency: float) -> float:
    """Ring all-reduce time: reduce-scatter then all-gather, 2(N-1) steps of S/N bytes."""
    if nodes == 1:
        return 0.0
    return 2 * (nodes - 1) / nodes * size_bytes / bandwidth + 2 * (nodes - 1) * latency


def project(name: str, measured: dict, nodes: tuple[int, ...]) -> list[dict]:
    """Step time and throughput on N nodes, each computing a shard as the measured worker
    did (weak scaling: per-node batch fixed at the measured one, global batch grows with N),
    and at a fixed global batch (strong scaling: per-node compute shrinks as 1/N, optimistic
    for small shards)."""
    per_node_batch = BATCH[name] / 2
    compute = measured["compute_ms"] / 1e3   # one worker, 1 thread, per_node_batch rows
    rows = []
    for network, (bandwidth, latency) in NETWORKS.items():
        for n in nodes:
            comm = ring_allreduce_s(measured["allreduce_bytes"], n, bandwidth, latency)
            weak = compute + comm
            strong = compute * 2 / n + comm  # the global batch of the measurement
            rows.append({"network": network, "nodes": n, "allreduce_ms": comm * 1e3,
                         "weak_samples_per_s": n * per_node_batch / weak,
                         "weak_efficiency": compute / weak,
                         "strong_step_ms": strong * 1e3,
                         "strong_speedup": (compute * 2) / strong})
    return rows


def half_efficiency_nodes(measured: dict, bandwidth: float, latency: float) -> int | None:
    """The smallest node count at which the all-reduce takes as long as the compute (weak
    scaling efficiency 50%: each added node buys half a node or less), up to 100000."""
    compute = measured["compute_ms"] / 1e3
    for n in range(2, 100001):
        if ring_allreduce_s(measured["allreduce_bytes"], n, bandwidth, latency) >= compute:
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(BATCH))
    args = parser.parse_args()
    names = args.models.split(",")
    if args.worker:
        out = {name: worker(name, args.steps, args.repeats) for name in names}
        if distributed.is_root():
            print(json.dumps(out))
        return
    results = {name: {"1w x 2t": one_process(name, 2, args.steps, args.repeats),
                       "1w x 1t": one_process(name, 1, args.steps, args.repeats)}
               for name in names}
    command = [find_mpiexec(), "-n", "2", sys.executable, os.path.abspath(__file__),
               "--worker", "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--models", args.models]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    for name, figures in json.loads(done.stdout.strip().splitlines()[-1]).items():
        results[name]["2w x 1t"] = figures
        results[name]["projection"] = project(name, figures, (1, 2, 8, 64))
        results[name]["half_efficiency_nodes"] = {
            network: half_efficiency_nodes(figures, *spec) for network, spec in NETWORKS.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results)


def report(results: dict) -> None:
    for name, r in results.items():
        one, single, two = r["1w x 2t"], r["1w x 1t"], r["2w x 1t"]
        print(f"\n{name}: global batch {BATCH[name]}, all-reduce of "
              f"{two['allreduce_bytes'] / 1e6:.3f} MB per step")
        print(f"  1 worker  x 2 threads: {one['samples_per_s']:9.0f} samples/s  "
              f"({one['step_ms']:.2f} ms/step)")
        print(f"  1 worker  x 1 thread : {single['samples_per_s']:9.0f} samples/s  "
              f"({single['step_ms']:.2f} ms/step)")
        print(f"  2 workers x 1 thread : {two['samples_per_s']:9.0f} samples/s  "
              f"({two['step_ms']:.2f} ms/step: compute {two['compute_ms']:.2f}, all-reduce "
              f"{two['allreduce_in_step_ms']:.3f} in step, {two['allreduce_alone_ms']:.3f} "
              "alone)")
        print(f"  {'network':18} {'nodes':>5} {'allreduce ms':>12} {'weak samples/s':>15} "
              f"{'weak eff':>8} {'strong ms/step':>15} {'speedup':>8}")
        for p in r["projection"]:
            print(f"  {p['network']:18} {p['nodes']:5d} {p['allreduce_ms']:12.3f} "
                  f"{p['weak_samples_per_s']:15.0f} {p['weak_efficiency']:8.2f} "
                  f"{p['strong_step_ms']:15.3f} {p['strong_speedup']:8.2f}")
        for network, n in r["half_efficiency_nodes"].items():
            print(f"  {network}: all-reduce as long as the compute (weak efficiency 50%) "
                  f"from {n} nodes")


if __name__ == "__main__":
    main()
