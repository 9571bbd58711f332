"""Time one train step of the digits_cnn recipe, and where its kernels spend the time.

    python benchmarks/bench_cnn_step.py [--repeats 7] [--steps 200] [--threads N] [--profile]
                                        [--top 8] [--maxpool-rule both]

The step is the one `irkit train digits_cnn` runs (Adam, batch 32): the recipe's model on the
bundled digits data, its step graphs (`Model.prepare`), run by onnxruntime's step runner
(`runner.train` of one staged batch at a time: weights on the device, ping-pong IOBindings,
the Normalize layer applied to the data when it was staged). After warm-up,
`--repeats` timed runs of `--steps` steps cycle through 8 fixed batches; the median time per
step is printed with the range.
`--maxpool-rule both` builds the step twice, with MaxPool's mask gradient (the default for
windows that tile the input) and with the scatter at the indices (the rule for other windows,
forced here), and times them run by run in turns.
`--profile` also runs onnxruntime's profiler over the same step graph (its own session, same
options) and prints the time per op type and the slowest nodes.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import collections
import gc
import json
import os
import statistics
import time

import numpy as np

from irkit.cli.jobs import prepare
from irkit.data import train_val_split
from irkit.runtimes import make_step_runner

BATCH, POOL = 32, 8


def _runner(threads: int | None):
    """digits_cnn's step runner (as `irkit train` makes it, or with `threads`) and 8 batches."""
    model, settings, data = prepare("digits_cnn", {})
    train_idx, _ = train_val_split(len(data.x), settings.val_split, settings.seed, data.y)
    x, y = data.x[train_idx].astype(np.float32), data.y[train_idx].astype(np.int64)
    graphs = model.prepare(x)
    state = graphs.initial_state(model.source.weights(), settings.lr)
    runner = make_step_runner("onnxruntime", graphs, state, device="cpu", threads=threads,
                              batch_size=BATCH)
    batches = [(np.ascontiguousarray(x[i * BATCH:(i + 1) * BATCH]),
                np.ascontiguousarray(y[i * BATCH:(i + 1) * BATCH])) for i in range(POOL)]
    runner.graphs = graphs
    return runner, batches


def time_steps(runner, batches, steps: int, repeats: int) -> list[float]:
    """Seconds per step, one figure per timed run (after steps / 5 warm-up steps): a
    `runner.train` pass of one batch of staged data each, as `Model.fit` runs its steps (the
    scaling already applied at staging; `runner.step` would apply it to every raw batch)."""
    staged = [runner.stage(x, y) for x, y in batches]
    order = np.arange(BATCH)
    for i in range(steps // 5):
        runner.train(staged[i % POOL], order, BATCH)
    runs = []
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        for i in range(steps):
            runner.train(staged[i % POOL], order, BATCH)
        runs.append((time.perf_counter() - t) / steps)
    return runs


def profile(runner, batches, steps: int, top: int = 8) -> None:
    """Per-op-type kernel time of the step graph, as the runner runs it, under onnxruntime's
    profiler, and the `top` slowest nodes."""
    import onnxruntime as ort
    from irkit.runtimes.onnxruntime import session_bytes

    g = runner.graphs
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.enable_profiling = True
    if runner.threads:
        so.intra_op_num_threads = runner.threads
    sess = ort.InferenceSession(session_bytes(g.train), so,
                                providers=["CPUExecutionProvider"])
    feeds = runner.read_state()
    inputs = {i.name for i in sess.get_inputs()}
    for i in range(steps):
        x, y = batches[i % POOL]
        sess.run(None, {**{k: v for k, v in feeds.items() if k in inputs},
                        g.input_name: x, g.data_names[1]: y})
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    by_op, by_node, count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"][:-len("_kernel_time")]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    total = sum(by_op.values())
    print(f"kernel time per step {total / steps:.0f} us (profiled, {steps} steps)")
    for op, d in by_op.most_common(12):
        print(f"  {op:22} {d / steps:7.1f} us {100 * d / total:5.1f}%  {count[op] // steps} nodes")
    print("slowest nodes:")
    for name, d in by_node.most_common(top):
        print(f"  {name:40} {d / steps:7.1f} us")


def _rule_runners(rules: list[str], threads: int | None) -> dict:
    """A runner (and batches) per MaxPool gradient rule."""
    from irkit.ops import MaxPool

    pool_type, built = type(MaxPool), {}
    tiles = pool_type.tiles
    for rule in rules:
        if rule == "scatter":
            pool_type.tiles = lambda self, node: False
        try:
            built[rule] = _runner(threads)
        finally:
            pool_type.tiles = tiles
    return built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: "
                    "the step runner's choice)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=8, help="slowest nodes the profile lists")
    ap.add_argument("--maxpool-rule", choices=("mask", "scatter", "both"), default="mask",
                    help="MaxPool's gradient for tiling windows (default: irkit's, the mask)")
    args = ap.parse_args()
    rules = ["mask", "scatter"] if args.maxpool_rule == "both" else [args.maxpool_rule]
    runners = _rule_runners(rules, args.threads)
    runs: dict[str, list[float]] = {r: [] for r in rules}
    for _ in range(args.repeats):
        for rule in rules:
            runs[rule] += time_steps(*runners[rule], args.steps, 1)
    for rule in rules:
        r, runner = runs[rule], runners[rule][0]
        print(f"digits_cnn step (batch {BATCH}, Adam, {runner.threads or 'default'} "
              f"threads, MaxPool gradient: {rule}): {statistics.median(r) * 1e6:.0f} us median "
              f"[{min(r) * 1e6:.0f}-{max(r) * 1e6:.0f}] over {args.repeats} runs of "
              f"{args.steps} steps")
    if args.profile:
        for rule in rules:
            print(f"-- profile, MaxPool gradient: {rule}")
            profile(*runners[rule], args.steps, args.top)


if __name__ == "__main__":
    main()
