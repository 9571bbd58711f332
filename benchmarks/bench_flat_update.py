"""The optimizer's update per parameter tensor against one flat vector, on fine-tuning steps.

    python benchmarks/bench_flat_update.py --model mobilenet_v2 --steps 6
    python benchmarks/bench_flat_update.py --model resnet18 --model bert --steps 4

For each model of bench_finetune.py (its weights and batch), irkit's AdamW step is built twice,
once with the update per parameter tensor and once flat (all parameters as one vector:
`irkit.train.step.use_flat_update`), each on onnxruntime's step runner at 1 intra-op thread;
the two take turns step by step (order alternating), and the median CPU time of the calling
thread per step is printed (with one thread that is the step's work, whatever else the
machine runs), with the last losses (equal: the same arithmetic).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_finetune as bf  # noqa: E402
import profile_step as ps  # noqa: E402


def runners(name: str, folder: str) -> dict:
    """{flat: (runner, staged batch)} for the model, both warmed up (two steps)."""
    from irkit.runtimes import get_runtime

    from irkit.train import step

    x, y = ps.batch_of(name, None)
    made, limit = {}, step.FLAT_UPDATE_LIMIT
    for flat in (False, True):
        step.FLAT_UPDATE_LIMIT, mean = (2 ** 62, step.FLAT_TENSOR_MEAN) if flat else (0, 0)
        saved, step.FLAT_TENSOR_MEAN = step.FLAT_TENSOR_MEAN, mean
        try:
            graphs, state = ps.step_graphs(name, folder, x, y)
        finally:
            step.FLAT_UPDATE_LIMIT, step.FLAT_TENSOR_MEAN = limit, saved
        runner = get_runtime("onnxruntime").step_runner(graphs, state, threads=1,
                                                       batch_size=len(y))
        arrays = tuple(x.values())
        parts = runner.stage(arrays if len(arrays) > 1 else arrays[0], y)
        runner.step(*parts), runner.step(*parts)
        made[flat] = (runner, parts, len(graphs.params),
                      sum(state[p].size for p in graphs.params))
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", choices=bf.MODELS)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of each form")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.model or ["mobilenet_v2", "resnet18"]:
            bf.export(name, folder)
            made = runners(name, folder)
            times: dict[bool, list[float]] = {False: [], True: []}
            loss = {}
            for i in range(args.steps):
                for flat in (False, True) if i % 2 == 0 else (True, False):
                    runner, parts = made[flat][:2]
                    c0 = time.thread_time()
                    loss[flat] = runner.step(*parts)[0]
                    times[flat].append(time.thread_time() - c0)
            n, size = made[False][2:]
            per, flat = (statistics.median(times[f]) * 1e3 for f in (False, True))
            print(f"{name} ({n} tensors, {size} elements): per tensor {per:.0f} ms, flat "
                  f"{flat:.0f} ms CPU per step ({flat / per - 1:+.0%}); last losses "
                  f"{loss[False]:.6f} / {loss[True]:.6f}")


if __name__ == "__main__":
    main()
