"""Dropout's mask: a pure function of (seed, step, element), the same bit for bit on
onnxruntime and on the numpy reference, keeping 1 - rate of the elements, new every step."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.runtimes.onnxruntime import OrtGraph
from irkit.runtimes.reference import ReferenceRuntime

from irkit import Graph, ops
from irkit.nn.layers import keep_mask


def _mask_graph(seed: int, rate: float, shape=("N", 6, 50)) -> Graph:
    g = Graph("mask")
    x = g.add_input("x", np.float32, shape)
    step = g.add_input("step", np.int64, ())
    g.outputs = [ops.Cast(keep_mask(x, step, seed, rate), to=1)]
    return g


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_mask_is_exact_across_executors_and_keeps_1_minus_rate(rate):
    g = _mask_graph(seed=3, rate=rate)
    ort_run, ref_run = OrtGraph(g), ReferenceRuntime().compile(g)
    x = np.zeros((40, 6, 50), np.float32)
    masks = []
    for step in (0, 1, 2, 999, 65520, 65521, 10**9):
        a = ort_run({"x": x, "step": np.array(step)})[0]
        b = ref_run({"x": x, "step": np.array(step)})[0]
        np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
        assert abs(a.mean() - (1 - rate)) < 0.02, (step, a.mean())
        masks.append(a)
    for i in range(len(masks) - 1):  # a new mask every step
        assert np.mean(masks[i] != masks[i + 1]) > rate * (1 - rate)


def test_mask_depends_on_seed_and_has_no_visible_structure():
    x = np.zeros((64, 6, 50), np.float32)
    feeds = {"x": x, "step": np.array(7)}
    a = OrtGraph(_mask_graph(seed=0, rate=0.5))(feeds)[0].ravel()
    b = OrtGraph(_mask_graph(seed=1, rate=0.5))(feeds)[0].ravel()
    assert 0.4 < np.mean(a != b) < 0.6
    for lag in (1, 50, 300, 4096):  # neighbours, rows, samples, the index split
        assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < 0.05, lag
