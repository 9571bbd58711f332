"""Steps per second of a training bundle (`irkit export --bundle`) outside irkit: onnxruntime-web
(WASM, one thread) under Node, against onnxruntime-Python running the same bundle by hand and
irkit's own `fit` (its onnxruntime runner), on the same batches.

    python benchmarks/bench_bundle.py [--steps 300] [--repeats 3] [--json]

Needs node and `npm ci` in js/ for the Node column (skipped with a message otherwise).
TensorFlow.js is not measured (not installed here; its Node backend downloads binaries).
Each figure is the best of --repeats runs. The Node figure is the harness's own loop time after
its first 10 steps (js/bundle-train.mjs `steady`: batches built from CSV rows and every step's
run; not Node's start, the sessions' creation or the WASM warm-up); the onnxruntime-Python
loop is timed from its first step (one thread); irkit's is its second epoch (its runner picks
its threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
JS = os.path.join(ROOT, "js")
CONFIGS = [("iris_mlp", "iris", 16), ("digits_cnn", "digits", 32)]


def make_bundle(recipe: str, folder: str) -> None:
    from click.testing import CliRunner

    from irkit.cli import main
    result = CliRunner().invoke(main, ["export", recipe, "--bundle", folder])
    if result.exit_code != 0:
        raise SystemExit(result.output)


def rows(dataset: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from irkit.data import load_dataset
    ds = load_dataset(dataset)
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(ds.y)), n))
    return ds.x[order].reshape(n, -1).astype(np.float32), ds.y[order].astype(np.int64)


def write_csv(path: str, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",label\n")
        for r, t in zip(x, y):
            f.write(",".join(repr(float(v)) for v in r) + f",{int(t)}\n")


def node_steps_per_second(folder: str, csv: str, steps: int, batch: int) -> float | None:
    if shutil.which("node") is None or not os.path.isdir(os.path.join(JS, "node_modules")):
        print("  node: skipped (needs node and `npm ci` in js/)", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["node", "bundle-train.mjs", folder, csv, os.path.join(tmp, "s"),
                               "--steps", str(steps), "--batch-size", str(batch)], cwd=JS,
                              capture_output=True, text=True, check=True)
    steady = json.loads(done.stdout.splitlines()[-1])["steady"]
    return steady["steps"] / steady["seconds"]


def python_steps_per_second(folder: str, x, y, steps: int, batch: int) -> float:
    import onnxruntime as ort

    from irkit.train.bundle import read_contract, read_state
    contract, state = read_contract(folder), read_state(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(os.path.join(folder, "train_step.onnx"), options)
    names = [o.name for o in session.get_outputs()]
    updates = contract["train_step"]["updates"]
    start = time.perf_counter()
    for i in range(steps):
        rows_ = slice(i * batch, (i + 1) * batch)
        out = dict(zip(names, session.run(None, {"input": x[rows_], "target": y[rows_],
                                                 **state})))
        state.update({name: out[nxt] for nxt, name in updates.items()})
    return steps / (time.perf_counter() - start)


def irkit_steps_per_second(folder: str, x, y, steps: int, batch: int) -> float:
    from irkit import load_model
    from irkit.train.callbacks import Callback

    class EpochTimer(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            self.seconds = time.perf_counter() - self.started

    timer = EpochTimer()
    model = load_model(folder)
    # two epochs of `steps` steps; the second is timed (the first builds and warms up)
    model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, validation_split=0.0,
              verbose=0, callbacks=[timer])
    return steps / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, dataset, batch in CONFIGS:
            folder, csv = os.path.join(tmp, recipe), os.path.join(tmp, recipe + ".csv")
            make_bundle(recipe, folder)
            x, y = rows(dataset, args.steps * batch)
            write_csv(csv, x, y)
            figures = {
                "onnxruntime-web (Node, WASM)": [node_steps_per_second(
                    folder, csv, args.steps, batch) for _ in range(args.repeats)],
                "onnxruntime-Python (bundle)": [python_steps_per_second(
                    folder, x, y, args.steps, batch) for _ in range(args.repeats)],
                "irkit fit": [irkit_steps_per_second(folder, x, y, args.steps, batch)
                              for _ in range(args.repeats)]}
            for peer, runs in figures.items():
                best = max([r for r in runs if r is not None], default=None)
                table.append({"model": recipe, "batch": batch, "peer": peer,
                              "steps_per_second": best})
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'model':12} {'batch':>5}  {'peer':30} {'steps/s':>9}")
    for row in table:
        sps = "skipped" if row["steps_per_second"] is None else f"{row['steps_per_second']:.0f}"
        print(f"{row['model']:12} {row['batch']:>5}  {row['peer']:30} {sps:>9}")


if __name__ == "__main__":
    main()
