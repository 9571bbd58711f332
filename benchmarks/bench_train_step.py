"""Time one train step (forward + backward + optimizer update) of irkit against its peers.

    python benchmarks/bench_train_step.py                 # the default configs, a table
    python benchmarks/bench_train_step.py --markdown      # the same as a markdown table
    python benchmarks/bench_train_step.py --json          # every figure as one JSON document
    python benchmarks/bench_train_step.py --config iris-adam --repeats 15 --scale 2

Model: x -> Dense(H, relu) -> Dense(C), mean softmax cross-entropy on integer labels; each
step also counts the correct predictions (the accuracy a training loop reports). Configs:
4-16-3/B16 with Adam (lr 0.01, the iris_mlp recipe's) and with SGD (lr 0.1), 784-256-10/B128
and 784-1024-10/B1024 with SGD and with Adam. Peers, each skipped with a message when its
framework is missing or fails:

  irkit          irkit's step graph (`build_step_graphs` + Adam()/SGD()) on its onnxruntime
                 StepRunner, timed through `runner.train(staged, order, batch)` over the POOL
                 batches: the loop `Model.fit` runs, POOL steps per call
  irkit.step     the same runner, one `runner.step(x, y)` per batch
  hand           a hand-written fused ONNX step (hand_step.py), same session options and
                 intra-op threads as irkit, same ping-pong IOBinding scheme
  torch          PyTorch eager: Linear/ReLU/Linear, CrossEntropyLoss, optim.Adam/SGD
  torch.compile  the same, loss function and optimizer step under torch.compile (mode
                 default); the first calls (compilation) are reported apart
  jax.jit        jax.jit of one step (state donated)
  jax.scan       jax.jit of lax.scan over the POOL batches: POOL steps per call

All start from irkit's initial weights and cycle through the same POOL batches in the same
order; the first step's losses are printed as a check. Per config: warm-up, then `repeats`
timed runs of `steps` steps per peer, the peers taking turns run by run; the table shows the
median time per step, [min-max] over the runs, and each peer's time over irkit's.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import os
import sys
import time

import numpy as np

from bench_common import cell, interleave, machine, machine_line, set_threads, stats, table
from bench_common import timed, torch_threads
from step_peers import POOL, Config, make_batches

SCC = "sparse_categorical_crossentropy"
CONFIGS = (Config("iris-adam", 16, 4, 16, 3, "adam", 0.01, 2000, 7),
           Config("iris-sgd", 16, 4, 16, 3, "sgd", 0.1, 2000, 7),
           Config("784-256-sgd", 128, 784, 256, 10, "sgd", 0.1, 96, 5),
           Config("784-256-adam", 128, 784, 256, 10, "adam", 0.001, 96, 5),
           Config("784-1024-sgd", 1024, 784, 1024, 10, "sgd", 0.1, 8, 5),
           Config("784-1024-adam", 1024, 784, 1024, 10, "adam", 0.001, 8, 5))
PEERS = ("irkit", "irkit.step", "hand", "torch", "torch.compile", "jax.jit", "jax.scan")
IRKIT_NAMES = {"W1": "dense_0.W", "b1": "dense_0.b", "W2": "dense_1.W", "b2": "dense_1.b"}


# ---- irkit ------------------------------------------------------------------------------------
def irkit_source(cfg: Config):
    """The config's MLP as irkit's ModuleSource (seeded: the same weights each time)."""
    from irkit.nn import Dense, Sequential
    from irkit.train.sources import ModuleSource
    return ModuleSource(Sequential([Dense(cfg.hidden, "relu"), Dense(cfg.classes)]),
                        (cfg.features,), seed=0)


def initial_weights(cfg: Config) -> dict[str, np.ndarray]:
    """irkit's initial weights (W as (in, out)) under the peers' names W1, b1, W2, b2."""
    w = irkit_source(cfg).weights()
    return {k: np.array(w[n]) for k, n in IRKIT_NAMES.items()}


def irkit_runner(cfg: Config, threads: int | None):
    """irkit's step graphs for `cfg` on an OrtStepRunner (threads None: irkit picks)."""
    from irkit.runtimes.onnxruntime import OrtStepRunner

    from irkit.train.losses import get_loss
    from irkit.train.optimizers import SGD, Adam
    from irkit.train.step import build_step_graphs
    source = irkit_source(cfg)
    optimizer = Adam() if cfg.optimizer == "adam" else SGD()
    graphs = build_step_graphs(source, get_loss(SCC), optimizer)
    state = graphs.initial_state(source.weights(), cfg.lr)
    return OrtStepRunner(graphs.train, graphs.eval, state, graphs.data_names, threads=threads,
                         batch_size=cfg.batch)


