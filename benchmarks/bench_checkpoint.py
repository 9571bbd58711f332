"""Gradient checkpointing of a deep MLP's train step: measured peak memory and time per step.

    python benchmarks/bench_checkpoint.py [--layers 32] [--width 256] [--batch 2048]
                                          [--runs 10] [--strategy sqrt|BYTES] [--json]

The step graph comes from `irkit.train.build_step_graphs` (Dense+ReLU layers, softmax
cross-entropy, SGD), once plain and once rewritten by
`irkit.passes.checkpoint_activations.apply_checkpointing`. Both run with the same feeds.

Memory (irkit.runtimes.memory.measure_peak): each graph runs in a fresh child process on a
CPU session made as irkit makes it (ORT_ENABLE_ALL, arena and memory patterns on, 1 intra-op
thread); after a warm-up run the peak-RSS mark is reset (/proc/self/clear_refs "5") and the
peak over the next two runs minus the resident size before them is reported. Time: both
graphs' sessions in this process (1 thread each), `--runs` runs each, taking turns run by
run so that other load on the machine hits both alike; the median (and the fastest) run.
The estimate is irkit's (`irkit.passes.analysis.peak_memory(...).planned_bytes`) at the
same batch.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import statistics
import sys
import time

import numpy as np

from irkit.nn import Sequential
from irkit.nn.layers import Dense
from irkit.onnx_io import to_onnx
from irkit.passes.analysis import figures
from irkit.passes.checkpoint_activations import apply_checkpointing
from irkit.runtimes.memory import measure_peak
from irkit.runtimes.onnxruntime import make_session
from irkit.train import build_step_graphs
from irkit.train.losses import get_loss
from irkit.train.sources import ModuleSource
from irkit.train.optimizers import SGD

TARGET_MEMORY, TARGET_TIME = 0.40, 0.35  # >= 40% lower peak at <= 35% more time


def step_graph(layers: int, width: int):
    """The SGD train step of a `layers`-deep MLP of `width` units (also used by the tests)."""
    model = ModuleSource(Sequential([Dense(width, "relu") for _ in range(layers)] + [Dense(10)]),
                        (width,), seed=0)
    return build_step_graphs(model, get_loss("sparse_categorical_crossentropy"),
                             SGD()).train


def step_feeds(graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feeds for every input of a step graph at `batch` rows: labels 0..9, lr 0.01,
    step 1, second moments and running variances 1 (their square roots stay finite), small
    normal values for the rest (also used by the tests)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        shape = [d if isinstance(d, int) else batch for d in v.shape]
        if v.name == "target":
            feeds[v.name] = rng.integers(0, 10, shape).astype(np.int64)
        elif v.name.rsplit("/", 1)[-1] in ("lr", "step"):  # optimizer state: opt/lr
            feeds[v.name] = np.array(0.01 if v.dtype.kind == "f" else 1, v.dtype)
        elif v.name.startswith("v/") or v.name.endswith("running_var"):
            feeds[v.name] = np.ones(shape, np.float32)
        else:
            feeds[v.name] = (rng.standard_normal(shape) * 0.1).astype(v.dtype)
    return feeds


def measure_memory(graph, batch: int) -> dict:
    m = measure_peak(to_onnx(graph).SerializeToString(), step_feeds(graph, batch), runs=2)
    return {"nodes": len(graph.nodes), "measured_peak_bytes": m["steady_bytes"],
            "first_run_bytes": m["first_run_bytes"],
            "estimated_peak_bytes": figures(graph, default=batch).peak.planned_bytes}


def interleaved_times(graphs: dict, feeds: dict, runs: int) -> dict[str, list[float]]:
    """Seconds per run of each graph, the graphs taking turns run by run (the order flips
    every round), on sessions in this process: load on the machine hits both alike."""
    sessions = {k: make_session(to_onnx(g).SerializeToString(), "cpu", 1)
                for k, g in graphs.items()}
    for s in sessions.values():
        s.run(None, feeds)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(runs):
        for k in (list(sessions) if i % 2 == 0 else list(reversed(sessions))):
            t0 = time.perf_counter()
            sessions[k].run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return times


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--strategy", default="sqrt", help="sqrt or a byte budget")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Build both steps, check they compute the same, measure memory and time."""
    strategy = args.strategy if args.strategy == "sqrt" else int(args.strategy)
    plain, checkpointed = step_graph(args.layers, args.width), step_graph(args.layers, args.width)
    names = apply_checkpointing(checkpointed, strategy, args.batch)
    feeds = step_feeds(plain, args.batch)
    outs = [make_session(to_onnx(g).SerializeToString()).run(None, feeds)
            for g in (plain, checkpointed)]
    identical = all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))
    graphs = {"plain": plain, "checkpointed": checkpointed}
    rows = {k: measure_memory(g, args.batch) for k, g in graphs.items()}
    for k, t in interleaved_times(graphs, feeds, args.runs).items():
        rows[k].update(seconds_per_step=statistics.median(t), fastest=min(t), all_seconds=t)
    lower = 1 - rows["checkpointed"]["measured_peak_bytes"] / rows["plain"]["measured_peak_bytes"]
    slower = rows["checkpointed"]["seconds_per_step"] / rows["plain"]["seconds_per_step"] - 1
    slower_min = rows["checkpointed"]["fastest"] / rows["plain"]["fastest"] - 1
    return {"config": vars(args), "checkpoints": names, "rows": rows,
            "identical_outputs_and_gradients": identical, "peak_lower": lower,
            "time_more": slower, "time_more_fastest_runs": slower_min,
            "met": lower >= TARGET_MEMORY and slower <= TARGET_TIME}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = result["rows"]
    print(f"{args.layers}-layer MLP, width {args.width}, batch {args.batch}, strategy "
          f"{args.strategy} ({len(result['checkpoints'])} checkpoints); 1 thread, "
          f"{args.runs} runs each")
    print(f"{'':14}{'nodes':>7}{'measured MiB':>14}{'estimate MiB':>14}{'ms/step':>10}"
          f"{'fastest':>10}")
    for name, r in rows.items():
        print(f"{name:14}{r['nodes']:>7}{r['measured_peak_bytes'] / 2**20:>14.1f}"
              f"{r['estimated_peak_bytes'] / 2**20:>14.1f}{r['seconds_per_step'] * 1e3:>10.1f}"
              f"{r['fastest'] * 1e3:>10.1f}")
    print(f"peak {result['peak_lower']:.1%} lower (target >= {TARGET_MEMORY:.0%}), time "
          f"{result['time_more']:+.1%} (fastest runs {result['time_more_fastest_runs']:+.1%}; "
          f"target <= +{TARGET_TIME:.0%}); outputs and gradients identical: "
          f"{result['identical_outputs_and_gradients']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
