"""Steps per second of a training bundle (`irkit export --bundle`) outside irkit: onnxruntime-web
(WASM, one thread) under Node, against onnxruntime-Python running the same bundle by hand,
irkit's own `fit` (its onnxruntime runner), and TensorFlow.js under Node on the same model
built with tf.layers (its pure-JS `cpu` backend and its `wasm` backend, one thread). The
`--target web` bundle (the forms onnxruntime-web's WebGPU provider runs whole) is timed on
WASM too: what the lowering costs where it is not needed.

    python benchmarks/bench_bundle.py [--steps 300] [--repeats 3] [--tfjs-cnn-steps 40] [--json]

Needs node and `npm ci` in js/ for the onnxruntime-web column, `npm ci` in benchmarks/js/ for
TensorFlow.js (@tensorflow/tfjs, @tensorflow/tfjs-backend-wasm; not installed by CI); a missing
peer is skipped with a message. TensorFlow.js's wasm backend has no Conv2DBackpropFilter
kernel, so it cannot train the CNN (reported, not timed); its cpu backend trains it slowly,
so it runs --tfjs-cnn-steps steps only. Each figure is the median (and the best) of --repeats
runs, with its ratio to onnxruntime-web's median. The Node
figures are steady loops after their first 10 steps (batches built from rows and every step's
loss read back; not Node's start, the sessions' creation or the warm-up); the
onnxruntime-Python loop is timed from its first step (one thread); irkit's is its second epoch
(its runner picks its threads).
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
TFJS = os.path.join(ROOT, "benchmarks", "js")
CONFIGS = [("iris_mlp", "iris", 16), ("digits_cnn", "digits", 32)]


def make_bundle(recipe: str, folder: str, target: str = "default") -> None:
    from click.testing import CliRunner

    from irkit.cli import main
    result = CliRunner().invoke(main, ["export", recipe, "--bundle", folder, "--target", target])
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


def tfjs_steps_per_second(recipe: str, steps: int, batch: int, backend: str) -> float | str:
    """TensorFlow.js's steady steps/s, or why it has none."""
    if shutil.which("node") is None or not os.path.isdir(os.path.join(TFJS, "node_modules")):
        return "skipped (needs node and `npm ci` in benchmarks/js/)"
    done = subprocess.run(["node", "tfjs-train.mjs", recipe, str(steps), str(batch), backend],
                          cwd=TFJS, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1].replace("tfjs-train: error: ", "")
    steady = json.loads(done.stdout.strip().splitlines()[-1])["steady"]
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
    parser.add_argument("--tfjs-cnn-steps", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, dataset, batch in CONFIGS:
            folder, csv = os.path.join(tmp, recipe), os.path.join(tmp, recipe + ".csv")
            make_bundle(recipe, folder)
            make_bundle(recipe, folder + "_web", "web")
            x, y = rows(dataset, args.steps * batch)
            write_csv(csv, x, y)
            figures = peers(recipe, folder, csv, x, y, batch, args)
            for peer, run in figures.items():
                table.append({"model": recipe, "batch": batch, "peer": peer,
                              **summary(run, args.repeats)})
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print_table(table)


def print_table(table: list[dict]) -> None:
    """Median and best steps/s of each peer, and its median over onnxruntime-web's."""
    print(f"{'model':12} {'batch':>5}  {'peer':30} {'median':>9} {'best':>9} {'x ort-web':>9}")
    web = {r["model"]: r["median"] for r in table if r["peer"].startswith("onnxruntime-web")}
    for row in table:
        median, best = row["median"], row["best"]
        if not isinstance(median, float):
            print(f"{row['model']:12} {row['batch']:>5}  {row['peer']:30} {median or 'skipped'}")
            continue
        ratio = median / web[row["model"]] if isinstance(web.get(row["model"]), float) else None
        ratio = f"{ratio:.2f}" if ratio else "-"
        print(f"{row['model']:12} {row['batch']:>5}  {row['peer']:30} {median:>9.1f} "
              f"{best:>9.1f} {ratio:>9}")


def peers(recipe: str, folder: str, csv: str, x, y, batch: int, args) -> dict:
    """Each peer's name and its measurement (a call returning steps/s or why none)."""
    from functools import partial
    tf_steps = args.steps if recipe == "iris_mlp" else args.tfjs_cnn_steps
    return {
        "onnxruntime-web (Node, WASM)": partial(node_steps_per_second, folder, csv, args.steps,
                                                batch),
        "  same, --target web bundle": partial(node_steps_per_second, folder + "_web", csv,
                                               args.steps, batch),
        "onnxruntime-Python (bundle)": partial(python_steps_per_second, folder, x, y,
                                               args.steps, batch),
        "irkit fit": partial(irkit_steps_per_second, folder, x, y, args.steps, batch),
        "TensorFlow.js (Node, cpu)": partial(tfjs_steps_per_second, recipe, tf_steps, batch,
                                             "cpu"),
        "TensorFlow.js (Node, wasm)": partial(tfjs_steps_per_second, recipe, tf_steps, batch,
                                              "wasm")}


def summary(run, repeats: int) -> dict:
    """The median and best of `repeats` runs of `run` (steps/s) and every run; or, as median,
    the reason it gave for having none (None: skipped)."""
    runs = [run() for _ in range(repeats)]
    figures = [r for r in runs if isinstance(r, float)]
    if figures:
        return {"median": float(np.median(figures)), "best": max(figures), "runs": figures}
    return {"median": next((r for r in runs if isinstance(r, str)), None), "best": None,
            "runs": []}


if __name__ == "__main__":
    main()
