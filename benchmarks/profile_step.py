"""Where one fine-tuning train step spends its time: onnxruntime's profiler on irkit's step
graph, torch's profiler on PyTorch eager's step, per op type.

    python benchmarks/profile_step.py --model resnet18 --threads 1 --steps 3
    python benchmarks/profile_step.py --model mobilenet_v2 --batch 8 --level extended --torch

The models, weights and batches are bench_finetune.py's (ResNet-18 and MobileNetV2 on 3x64x64
images, by default batch 32; the transformers too), the step is irkit's AdamW step graph from
`Model.prepare`, run on a session made as the step runner makes it (`--level` picks
onnxruntime's graph optimization level, `--threads` its intra-op threads) with
`enable_profiling`. After `--warmup` steps (not profiled: onnxruntime's profiler starts with
the session, so the warm-up runs are dropped from its events by their run index) the kernel
time of `--steps` steps is summed per op type and per part of the step: the forward pass, the
gradient (nodes named `grad/...`), the optimizer (`opt/...`), and what onnxruntime added
(layout reorders, named by it). Shares of kernel time are robust to the machine's load, the
absolute figures are not. `--torch` profiles torch's eager step of the same model the same
way (`torch.profiler`, self CPU time per aten op) in the same process, after irkit's.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_finetune as bf  # noqa: E402

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL", "layout": "ORT_ENABLE_LAYOUT"}


def batch_of(name: str, batch: int | None):
    """bench_finetune's batch of the model, its first `batch` rows."""
    _, x, y = bf.build(name)
    if batch:
        x, y = {k: v[:batch] for k, v in x.items()}, y[:batch]
    return x, y


def step_graphs(name: str, folder: str, x: dict, y: np.ndarray, flat: bool = False):
    """irkit's step graphs (AdamW, lr 1e-4, weight decay 0.01) and initial state; `flat`:
    the optimizer updates one flat vector of all parameters."""
    import irkit
    from irkit.train import step
    if flat:  # every parameter in one flat vector, whatever its size (see FLAT_UPDATE_LIMIT)
        step.FLAT_UPDATE_LIMIT = 2 ** 62
    model = irkit.load_model(os.path.join(folder, f"{name}.onnx"))
    model.compile("adamw", lr=1e-4, weight_decay=0.01, batch_size=len(y))
    graphs = model.prepare(x)
    return graphs, graphs.initial_state(model.source.weights(), 1e-4)


def session(graph, threads: int, level: str, profile: bool):
    """A CPU session of `graph` as the step runner makes one, at optimization `level`."""
    import onnxruntime as ort
    from irkit.runtimes.onnxruntime import session_bytes

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    so.intra_op_num_threads = threads
    so.enable_profiling = profile
    if os.environ.get("IRKIT_PROFILE_FTZ"):
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(session_bytes(graph), so, providers=["CPUExecutionProvider"])


def part(node: str) -> str:
    """The part of the step an executed node belongs to, from its name."""
    if node.startswith("grad/"):
        return "gradient"
    if node.startswith("opt/"):
        return "optimizer"
    if "reorder" in node.lower() or "nchwc" in node.lower():
        return "layout (onnxruntime)"
    return "forward"


def kernel_events(path: str, skip_runs: int) -> list[tuple[str, str, float, list]]:
    """(node name, op type, microseconds per run, input shapes) of every kernel in
    onnxruntime's profile at `path`: the median over the session runs after the first
    `skip_runs` (a median per node, so that a kernel descheduled by other work on the
    machine in one run does not count)."""
    with open(path) as f:
        events = json.load(f)
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start = runs[skip_runs] - 1 if len(runs) > skip_runs else 0
    times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    shapes = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            key = (e["name"][:-len("_kernel_time")], e["args"]["op_name"])
            times[key].append(e["dur"])
            shapes[key] = [next(iter(t.values())) for t in e["args"].get("input_type_shape", [])]
    return [(node, op, statistics.median(d), shapes[(node, op)])
            for (node, op), d in times.items()]


def profile_irkit(name: str, folder: str, args) -> dict:
    """Kernel time per node of `args.steps` steps run as training runs them: onnxruntime's
    step runner (state in two bound buffer sets that ping-pong, the batch staged), its train
    session replaced by one made with the profiler on, the same options otherwise."""
    from irkit.runtimes import get_runtime

    x, y = batch_of(name, args.batch)
    graphs, state = step_graphs(name, folder, x, y, args.flat_update)
    runner = get_runtime("onnxruntime").step_runner(graphs, state, threads=args.threads,
                                                   batch_size=len(y))
    if runner._prefix is not None:  # the runner's train graph is not graphs.train
        raise SystemExit(f"{name}: the step has a data prefix; profile it without one")
    runner.train_session = session(graphs.train, args.threads, args.level, profile=True)
    arrays = tuple(x.values())
    parts = runner.stage(arrays if len(arrays) > 1 else arrays[0], y)
    walls, cpus = [], []
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        runner.step(*parts)
        if i >= args.warmup:
            walls.append(time.perf_counter() - t0)
            cpus.append(time.thread_time() - c0)
    path = runner.train_session.end_profiling()
    events = kernel_events(path, args.warmup)
    os.remove(path)
    return {"events": events, "wall": walls, "cpu": cpus, "nodes": len(graphs.train.nodes)}


