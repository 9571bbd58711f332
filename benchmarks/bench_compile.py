"""Compile latency: from a bundled recipe to the first train step ready to run, per stage.

    python benchmarks/bench_compile.py [--runs 9] [--recipe digits_cnn ...] [--json]

Each run is a fresh Python process (imports are done before the clock starts, and are not
counted: `python -X importtime -c "import irkit"` measures those), so every run pays the
one-time costs a real `irkit train` pays (onnx's schema registry, numpy's first calls). The
stages are those of the first `fit` call:

  data      recipe and dataset loaded, train/validation split, scalers fitted
  graphs    the train-step and evaluation graphs built (forward, autodiff, optimizer, passes)
  to_onnx   both graphs exported to ModelProtos, as the trainer exports them
  sessions  both onnxruntime sessions created (CPU)

The table shows per recipe the median of each stage over the runs (ms), and the number of
full IR verifications (`Graph.verify`) the graph stage ran.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import statistics
import subprocess
import sys
import time

RECIPES = ("iris_mlp", "digits_mlp", "digits_cnn")
STAGES = ("data", "graphs", "to_onnx", "sessions")


def _one(recipe_name: str) -> dict:
    """Time the stages once, in this process; returns ms per stage and the verification count."""
    import irkit.ir  # noqa: I001  (irkit.runtimes: see the top)
    import irkit.ir_verify as ir_verify
    from irkit.data import load_dataset, train_val_split
    from irkit.onnx_io import to_onnx
    from irkit.runtimes.onnxruntime import make_session
    from irkit.spec import load_recipe
    from irkit.train.losses import get_loss
    from irkit.train.optimizers import get_optimizer
    from irkit.train.session import model_from_recipe
    from irkit.train.step import build_step_graphs

    verifications = [0]
    real_verify = ir_verify.verify_graph

    def counting_verify(graph):
        verifications[0] += 1
        real_verify(graph)

    ir_verify.verify_graph = counting_verify  # where Graph.verify finds it, old and new
    if hasattr(irkit.ir, "verify_graph"):
        irkit.ir.verify_graph = counting_verify
    times = {}
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_name)
    data = load_dataset(recipe.data["dataset"])
    train_idx, _ = train_val_split(len(data.x), float(recipe.data["val_split"]),
                                   int(recipe.train["seed"]), data.y)
    model = model_from_recipe(recipe, data)
    model.ensure_input(data.x)
    model.fit_scalers(data.x[train_idx])
    t1 = time.perf_counter()
    optimizer = get_optimizer(recipe.train["optimizer"], lr=float(recipe.train["lr"]))
    graphs = build_step_graphs(model, get_loss(recipe.train["loss"]), optimizer)
    t2 = time.perf_counter()
    built_verifications = verifications[0]
    protos = [to_onnx(graphs.train).SerializeToString(), to_onnx(graphs.eval).SerializeToString()]
    t3 = time.perf_counter()
    for proto in protos:
        make_session(proto, "cpu")
    t4 = time.perf_counter()
    for name, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
        times[name] = (b - a) * 1e3
    times["total"] = (t4 - t0) * 1e3
    return {"ms": times, "verifications": built_verifications}


def _runs(recipe: str, runs: int) -> dict:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--one", recipe], check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out))
    ms = {k: statistics.median(r["ms"][k] for r in results) for k in (*STAGES, "total")}
    return {"recipe": recipe, "runs": runs, "median_ms": ms,
            "total_range_ms": [min(r["ms"]["total"] for r in results),
                               max(r["ms"]["total"] for r in results)],
            "verifications": results[0]["verifications"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="append", choices=RECIPES, help="default: all three")
    ap.add_argument("--runs", type=int, default=9, help="fresh processes per recipe")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one)))
        return
    rows = [_runs(r, args.runs) for r in args.recipe or RECIPES]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'recipe':12} " + " ".join(f"{s:>9}" for s in (*STAGES, "total"))
          + "   [min-max]  verify")
    for r in rows:
        ms = r["median_ms"]
        lo, hi = r["total_range_ms"]
        print(f"{r['recipe']:12} " + " ".join(f"{ms[s]:9.1f}" for s in (*STAGES, "total"))
              + f"   [{lo:.0f}-{hi:.0f}]  {r['verifications']:6d}")
    print(f"(ms, median of {args.runs} fresh processes each; verify: full IR verifications "
          "while building the step graphs)")


if __name__ == "__main__":
    main()
