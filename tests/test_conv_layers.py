"""Image and normalisation layers: Conv2D, pools, BatchNorm (running statistics carried by
the train graph), LayerNorm, and the digits CNN recipe."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from irkit.runtimes.onnxruntime import OrtGraph
from irkit.runtimes.reference import ReferenceRuntime

from irkit.cli import main
from irkit.nn import (
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    Reshape,
    Sequential,
)
from irkit.onnx_io import to_onnx
from irkit.train import SGD, ModuleSource, build_step_graphs, get_loss
from irkit.train import Sequential as Model


def _cnn() -> Sequential:
    return Sequential([Reshape([1, 6, 6]), Conv2D(4, 3), BatchNorm(), Activation("relu"),
                       MaxPool2D(2), Conv2D(4, 3, padding="same"), AvgPool2D(1),
                       GlobalAvgPool2D(), LayerNorm(), Dense(3)])


def test_cnn_train_step_same_on_onnxruntime_and_reference():
    model = ModuleSource(_cnn(), (36,), seed=1)
    graphs = build_step_graphs(model, get_loss("cross_entropy"), SGD(momentum=0.9))
    g = graphs.train
    assert graphs.buffers == ["batchnorm_2.running_mean", "batchnorm_2.running_var"]
    assert {f"next/{b}" for b in graphs.buffers} <= {v.name for v in g.outputs}
    assert all(n.domain == "" for n in g.nodes)
    onnx.checker.check_model(to_onnx(g), full_check=True)
    rng = np.random.default_rng(0)
    feeds = graphs.initial_state(model.weights(), lr=0.1)
    assert set(feeds) | {"input", "target"} == {v.name for v in g.inputs}
    feeds.update(input=rng.normal(size=(5, 36)).astype(np.float32),
                 target=np.array([0, 1, 2, 1, 0]))
    ort_out = OrtGraph(g)(feeds)
    ref_out = ReferenceRuntime().compile(g)(feeds)
    for name, a, b in zip([v.name for v in g.outputs], ort_out, ref_out):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_batchnorm_running_stats_follow_the_data_and_inference_uses_them():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 2)) * [3.0, 0.5] + [5.0, -1.0]).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int64)
    bn = BatchNorm(momentum=0.5)
    model = Model([bn, Dense(2)])
    model.compile(loss="cross_entropy", optimizer="sgd", lr=0.01)
    model.fit(x, y, epochs=20, batch_size=64, shuffle=False, keep_best=False,
              validation_split=0)
    np.testing.assert_allclose(bn.weights["running_mean"], x.mean(0), rtol=1e-3)
    np.testing.assert_allclose(bn.weights["running_var"], x.var(0), rtol=1e-2)
    graph = model.to_graph()
    assert "BatchNormalization" in [n.op_type for n in graph.nodes]
    assert "ReduceMean" not in [n.op_type for n in graph.nodes]  # batch stats only in training
    gamma, beta = bn.weights["gamma"], bn.weights["beta"]
    dense = model.layers[1].weights
    manual = ((x - bn.weights["running_mean"]) / np.sqrt(bn.weights["running_var"] + 1e-5)
              * gamma + beta) @ dense["W"] + dense["b"]
    np.testing.assert_allclose(model.predict(x), manual, rtol=1e-4, atol=1e-4)


def test_layer_shape_errors_are_clear():
    with pytest.raises(Exception, match="needs \\(N, C, H, W\\)"):
        Model([Conv2D(2, 3)]).predict(np.zeros((2, 5), np.float32))


def test_digits_cnn_recipe_reaches_098(tmp_path):
    out = tmp_path / "cnn.onnx"
    r = CliRunner().invoke(main, ["train", "digits_cnn", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["final"]["val_accuracy"] >= 0.98
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool"} <= ops and "Dropout" not in ops


def test_flatten_and_conv_layers_in_inference_graph():
    m = Model([Reshape([1, 4, 4]), Conv2D(2, 3, padding="valid", activation="relu"),
               Flatten(), Dense(2)])
    out = m.predict(np.ones((3, 16), np.float32))
    assert out.shape == (3, 2)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_float16_convs_round_once(op):
    # the numpy reference multiplies and sums float16 data in float32, rounding once at the
    # end (as onnxruntime's kernels do): equal to the float32 result rounded to float16
    from irkit import ops
    from irkit.ir import Graph
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 9)).astype(np.float16)
    w = rng.normal(size=(4, 2, 3)).astype(np.float16)
    results = []
    for dtype in (np.float16, np.float32):
        g = Graph(op)
        v = g.add_input("x", dtype, x.shape)
        g.outputs = [getattr(ops, op)(v, w.astype(dtype), group=2, kernel_shape=[3])]
        results.append(ReferenceRuntime().compile(g)({"x": x.astype(dtype)})[0])
    half, single = results
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, single.astype(np.float16))
