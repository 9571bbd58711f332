"""The benchmark's hand-written ONNX step does the same arithmetic as irkit's (no timings
here): after POOL steps of SGD or Adam from the same weights on the same batches, the same
losses and weights. (The other peers need torch or jax; the benchmark prints their first-step
losses beside irkit's.)"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from bench_train_step import CONFIGS, IRKIT_NAMES, IrkitLoopPeer, initial_weights  # noqa: E402
from hand_step import HandPeer  # noqa: E402
from step_peers import POOL, make_batches  # noqa: E402

IRIS = {c.name: c for c in CONFIGS if c.name.startswith("iris")}


@pytest.mark.parametrize("name", sorted(IRIS))
def test_irkit_and_hand_written_step_agree(name):
    cfg = IRIS[name]
    data, weights = make_batches(cfg), initial_weights(cfg)
    irkit, hand = IrkitLoopPeer(cfg, data, 1), HandPeer(cfg, data, weights, 1)
    losses = [hand.call(i)[0] for i in range(POOL)]
    assert irkit.first() == pytest.approx(losses[0], rel=1e-5)  # runs POOL steps
    got = irkit.runner.read_state(IRKIT_NAMES.values())
    want = {k: v.numpy() for k, v in hand.sets[hand.current].items()}
    for short, full in IRKIT_NAMES.items():
        assert not np.allclose(want[short], weights[short])  # training moved them
        np.testing.assert_allclose(got[full], want[short], rtol=1e-4, atol=1e-5)