class IrkitLoopPeer:
    """`runner.train` over the POOL batches (staged once, order 0..n-1): Model.fit's loop."""

    name, steps_per_call = "irkit", POOL

    def __init__(self, cfg: Config, data, threads: int | None) -> None:
        self.runner, self.batch = irkit_runner(cfg, threads), cfg.batch
        x, y = data
        self.staged = self.runner.stage(x.reshape(-1, cfg.features), y.reshape(-1))
        self.order = np.arange(POOL * cfg.batch)

    def call(self, i: int):
        return self.runner.train(self.staged, self.order, self.batch)

    def first(self) -> float:
        losses: list[float] = []
        self.runner.train(self.staged, self.order, self.batch,
                          lambda index, loss: losses.append(loss))
        return losses[0]


class IrkitStepPeer:
    """One `runner.step(x, y)` per batch (the runner's per-step entry point)."""

    name, steps_per_call = "irkit.step", 1

    def __init__(self, cfg: Config, data, threads: int | None) -> None:
        self.runner = irkit_runner(cfg, threads)
        if not hasattr(self.runner, "step"):
            raise RuntimeError("this OrtStepRunner has no step(x, y)")
        self.xs, self.ys = list(data[0]), list(data[1])

    def call(self, i: int):
        return self.runner.step(self.xs[i % POOL], self.ys[i % POOL])

    def first(self) -> float:
        return self.call(0)[0]


# ---- building and timing the peers ------------------------------------------------------------
def make_peer(name: str, cfg: Config, data, weights, irkit_threads: int | None):
    """The peer called `name` (its framework is imported here, so a missing one fails here)."""
    if name == "irkit":
        return IrkitLoopPeer(cfg, data, irkit_threads)
    if name == "irkit.step":
        return IrkitStepPeer(cfg, data, irkit_threads)
    if name == "hand":
        from hand_step import HandPeer
        return HandPeer(cfg, data, weights, irkit_threads)
    if name.startswith("torch"):
        from step_peers import TorchPeer
        return TorchPeer(cfg, data, weights, compiled=name == "torch.compile")
    from step_peers import JaxJitPeer, JaxScanPeer
    return (JaxJitPeer if name == "jax.jit" else JaxScanPeer)(cfg, data, weights)


def start_peers(cfg: Config, names, irkit_threads: int | None, skipped: dict[str, str]):
    """Build each peer and run its first call: (peers, first-step losses, first-call
    seconds). A peer that cannot be built or run is skipped with its reason."""
    data, weights = make_batches(cfg), initial_weights(cfg)
    peers, first, startup = [], {}, {}
    for name in names:
        try:
            t0 = time.perf_counter()
            peer = make_peer(name, cfg, data, weights, irkit_threads)
            first[name] = peer.first()
            for i in range(1, 3):  # compilation may run again once state exists
                peer.call(i)
            startup[name] = time.perf_counter() - t0
        except Exception as e:  # a missing or broken framework: skip it, say why
            skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        peers.append(peer)
    return peers, first, startup


