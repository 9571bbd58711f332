"""What trains in a torch export by default: exactly torch's parameters (issue 18, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from irkit import ops
from irkit.ir import Graph
from irkit.onnx_io import load
from irkit.train.sources import choose_trainable


def test_a_one_unit_layers_bias_trains_and_elementwise_scalars_do_not():
    """MatMul then Add of a (1,) bias (dynamo's Linear(n, 1)) trains the bias; a (1,) or ()
    constant added to, multiplied with or raised against a computed value does not."""
    g = Graph("m")
    x = g.add_input("x", np.float32, ("N", 4))
    w = g.add_initializer("w", np.ones((4, 1), np.float32))
    b = g.add_initializer("b", np.zeros(1, np.float32))
    one = g.add_initializer("one", np.ones(1, np.float32))
    half = g.add_initializer("half", np.array(0.5, np.float32))
    three = g.add_initializer("three", np.array(3.0, np.float32))
    y = ops.Add(ops.MatMul(x, w), b)
    g.outputs.append(ops.Pow(ops.Mul(ops.Add(ops.Tanh(y), one), half), three))
    assert sorted(choose_trainable(g)) == ["b", "w"]


@pytest.mark.parametrize("kind", ["resnet", "mobilenet", "bert", "gpt2"])
def test_legacy_training_export_trains_torch_parameters(kind, tmp_path):
    """Exported by torch: BatchNorm running statistics and the exporter's scalars (GELU's
    exponent, attention scales, fills, ReLU6's bound) stay fixed; every parameter trains; the
    counts are equal."""
    pytest.importorskip("torch")
    tm = pytest.importorskip("tests.torch_models")
    if kind in ("bert", "gpt2"):
        pytest.importorskip("transformers")
    net, inputs = tm.make(kind)
    path = str(tmp_path / "m.onnx")
    tm.export(net, inputs, path, dynamo=False, training=True)
    graph = load(path)
    inits = {n: v.const for n, v in graph.initializers.items()}
    pieces = tm.parameters_in(net, inits)
    assert len(pieces) == len(list(net.parameters()))
    want = {n for ps in pieces.values() for n, _ in ps}
    got = set(choose_trainable(graph))
    assert got == want
    assert sum(inits[n].size for n in got) == sum(p.numel() for p in net.parameters())
