"""onnxruntime's graph optimization level: session start-up against time per step.

    python benchmarks/bench_ort_opt_level.py [--recipe digits_cnn ...] [--repeats 7]

For each recipe's train-step graph (the one `irkit train` builds, at the recipe's batch
size) and evaluation graph, and for each level (BASIC, EXTENDED, ALL), it measures

  session   the time to create the InferenceSession from the serialized model (CPU), the
            median of `--repeats` creations after one warm-up creation;
  step      the time of one `run` of the train-step graph on a fixed batch (numpy feeds,
            the same for every level), the median of `--repeats` runs of `--steps` steps,
            levels taking turns run by run.

Threads: `--threads` (default 1, the fairest on a small shared machine; 0 for onnxruntime's
default). What matters is the difference between levels, not the absolute figures.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from irkit.cli.jobs import prepare
from irkit.data import train_val_split
from irkit.onnx_io import to_onnx

LEVELS = {"BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _graphs(recipe_name: str):
    """Serialized train and eval models, and feeds for one train step."""
    model, settings, data = prepare(recipe_name, {})
    train_idx, _ = train_val_split(len(data.x), settings.val_split, settings.seed, data.y)
    x = data.x[train_idx].astype(np.float32)
    graphs = model.prepare(x)
    feeds = graphs.initial_state(model.source.weights(), settings.lr)
    feeds[graphs.input_name] = x[:settings.batch_size]
    feeds[graphs.data_names[1]] = data.y[train_idx][:settings.batch_size].astype(np.int64)
    train, evaluation = (to_onnx(g).SerializeToString() for g in (graphs.train, graphs.eval))
    inputs = {v.name for v in graphs.train.inputs}
    return train, evaluation, {k: v for k, v in feeds.items() if k in inputs}


def _session(model: bytes, level, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _creation_ms(model: bytes, level, threads: int, repeats: int) -> float:
    _session(model, level, threads)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _session(model, level, threads)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _step_us(sessions: dict, feeds: dict, steps: int, repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(steps // 5):
            s.run(None, feeds)
    for _ in range(repeats):
        for name, s in sessions.items():
            t = time.perf_counter()
            for _ in range(steps):
                s.run(None, feeds)
            runs[name].append((time.perf_counter() - t) / steps)
    return {k: statistics.median(v) * 1e6 for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="append",
                    choices=("iris_mlp", "digits_mlp", "digits_cnn"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(f"{'recipe':11} {'level':9} {'train session':>14} {'eval session':>13} "
          f"{'step':>9}")
    for recipe in args.recipe or ["digits_cnn"]:
        train, evaluation, feeds = _graphs(recipe)
        sessions = {k: _session(train, v, args.threads) for k, v in LEVELS.items()}
        step = _step_us(sessions, feeds, args.steps, args.repeats)
        for name, level in LEVELS.items():
            t_ms = _creation_ms(train, level, args.threads, args.repeats)
            e_ms = _creation_ms(evaluation, level, args.threads, args.repeats)
            print(f"{recipe:11} {name:9} {t_ms:11.1f} ms {e_ms:10.1f} ms {step[name]:6.0f} us")
    print(f"(medians of {args.repeats}; {args.threads or 'default'} intra-op threads)")


if __name__ == "__main__":
    main()
