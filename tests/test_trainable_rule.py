"""What trains in a torch export by default: exactly torch's parameters (issue 18, item 3)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
tm = pytest.importorskip("tests.torch_models")

from irkit.onnx_io import load  # noqa: E402
from irkit.train.sources import choose_trainable  # noqa: E402


@pytest.mark.parametrize("kind", ["resnet", "mobilenet", "bert", "gpt2"])
def test_legacy_training_export_trains_torch_parameters(kind, tmp_path):
    """BatchNorm running statistics and the exporter's scalars (GELU's exponent, attention
    scales, fills, ReLU6's bound) stay fixed; every parameter trains; the counts are equal."""
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