def profile_torch(name: str, folder: str, args) -> dict:
    """Self CPU time per aten op of `args.steps` eager steps (after `args.warmup`)."""
    from torch.profiler import ProfilerActivity, profile

    step = torch_step(name, folder, args)
    for _ in range(args.warmup):
        step()
    walls, cpus = [], []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            t0, c0 = time.perf_counter(), time.thread_time()
            step()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.thread_time() - c0)
    ops = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    return {"ops": ops, "wall": walls, "cpu": cpus}


def torch_step(name: str, folder: str, args):
    """bench_finetune's torch step on the batch of `args.batch` rows."""
    return bf.torch_step(name, folder, args.threads, batch_of(name, args.batch))


def _times(result: dict) -> str:
    """Median wall and calling-thread CPU time per profiled step (with one thread the CPU
    time is the step's work, whatever else the machine runs)."""
    wall, cpu = (statistics.median(result[k]) * 1e3 for k in ("wall", "cpu"))
    return f"median per step: wall {wall:.1f} ms, this thread's CPU {cpu:.1f} ms"


def irkit_tables(result: dict, top: int, nodes: int) -> str:
    """Kernel time per op type, per part of the step, and the `nodes` slowest nodes."""
    events = result["events"]
    total = sum(e[2] for e in events) or 1
    by_op, by_part, count = collections.Counter(), collections.Counter(), collections.Counter()
    for node, op, d, _ in events:
        by_op[op] += d
        by_part[(part(node), op)] += d
        count[op] += 1
    lines = [f"irkit: {result['nodes']} nodes in the step graph; kernel time "
             f"{total / 1e3:.1f} ms per step (sum of per-node medians); {_times(result)}",
             f"  {'op type':28} {'ms/step':>8} {'share':>6} {'kernels':>7}"]
    lines += [f"  {op:28} {d / 1e3:8.2f} {100 * d / total:5.1f}% {count[op]:7d}"
              for op, d in by_op.most_common(top)]
    lines.append(f"  {'part / op type (>= 2%)':28} {'ms/step':>8} {'share':>6}")
    parts = collections.Counter()
    for (p, _), d in by_part.items():
        parts[p] += d
    for p, d in parts.most_common():
        lines.append(f"  {p:28} {d / 1e3:8.2f} {100 * d / total:5.1f}%")
        lines += [f"    {op:26} {e / 1e3:8.2f} {100 * e / total:5.1f}%"
                  for (q, op), e in by_part.most_common() if q == p and e >= 0.02 * total]
    if nodes:
        lines.append("  slowest nodes: ms, op, node, input shapes")
        lines += [f"  {d / 1e3:8.2f} {op:16} {node[:40]:40} {shapes}"[:150]
                  for node, op, d, shapes in sorted(events, key=lambda e: -e[2])[:nodes]]
    return "\n".join(lines)


def torch_table(result: dict, steps: int, top: int) -> str:
    ops = sorted(result["ops"], key=lambda o: -o[1])
    total = sum(t for _, t, _ in ops) or 1
    lines = [f"torch: self CPU time {total / steps / 1e3:.1f} ms per step; {_times(result)}",
             f"  {'aten op':40} {'ms/step':>8} {'share':>6}"]
    for key, t, _ in ops[:top]:
        lines.append(f"  {key[:40]:40} {t / steps / 1e3:8.2f} {100 * t / total:5.1f}%")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=bf.MODELS, default="resnet18")
    ap.add_argument("--batch", type=int, default=None, help="rows of the batch (default: "
                    "bench_finetune's, 32 images or 16 sequences)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--level", choices=tuple(LEVELS), default="all",
                    help="onnxruntime graph optimization level (the runner's: all)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--top", type=int, default=16, help="op types listed")
    ap.add_argument("--flat-update", action="store_true",
                    help="update all parameters as one flat vector (irkit does for small models)")
    ap.add_argument("--nodes", type=int, default=0, help="slowest nodes listed")
    ap.add_argument("--torch", action="store_true", help="profile torch's step as well")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bf.export(args.model, folder)
        print(f"{args.model}, batch {args.batch or 'default'}, {args.threads} thread(s), "
              f"level {args.level}, {args.steps} profiled steps after {args.warmup}")
        print(irkit_tables(profile_irkit(args.model, folder, args), args.top, args.nodes))
        if args.torch:
            print(torch_table(profile_torch(args.model, folder, args), args.steps, args.top))


if __name__ == "__main__":
    main()
