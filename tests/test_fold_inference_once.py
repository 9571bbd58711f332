"""Import folding runs onnx shape inference once per folding round: the static dims a Shape
gives and the symbolic shapes a computed Reshape needs come from one inference of the round's
model (tests/torch_models.py's BERT, legacy exporter: shapes computed from Shape nodes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.shape_inference
import pytest

from irkit.onnx_io import load
from irkit.onnx_io._compat import fold_constant_inputs

torch_models = pytest.importorskip("tests.torch_models")


@pytest.fixture(scope="module")
def bert_legacy(tmp_path_factory):
    net, inputs = torch_models.make("bert", loss=False)
    path = str(tmp_path_factory.mktemp("bert") / "bert.onnx")
    torch_models.export(net, inputs, path, dynamo=False, output="logits")
    return path, net, inputs


def test_one_inference_per_round(bert_legacy, monkeypatch):
    import irkit.onnx_io._compat as compat
    path, _, _ = bert_legacy
    real, whole, rounds = onnx.shape_inference.infer_shapes, [], []

    def counting(m, *args, **kwargs):
        if len(m.graph.node) > 1:  # the folding cap's size checks infer one-node models
            whole.append(len(m.graph.node))
        return real(m, *args, **kwargs)

    class Counted(compat._OpsetRewriter):  # one per folding round
        def __init__(self, model):
            rounds.append(1)
            super().__init__(model)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counting)
    monkeypatch.setattr(compat, "_OpsetRewriter", Counted)
    folded = fold_constant_inputs(onnx.load(path))
    assert len(rounds) >= 2  # the export computes shapes that fold over more than one round
    assert 1 <= len(whole) <= len(rounds), (whole, rounds)  # was two a round
    assert len(folded.graph.node) < len(onnx.load(path).graph.node)


def test_folded_bert_still_matches_torch(bert_legacy):
    import torch
    path, net, inputs = bert_legacy
    graph = load(path)
    from irkit.runtimes.onnxruntime import OrtGraph
    got = OrtGraph(graph)(inputs)[0]
    with torch.no_grad():
        want = net(*(torch.from_numpy(v) for v in inputs.values())).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
