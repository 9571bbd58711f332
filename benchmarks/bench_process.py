"""Time whole training runs: the `irkit train iris_mlp` process against PyTorch and JAX scripts
doing the same training, and the time per epoch inside a process.

    python benchmarks/bench_process.py                 # all three parts, tables
    python benchmarks/bench_process.py --markdown      # the tables as markdown
    python benchmarks/bench_process.py --json
    python benchmarks/bench_process.py --part process --runs 10

Parts:

  process   wall time of each whole process (python start-up, imports, data, build, 100
            epochs, writing the model), median of --runs, the three taking turns:
              irkit  `irkit train iris_mlp -o x.onnx`
              torch  benchmarks/peers/iris_torch.py (PyTorch eager)
              jax    benchmarks/peers/iris_jax.py (one jitted lax.scan per epoch)
            all: 4-16-3, Adam lr 0.01, batch 16, 100 epochs, 120 train / 30 validation
            samples validated each epoch, standard scaling, best weights written out;
            reference rows in parentheses: `python -c pass` and the imports alone
  epoch     iris_mlp per epoch inside a process (steps + validation + bookkeeping): irkit's
            `Model.fit(epochs=100)` (after a 1-epoch warm-up fit, so the graphs and sessions
            exist) / 100, against the JAX scan loop (compiled beforehand) and the PyTorch
            eager loop over 100 epochs / 100
  cnn       digits_cnn per epoch: irkit's `Model.fit` of the recipe against the same network
            in PyTorch eager (benchmarks/peers/digits_cnn_torch.py), the same split, Adam
            lr 0.003, batch 32, --cnn-epochs epochs per run

Every peer gets --threads threads (default: all cores; JAX: 1 or all cores); irkit picks its
own onnxruntime threads. Peers whose framework is missing are skipped with a message.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench_common import cell, interleave, machine, machine_line, optional, set_threads, stats
from bench_common import table, timed, torch_threads

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
sys.path.insert(0, PEERS)


# ---- whole processes ---------------------------------------------------------------------------
def irkit_command() -> list[str]:
    """The `irkit` next to this Python (a venv's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "irkit")
    return [beside if os.path.exists(beside) else shutil.which("irkit") or "irkit"]


def process_commands(folder: str, threads: int, skipped: dict[str, str]
                     ) -> dict[str, list[str]]:
    """The three training processes by name (a peer whose framework is missing is skipped)."""
    cmds = {"irkit": irkit_command() + ["train", "iris_mlp", "-o",
                                        os.path.join(folder, "x.onnx")]}
    for name, module, out in (("torch", "iris_torch.py", "t.pt"),
                              ("jax", "iris_jax.py", "j.npz")):
        if optional(name) is None:
            skipped[f"{name} (process)"] = f"{name} is not installed"
            continue
        cmds[name] = [sys.executable, os.path.join(PEERS, module), "-o",
                      os.path.join(folder, out), "--threads", str(threads)]
    return cmds


def reference_commands(names) -> dict[str, list[str]]:
    """What the processes spend before training: Python's start-up, and the imports."""
    cmds = {"(python start-up)": [sys.executable, "-c", "pass"],
            "(import irkit.cli, train)": [sys.executable, "-c",
                                          "import irkit.cli, irkit.cli.jobs"]}
    for name in ("torch", "jax"):
        if name in names:
            cmds[f"(import {name})"] = [sys.executable, "-c", f"import {name}"]
    return cmds


def run_process(cmd: list[str]) -> float:
    """Wall seconds of one run of `cmd` (its output discarded; a failure stops the bench)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench_process: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds


def bench_processes(args: argparse.Namespace, skipped: dict[str, str]) -> dict:
    """The whole processes (and the reference rows), each once untimed, then `runs` timed runs."""
    with tempfile.TemporaryDirectory() as folder:
        cmds = process_commands(folder, args.threads, skipped)
        cmds.update(reference_commands(cmds))
        for cmd in cmds.values():  # once untimed: file caches, __pycache__, jax/torch caches
            run_process(cmd)
        times = interleave({k: (lambda c=c: run_process(c)) for k, c in cmds.items()},
                           args.runs)
    return {"seconds": {k: stats(v) for k, v in times.items()}, "all_runs": times,
            "commands": {k: " ".join(c) for k, c in cmds.items()}}


# ---- iris per epoch ----------------------------------------------------------------------------
def irkit_recipe_model(recipe: str):
    """The recipe's Model and dataset, prepared as `irkit train` prepares them."""
    from irkit.cli.jobs import prepare
    model, settings, data = prepare(recipe, {})
    return model, settings, data


def irkit_epoch_runner(recipe: str, epochs: int):
    """A function timing `Model.fit(epochs)` per epoch, after a 1-epoch warm-up fit."""
    model, _, data = irkit_recipe_model(recipe)
    model.fit(data.x, data.y, epochs=1, verbose=0)
    return lambda: timed(lambda: model.fit(data.x, data.y, epochs=epochs, verbose=0)) / epochs


def jax_epoch_runner(epochs: int):
    """A function timing the JAX scan loop per epoch over `epochs` (compiled beforehand)."""
    import iris_jax
    from iris_data import load_iris
    data = load_iris()
    epoch_fn = iris_jax.make_epoch(len(data[0]), 16, 0.01)
    iris_jax.fit(data, 2, epoch_fn)  # compiles
    return lambda: timed(lambda: iris_jax.fit(data, epochs, epoch_fn)) / epochs


def torch_epoch_runner(build, data, epochs: int, batch: int, lr: float):
    """A function timing the PyTorch eager loop per epoch on a fresh `build()` model."""
    from torch_loop import fit
    fit(build(), data, 1, batch, lr)  # warm-up
    return lambda: timed(lambda: fit(build(), data, epochs, batch, lr)) / epochs


def bench_iris_epochs(args: argparse.Namespace, skipped: dict[str, str]) -> dict:
    """iris_mlp per epoch: irkit, the JAX scan loop and PyTorch eager, interleaved."""
    runners = {"irkit": irkit_epoch_runner("iris_mlp", args.epochs)}
    if optional("jax") is not None:
        runners["jax.scan"] = jax_epoch_runner(args.epochs)
    else:
        skipped["jax.scan"] = "jax is not installed"
    if optional("torch") is not None:
        import iris_torch
        from iris_data import load_iris
        runners["torch"] = torch_epoch_runner(iris_torch.build, load_iris(), args.epochs, 16,
                                              0.01)
    else:
        skipped["torch"] = "torch is not installed"
    times = interleave(runners, args.repeats)
    return {"epochs_per_run": args.epochs, "seconds_per_epoch":
            {k: stats(v) for k, v in times.items()}, "all_runs": times}


# ---- digits_cnn per epoch ----------------------------------------------------------------------
def digits_split():
    """digits as irkit's fit splits it (seed 0, 20% validation, stratified)."""
    from irkit.data import load_dataset, train_val_split
    data = load_dataset("digits")
    tr, va = train_val_split(len(data.x), 0.2, 0, data.y)
    return data.x[tr], data.y[tr], data.x[va], data.y[va]


def bench_cnn_epochs(args: argparse.Namespace, skipped: dict[str, str]) -> dict:
    """digits_cnn per epoch: irkit and PyTorch eager, interleaved."""
    runners = {"irkit": irkit_epoch_runner("digits_cnn", args.cnn_epochs)}
    if optional("torch") is not None:
        import digits_cnn_torch
        data = digits_split()
        runners["torch"] = torch_epoch_runner(lambda: digits_cnn_torch.build(data[0]), data,
                                              args.cnn_epochs, 32, 0.003)
    else:
        skipped["torch (cnn)"] = "torch is not installed"
    times = interleave(runners, args.repeats)
    return {"epochs_per_run": args.cnn_epochs, "seconds_per_epoch":
            {k: stats(v) for k, v in times.items()}, "all_runs": times}


# ---- reporting ----------------------------------------------------------------------------------
def ratio_table(figures: dict[str, dict[str, float]], unit: str, markdown: bool) -> str:
    """One row per framework: median [min-max] and its median over irkit's."""
    base = figures["irkit"]["median"]
    rows = [[k, cell(v, unit), f"{v['median'] / base:.2f}"] for k, v in figures.items()]
    return table(["framework", f"{unit}, median [min-max]", "over irkit"], rows, markdown)


def report(env: dict, results: dict, markdown: bool) -> str:
    """The parts' tables (text or markdown) under a header naming the machine."""
    lines = [f"training runs, {env['machine_line']}",
             f"threads: torch {env['threads']}, jax {env['jax_threads']}; irkit picks its own",
             ""]
    if "process" in results:
        lines += [f"whole process, 100 epochs of iris 4-16-3 (median of {env['runs']}):", "",
                  ratio_table(results["process"]["seconds"], "s", markdown), ""]
    if "epoch" in results:
        r = results["epoch"]
        lines += [f"iris_mlp per epoch in-process ({r['epochs_per_run']} epochs per run, "
                  f"median of {env['repeats']}):", "",
                  ratio_table(r["seconds_per_epoch"], "us", markdown), ""]
    if "cnn" in results:
        r = results["cnn"]
        lines += [f"digits_cnn per epoch ({r['epochs_per_run']} epochs per run, median of "
                  f"{env['repeats']}):", "", ratio_table(r["seconds_per_epoch"], "ms",
                                                         markdown), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", action="append", choices=("process", "epoch", "cnn"),
                   help="run only this part (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--runs", type=int, default=5, help="whole-process runs each (median)")
    p.add_argument("--repeats", type=int, default=3, help="in-process runs each (median)")
    p.add_argument("--epochs", type=int, default=100, help="iris epochs per in-process run")
    p.add_argument("--cnn-epochs", type=int, default=3, help="digits_cnn epochs per run")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for torch and jax (default: all cores)")
    args = p.parse_args(argv)
    if min(args.runs, args.repeats, args.epochs, args.cnn_epochs, args.threads) < 1:
        p.error("counts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print the tables or JSON; 0."""
    args = parse_args(argv)
    jax_threads = set_threads(args.threads)
    torch_threads(args.threads)
    parts = args.part or ["process", "epoch", "cnn"]
    skipped: dict[str, str] = {}
    results = {}
    if "process" in parts:
        results["process"] = bench_processes(args, skipped)
    if "epoch" in parts:
        results["epoch"] = bench_iris_epochs(args, skipped)
    if "cnn" in parts:
        results["cnn"] = bench_cnn_epochs(args, skipped)
    env = {**machine(), "threads": args.threads, "jax_threads": jax_threads,
           "runs": args.runs, "repeats": args.repeats, "skipped": skipped}
    env["machine_line"] = machine_line(env)
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
        return 0
    print(report(env, results, args.markdown))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
