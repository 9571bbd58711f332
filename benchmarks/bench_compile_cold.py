"""Cold compile latency: from a bundled recipe to the first train step ready to run, per
stage, each run in a fresh process, with the number of IR verifications.

    python benchmarks/bench_compile_cold.py [--runs 9] [--recipe digits_cnn ...] [--json]

(bench_compile.py times the same path in one process, warm after a first untimed repeat.)
Each run is a fresh Python process (imports are done before the clock starts, and are not
counted: `python -X importtime -c "import irkit"` measures those), so every run pays the
one-time costs a real `irkit train` pays (onnx's schema registry, numpy's first calls). The
stages are those of `irkit train RECIPE` up to its first step:

  data      recipe and dataset loaded, settings resolved, model made, train/validation split
  graphs    the train-step and evaluation graphs built (scaling adapted, forward, autodiff,
            optimizer, passes): `Model.prepare(x)`
  to_onnx   the graphs the step runner writes as ONNX bytes before its first step
            (`session_bytes`)
  sessions  the onnxruntime sessions (CPU) it creates before its first step (the train
            session; the evaluation session waits for the first evaluation)
  total     all of it, the rest of the runner's set-up (state OrtValues, bindings) included

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
    import irkit.runtimes.onnxruntime as ort_runtime
    from irkit.cli.jobs import prepare
    from irkit.data import train_val_split

    counts = {"verify": 0, "to_onnx": 0.0, "sessions": 0.0}
    real = {"verify": ir_verify.verify_graph, "to_onnx": ort_runtime.session_bytes,
            "sessions": ort_runtime.make_session}

    def counting_verify(graph):
        counts["verify"] += 1
        real["verify"](graph)

    def timed(key):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real[key](*args, **kwargs)
            finally:
                counts[key] += time.perf_counter() - t
        return call

    ir_verify.verify_graph = irkit.ir.verify_graph = counting_verify  # where Graph.verify looks
    ort_runtime.session_bytes, ort_runtime.make_session = timed("to_onnx"), timed("sessions")
    t0 = time.perf_counter()
    model, settings, data = prepare(recipe_name, {})
    train_idx, _ = train_val_split(len(data.x), settings.val_split, settings.seed, data.y)
    x = data.x[train_idx]
    t1 = time.perf_counter()
    model.prepare(x)  # the step graphs, scaling adapted on the training part
    t2 = time.perf_counter()
    verifications = counts["verify"]
    model.prepare(x, runner=True)  # the step runner: export, session(s), state
    t3 = time.perf_counter()
    ms = {"data": t1 - t0, "graphs": t2 - t1, "to_onnx": counts["to_onnx"],
          "sessions": counts["sessions"], "total": t3 - t0}
    return {"ms": {k: v * 1e3 for k, v in ms.items()}, "verifications": verifications}


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
