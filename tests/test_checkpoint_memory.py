"""Gradient checkpointing (same gradients, less measured memory) and the peak-memory estimate
against onnxruntime's measured peak.

How memory is measured (`irkit.runtimes.memory.measure_peak`): a child process makes the CPU
session exactly as irkit does (ORT_ENABLE_ALL, CPU arena and memory patterns on, 1 thread),
runs once to warm up, resets the kernel's peak-RSS mark (/proc/self/clear_refs "5"), runs
again and reports VmHWM minus the resident size before that run (`steady_bytes`). The batch is
large, so activations dominate what the run allocates. The estimate compared is
`Memory.planned_bytes`: the schedule's lifetimes laid out best-fit in one address range.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from irkit.passes.analysis import figures
from irkit.passes.checkpoint_activations import RECOMPUTE, apply_checkpointing
from irkit.runtimes.memory import measure_peak
from irkit.runtimes.onnxruntime import make_session

from irkit.nn import Sequential
from irkit.nn.layers import Dense
from irkit.onnx_io import to_onnx
from irkit.train.sources import ModuleSource

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from bench_checkpoint import step_feeds, step_graph  # noqa: E402

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="measuring memory needs Linux /proc")


def test_checkpointing_keeps_gradients_identical():
    plain, checkpointed = step_graph(12, 32), step_graph(12, 32)
    names = apply_checkpointing(checkpointed, "sqrt")
    checkpointed.verify()
    assert len(names) >= 3
    assert any(n.name.startswith(RECOMPUTE) for n in checkpointed.nodes)
    count = len(checkpointed.nodes)
    assert apply_checkpointing(checkpointed, "sqrt") == [] and len(checkpointed.nodes) == count
    feeds = step_feeds(plain, 16)
    want = make_session(to_onnx(plain).SerializeToString()).run(None, feeds)
    got = make_session(to_onnx(checkpointed).SerializeToString()).run(None, feeds)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)  # the same arithmetic, bit for bit


def test_onnxruntime_keeps_every_recomputed_node(tmp_path):
    # common subexpression elimination runs from ORT_ENABLE_BASIC on; without the gate it
    # merged the copies back into the forward nodes (the measured peak did not drop)
    import onnx
    import onnxruntime as ort
    graph = step_graph(12, 32)
    apply_checkpointing(graph, "sqrt")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(to_onnx(graph).SerializeToString(), options,
                         providers=["CPUExecutionProvider"])
    kept = {n.name for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    copies = [n.name for n in graph.nodes if n.name.startswith(RECOMPUTE)]
    assert len(copies) > 12 and [n for n in copies if n not in kept] == []


def test_budget_strategy_and_no_backward():
    tight, loose = step_graph(8, 16), step_graph(8, 16)
    # at batch 16 a layer keeps 16 * 16 * 4 bytes: a budget of two layers' worth
    names = apply_checkpointing(tight, 2 * 16 * 16 * 4, batch=16)
    assert len(names) >= 2 and apply_checkpointing(loose, 10**12, batch=16) == []
    forward = ModuleSource(Sequential([Dense(8, "relu"), Dense(3)]), (4,), seed=0).build()
    count = len(forward.nodes)
    assert apply_checkpointing(forward) == [] and len(forward.nodes) == count


@linux_only
def test_checkpointing_lowers_the_estimate_and_the_measured_peak():
    batch = 1024
    plain, checkpointed = step_graph(16, 256), step_graph(16, 256)
    apply_checkpointing(checkpointed, "sqrt", batch)
    feeds = step_feeds(plain, batch)
    est = [figures(g, default=batch).peak.planned_bytes for g in (plain, checkpointed)]
    measured = [measure_peak(to_onnx(g).SerializeToString(), feeds, runs=1)["steady_bytes"]
                for g in (plain, checkpointed)]
    assert est[1] < 0.6 * est[0]
    assert measured[1] < 0.6 * measured[0]  # onnxruntime kept the recomputation separate
    assert abs(est[1] - measured[1]) <= 0.2 * measured[1], (est, measured)


@linux_only
@pytest.mark.parametrize("case", ["mlp20", "digits_cnn"])
def test_peak_estimate_within_20_percent_of_onnxruntime(case):
    if case == "mlp20":
        graph, batch = step_graph(20, 256), 2048
    else:
        from irkit.cli.jobs import export_graph
        graph, batch = export_graph("digits_cnn", True, None, None, None), 2048
    peak = figures(graph, default=batch).peak
    # the live bytes are a lower bound; the best-fit layout adds fragmentation, as ORT's does
    assert peak.peak_bytes <= peak.planned_bytes
    estimate = peak.planned_bytes
    measured = measure_peak(to_onnx(graph).SerializeToString(), step_feeds(graph, batch),
                            runs=2)["steady_bytes"]
    assert abs(estimate - measured) <= 0.2 * measured, (estimate, measured)


def test_recompute_setting_is_checked():
    from irkit.errors import SpecError
    from irkit.train.settings import DEFAULTS, resolve
    assert DEFAULTS.recompute == "none"
    assert resolve({"recompute": "sqrt"}).recompute == "sqrt"
    assert resolve({"recompute": 1 << 20}).recompute == 1 << 20
    assert resolve({"recompute": "4096"}).recompute == 4096  # from a command line
    for bad in ("all", 0, -5, 1.5, True, "0", "-3"):
        with pytest.raises(SpecError, match="recompute"):
            resolve({"recompute": bad})


def test_recompute_setting_reaches_the_trained_step():
    """`fit(recompute="sqrt")` (recipe key and --recompute alike) trains the checkpointed step
    graph, and it trains to the same weights as the plain one."""
    import irkit
    from irkit.nn import Dense
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    runs = {}
    for recompute in ("none", "sqrt"):
        model = irkit.Sequential([Dense(16, activation="relu") for _ in range(6)] + [Dense(3)])
        model.compile(optimizer="sgd", lr=0.05, seed=0)
        model.fit(x, y, epochs=2, verbose=0, recompute=recompute)
        names = [n.name for n in model._graphs.train.nodes]
        assert any(n.startswith(RECOMPUTE) for n in names) == (recompute == "sqrt")
        runs[recompute] = model.get_weights()
    for name, value in runs["none"].items():
        np.testing.assert_array_equal(runs["sqrt"][name], value, err_msg=name)
