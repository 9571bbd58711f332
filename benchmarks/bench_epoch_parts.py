"""Where an Iris epoch of `irkit train iris_mlp` goes: onnxruntime's runs against irkit's own
Python (the batch loop, validation, the trainer's bookkeeping).

    python benchmarks/bench_epoch_parts.py [--repeats 5]

Rows (microseconds per epoch of 120 training and 30 validation flowers, batch 16, Adam;
medians of the repeats, each 200 epochs):
  raw8   8 bare `run_with_iobinding` calls of the train session: onnxruntime alone
  train  `runner.train` of one epoch: the above plus binding, copies and the batch loop
  eval   `runner.evaluate` of the validation part
  fit    one epoch of `Model.fit` (100 per run): all of it, as `irkit train` runs it
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import irkit
from irkit import nn
from irkit.data import load_dataset


def _per_epoch(fn, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_dataset("iris")
    model = irkit.Sequential([nn.Normalize("standard"), nn.Dense(16, activation="relu"),
                              nn.Dense(3)])
    model.compile(optimizer="adam", lr=0.01, seed=1)
    model.fit(data.x, data.y, epochs=1, batch_size=16, verbose=0)
    runner = model._runner
    train = runner.stage(data.x[:120].astype(np.float32), data.y[:120])
    val = runner.stage(data.x[120:].astype(np.float32), data.y[120:])
    order = np.random.default_rng(0).permutation(120)
    session = runner.train_session
    runner._batch_buffers(16, train)
    io = runner._slot(0, 16)[0]

    def raw8():
        for _ in range(8):
            session.run_with_iobinding(io)
    parts = {"raw8": lambda: _per_epoch(raw8, 200),
             "train": lambda: _per_epoch(lambda: runner.train(train, order, 16), 200),
             "eval": lambda: _per_epoch(lambda: runner.evaluate(val, 256), 200),
             "fit": lambda: _per_epoch(lambda: model.fit(data.x, data.y, epochs=100,
                                                         batch_size=16, verbose=0), 1) / 100}
    times = {k: [] for k in parts}
    for _ in range(args.repeats):  # the parts take turns, run by run
        for name, measure in parts.items():
            times[name].append(measure())
    for name, values in times.items():
        print(f"{name:6s} {statistics.median(values):8.1f} us per epoch")


if __name__ == "__main__":
    main()