def run_length(peer, cfg: Config, args: argparse.Namespace) -> int:
    """Warm the peer up (~run_seconds / 4) and pick its steps per timed run: about
    `run_seconds` of work, at most cfg.steps x scale, at least POOL, a multiple of POOL."""
    spc, t0, calls = peer.steps_per_call, time.perf_counter(), 0
    while calls < 1 or time.perf_counter() - t0 < args.run_seconds / 4:
        peer.call(calls)
        calls += 1
    per_step = (time.perf_counter() - t0) / (calls * spc)
    most = max(POOL, int(cfg.steps * args.scale))
    return max(POOL, min(most, int(args.run_seconds / per_step)) // POOL * POOL)


def bench_config(cfg: Config, args: argparse.Namespace, names, skipped) -> dict:
    """Start, warm up and time every peer on one config; the figures as a dict."""
    peers, first, startup = start_peers(cfg, names, args.irkit_threads, skipped)
    repeats = args.repeats or cfg.repeats
    steps = {p.name: run_length(p, cfg, args) for p in peers}

    def runner(peer):
        n = steps[peer.name]
        calls = n // peer.steps_per_call
        return lambda: timed(lambda: [peer.call(i) for i in range(calls)]) / n
    times = interleave({p.name: runner(p) for p in peers}, repeats)
    result = {"config": cfg.name, "layers": [cfg.features, cfg.hidden, cfg.classes],
              "batch": cfg.batch, "optimizer": cfg.optimizer, "lr": cfg.lr, "steps": steps,
              "repeats": repeats, "seconds_per_step": {k: stats(v) for k, v in times.items()},
              "all_runs": times, "first_step_loss": first, "first_calls_seconds": startup}
    irkit = next((p for p in peers if p.name in ("irkit", "irkit.step")), None)
    result["irkit_threads"] = irkit.runner.threads if irkit is not None else None
    base = result["seconds_per_step"].get("irkit", {}).get("median")
    result["over_irkit"] = {k: v["median"] / base for k, v in
                            result["seconds_per_step"].items()} if base else {}
    return result


# ---- reporting ----------------------------------------------------------------------------------
def report(env: dict, results: list[dict], names, markdown: bool) -> str:
    """The tables (text or markdown), the first-step losses and the first calls' seconds."""
    shown = [n for n in names if any(n in r["seconds_per_step"] for r in results)]
    head = ["config", "irkit thr"] + shown
    rows = []
    for r in results:
        t = r["seconds_per_step"]
        rows.append([r["config"], str(r["irkit_threads"] or "ort default")]
                    + [cell(t[n]) if n in t else "-" for n in shown])
    ratio_rows = [[r["config"]] + [f"{r['over_irkit'][n]:.2f}" if n in r["over_irkit"]
                                   else "-" for n in shown] for r in results]
    lines = [f"train step, {env['machine_line']}",
             f"threads: torch {env['threads']}, jax {env['jax_threads']}, irkit and hand: "
             f"{env['irkit_threads']}",
             "", "microseconds per step, median [min-max] over the runs:", "",
             table(head, rows, markdown), "",
             "time per step over irkit's (below 1: faster than irkit):", "",
             table(["config"] + shown, ratio_rows, markdown), "",
             "first-step loss (the same start):"]
    for r in results:
        losses = ", ".join(f"{k} {v:.6f}" for k, v in r["first_step_loss"].items())
        lines.append(f"- {r['config']}: {losses}")
    lines.append("\nfirst three calls, seconds (build, compilation, first steps):")
    for r in results:
        lines.append(f"- {r['config']}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["first_calls_seconds"].items()))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--config", action="append", choices=[c.name for c in CONFIGS],
                   help="run only this config (repeatable; default: all)")
    p.add_argument("--peer", action="append", choices=PEERS,
                   help="run only this peer (repeatable; default: all; irkit always runs)")
    p.add_argument("--repeats", type=int, default=0, help="timed runs per peer (default: "
                   "7 for iris, 5 for the larger configs)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the most steps per run (2000 iris, 96 784-256, 8 784-1024)")
    p.add_argument("--run-seconds", type=float, default=0.15,
                   help="about how long one timed run of a peer lasts (default 0.15)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for torch and jax (default: all cores)")
    p.add_argument("--irkit-threads", type=int, default=None,
                   help="force irkit's (and hand's) onnxruntime intra-op threads (default: "
                        "what irkit's runner picks)")
    p.add_argument("--torch-compile-cold", action="store_true",
                   help="compile into an empty inductor cache (the compile time of a first "
                        "run; default: the user's cache, which may be warm)")
    args = p.parse_args(argv)
    if args.repeats < 0 or args.scale <= 0 or args.run_seconds <= 0 or args.threads < 1 or (
            args.irkit_threads is not None and args.irkit_threads < 1):
        p.error("--repeats >= 0, --scale > 0 and thread counts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the configs and print the tables or JSON; 0."""
    args = parse_args(argv)
    jax_threads = set_threads(args.threads)
    if args.torch_compile_cold:
        import tempfile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    torch_threads(args.threads)
    names = [n for n in PEERS if not args.peer or n in args.peer or n == "irkit"]
    configs = [c for c in CONFIGS if not args.config or c.name in args.config]
    skipped: dict[str, str] = {}
    results = [bench_config(c, args, names, skipped) for c in configs]
    env = {**machine(), "threads": args.threads, "jax_threads": jax_threads,
           "irkit_threads": args.irkit_threads or "irkit's choice (per config)",
           "skipped": skipped}
    env["machine_line"] = machine_line(env)
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
        return 0
    print(report(env, results, names, args.markdown))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
