"""Gradient checkpointing on the transformer rows of the model table (issue 18, item 6): the
measured peak memory of one train step, plain and with `--recompute sqrt`.

    python benchmarks/bench_checkpoint_table.py [--batch 256] [--strategy sqrt|BYTES] [--json]

The models are tests/torch_models.py's BERT classifier (with its attention mask), GPT-2 LM and
ViT (2 layers, hidden 16, 8 tokens / 17 patches), exported by both torch exporters as
tests/test_model_table.py exports them (legacy: training mode, no constant folding; dynamo:
eval mode, unoptimized), the loss as the output. The step is the one `irkit train --loss
output:loss --optimizer adam` runs: `irkit.train.build_step_graphs`, then, for the
checkpointed one, `apply_checkpointing` as `Model` applies `--recompute`. Memory by
irkit.runtimes.memory.measure_peak (a fresh child process, a CPU session made as irkit makes
it, 1 thread), three ways (see its docstring):

1. live: no arena and no memory pattern, every large block its own mapping: the bytes live at
   a run's peak, beside the estimate of them, `Memory.peak_bytes` (liveness over
   onnxruntime's order);
2. pattern: memory pattern on: the planned block, beside `Memory.planned_bytes` (the same
   lifetimes laid out best-fit);
3. train: memory pattern off, as `irkit train` runs a step (OrtStepRunner): the arena's growth
   over the first run, what training holds: (1) plus one-time allocations and the arena's
   fragmentation (no estimate: onnxruntime's allocator, not the graph).

(1) and (3) run the checkpointed step without the planner's memory reuse, as OrtStepRunner
does (runtimes.onnxruntime.recomputes).

The ratio is checkpointed over plain of (3), the memory a training run saves. Needs torch,
onnxscript and transformers.
"""

# irkit.runtimes installs from runtimes/, so isort cannot tell it is first-party
from __future__ import annotations  # noqa: I001

import argparse
import json
import os
import sys
import tempfile


from irkit.onnx_io import to_onnx
from irkit.passes.analysis import figures
from irkit.passes.checkpoint_activations import apply_checkpointing
from irkit.runtimes.memory import measure_peak
from irkit.runtimes.onnxruntime import recomputes
from irkit.train import build_step_graphs
from irkit.train.losses import get_loss
from irkit.train.loading import load_model
from irkit.train.optimizers import optimizer_from
from irkit.train.settings import resolve

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from bench_checkpoint import step_feeds  # noqa: E402

ROWS = [(kind, exporter) for kind in ("bert", "gpt2", "vit") for exporter in ("legacy", "dynamo")]


def step_graph(path: str, strategy: str | int, batch: int, optimizer: str = "adam"):
    """The train step of the exported model at `path` (its own loss output), checkpointed
    with `strategy` unless it is "none"; (graph, checkpoint count)."""
    settings = resolve({"loss": "output:loss", "optimizer": optimizer, "batch_size": batch})
    graphs = build_step_graphs(load_model(path).source, get_loss(settings.loss),
                               optimizer_from(settings))
    names = [] if strategy == "none" else apply_checkpointing(graphs.train, strategy, batch)
    return graphs.train, len(names)


def row(kind: str, exporter: str, strategy: str | int, batch: int, folder: str) -> dict:
    """Measured and estimated step peaks of one row, plain and checkpointed."""
    import torch_models as tm
    module, rows = tm.make(kind, batch=batch, dropout=0.0)
    path = os.path.join(folder, f"{kind}-{exporter}.onnx")
    legacy = exporter == "legacy"
    tm.export(module, {k: v[:2] for k, v in rows.items()}, path, dynamo=not legacy,
              training=legacy, optimize=False)
    result = {"model": kind, "exporter": exporter, "batch": batch}
    for label, how in (("plain", "none"), ("checkpointed", strategy)):
        graph, count = step_graph(path, how, batch)
        feeds = {**step_feeds(graph, batch), **{k: v for k, v in rows.items()
                                                if k in {i.name for i in graph.inputs}}}
        model = to_onnx(graph).SerializeToString()
        reuse = not recomputes(graph)  # as OrtStepRunner makes the session
        live = measure_peak(model, feeds, runs=2, memory_pattern=False, arena=False,
                            memory_reuse=reuse)
        planned = measure_peak(model, feeds, runs=2)["steady_bytes"]
        trained = measure_peak(model, feeds, runs=1, memory_pattern=False,
                               memory_reuse=reuse)["first_run_bytes"]
        memory = figures(graph, default=batch).peak
        result[label] = {"checkpoints": count, "measured_live_bytes": live["steady_bytes"],
                         "estimated_live_bytes": memory.peak_bytes,
                         "measured_peak_bytes": planned,
                         "estimated_peak_bytes": memory.planned_bytes,
                         "measured_train_bytes": trained}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--strategy", default="sqrt")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    strategy = args.strategy if args.strategy == "sqrt" else int(args.strategy)
    with tempfile.TemporaryDirectory() as folder:
        results = [row(k, e, strategy, args.batch, folder) for k, e in ROWS]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"batch {args.batch}, --recompute {args.strategy}: MiB, measured (estimated) for "
          "live (peak_bytes) and pattern (planned_bytes), measured for train")
    print("| model | exporter | checkpoints | plain: live | pattern | train | "
          "checkpointed: live | pattern | train | ratio (train) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        p, c = r["plain"], r["checkpointed"]
        print(f"| {r['model']} | {r['exporter']} | {c['checkpoints']} | {_cells(p)} | "
              f"{_cells(c)} | "
              f"{c['measured_train_bytes'] / max(p['measured_train_bytes'], 1):.2f} |")


def _cells(figures: dict) -> str:
    """The live, pattern and train cells of one step, in MiB."""
    mb = 1 << 20
    return (f"{figures['measured_live_bytes'] / mb:.2f} "
            f"({figures['estimated_live_bytes'] / mb:.2f}) | "
            f"{figures['measured_peak_bytes'] / mb:.2f} "
            f"({figures['estimated_peak_bytes'] / mb:.2f}) | "
            f"{figures['measured_train_bytes'] / mb:.2f}")


if __name__ == "__main__":
    main()
