"""Compile latency: from a recipe to the first train step ready to run, in-process.

    python benchmarks/bench_compile.py                     # iris_mlp, digits_mlp, digits_cnn
    python benchmarks/bench_compile.py --markdown --repeats 21
    python benchmarks/bench_compile.py --recipe digits_cnn --json

Per repeat, everything fresh (a new Model each time), the way `irkit train` starts:

  data      `irkit.cli.jobs.prepare(recipe)`: read the recipe, load the dataset, make the
            Model, resolve the settings, compile; then the seeded train/validation split
  graphs    `build_step_graphs` inside `Model.prepare`: the forward graphs, autodiff, the
            optimizer, the passes (train and eval graphs)
  to_onnx   the two graphs written as the ONNX bytes the sessions load (`session_bytes`:
            losses lowered, then irkit's own writer, irkit.onnx_io._wire)
  sessions  the two onnxruntime sessions (`make_session`)
  other     the rest of `Model.prepare(x, runner=True)`: scaling adapted on the data, the
            initial state, OrtValues and IOBindings
  total     data + `Model.prepare(x, runner=True)`: recipe to first step ready
  1st step  the first train step on the fresh runner (not in total)
  1st eval  its first evaluation (not in total; includes the eval session where the runner
            makes it on first use)

The stages inside `prepare` are timed by wrapping irkit's own functions in this process
(build_step_graphs, session_bytes, make_session), so they are the real path's parts. A first
repeat runs untimed (module imports and one-time registries; its total is reported as
"cold"), then --repeats timed ones; the table shows medians, [min-max] for the total.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import functools
import json
import sys
import time
from collections import defaultdict

import numpy as np

from bench_common import fmt_time, machine, machine_line, stats, table

RECIPES = ("iris_mlp", "digits_mlp", "digits_cnn")
STAGES = ("data", "graphs", "to_onnx", "sessions", "other", "total", "1st step", "1st eval")
_spent: dict[str, float] = defaultdict(float)


def _timing(stage: str, fn):
    """`fn`, adding the seconds each call takes to _spent[stage]."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[stage] += time.perf_counter() - t0
    return wrapper


def instrument() -> list[str]:
    """Wrap the stages' functions where irkit's model and runtime call them; returns the
    stages that could not be wrapped (their time then counts as `other`)."""
    import irkit.runtimes.onnxruntime as ort_runtime

    import irkit.train.model as model_module
    missing = []
    for module, attr, stage in ((model_module, "build_step_graphs", "graphs"),
                                (ort_runtime, "session_bytes", "to_onnx"),
                                (ort_runtime, "make_session", "sessions")):
        if hasattr(module, attr):
            setattr(module, attr, _timing(stage, getattr(module, attr)))
        else:
            missing.append(stage)
    return missing


def first_calls(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Seconds of the fresh runner's first train step and first evaluation (on the first
    batch; a runner may make its eval session only then)."""
    runner = model._runner
    batch = model.settings.batch_size
    staged = runner.stage(np.ascontiguousarray(x[:batch], np.float32),
                          model._targets(np.asarray(y[:batch]), "data"))
    t0 = time.perf_counter()
    runner.train(staged, np.arange(min(batch, len(x))), batch)
    t1 = time.perf_counter()
    runner.evaluate(staged, batch)
    return t1 - t0, time.perf_counter() - t1


def compile_once(recipe: str) -> dict[str, float]:
    """One fresh start of `recipe`; seconds per stage."""
    from irkit.cli.jobs import prepare
    from irkit.data import train_val_split
    _spent.clear()
    t0 = time.perf_counter()
    model, s, data = prepare(recipe, {})
    tr, _ = train_val_split(len(data.x), s.val_split, s.seed, data.y)
    x, y = data.x[tr], data.y[tr]
    t1 = time.perf_counter()
    model.prepare(x, runner=True)
    t2 = time.perf_counter()
    out = {"data": t1 - t0, **{k: _spent[k] for k in ("graphs", "to_onnx", "sessions")},
           "total": t2 - t0}
    out["other"] = (t2 - t1) - sum(_spent[k] for k in ("graphs", "to_onnx", "sessions"))
    out["1st step"], out["1st eval"] = first_calls(model, x, y)
    return out


def bench_recipe(recipe: str, repeats: int) -> dict:
    """One cold start, then `repeats` timed fresh starts of `recipe`; stage statistics."""
    cold = compile_once(recipe)
    runs = [compile_once(recipe) for _ in range(repeats)]
    return {"recipe": recipe, "cold_total": cold["total"],
            "seconds": {k: stats([r[k] for r in runs]) for k in STAGES}}


def report(env: dict, results: list[dict], markdown: bool) -> str:
    """The results as a table (text or markdown) under a header naming the machine."""
    head = ["recipe"] + [f"{k} ms" for k in STAGES] + ["cold ms"]
    rows = []
    for r in results:
        s = r["seconds"]
        total = f"{fmt_time(s['total']['median'], 'ms')} [{fmt_time(s['total']['min'], 'ms')}-" \
                f"{fmt_time(s['total']['max'], 'ms')}]"
        rows.append([r["recipe"]] + [total if k == "total" else fmt_time(s[k]["median"], "ms")
                                     for k in STAGES] + [fmt_time(r["cold_total"], "ms")])
    lines = [f"compile latency (recipe -> first step ready), {env['machine_line']}",
             f"medians of {env['repeats']} fresh starts in one process; cold: the first "
             "start in the process (imports, one-time registries)", "",
             table(head, rows, markdown)]
    if env["not_instrumented"]:
        lines.append(f"\nnot timed apart (counted in other): {env['not_instrumented']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", action="append", choices=RECIPES,
                   help="only this recipe (repeatable; default: all three)")
    p.add_argument("--repeats", type=int, default=11, help="timed fresh starts (median)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table or JSON; 0."""
    args = parse_args(argv)
    missing = instrument()
    results = [bench_recipe(r, args.repeats) for r in args.recipe or RECIPES]
    env = {**machine(), "repeats": args.repeats, "not_instrumented": missing}
    env["machine_line"] = machine_line(env)
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
    else:
        print(report(env, results, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
