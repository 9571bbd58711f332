"""`irkit grad` on a CNN with its loss, written by torch.onnx.export in training mode.

The model: Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d -> Flatten -> Linear -> LogSoftmax, then
NLLLoss (mean) on an int64 label input, so the exported output is the scalar loss. It is
exported with the TorchScript exporter (dynamo=False, opset 17) and
`training=TrainingMode.TRAINING, do_constant_folding=False`: BatchNormalization stays in the
graph in training mode (`training_mode=1`, three outputs: Y and the updated running mean and
variance), normalising with the batch's statistics as torch does in train().

What torch's exporter does with the loss: its peephole pass fuses LogSoftmax followed by
NLLLoss into one SoftmaxCrossEntropyLoss node (the "fused" model). Anything between the two
stops the fusion; the "unfused" model multiplies the log-probabilities by 1.0, which keeps
LogSoftmax and NegativeLogLikelihoodLoss as separate nodes. Both are checked.

For each, `irkit grad --of loss --wrt x,<every float initializer>` writes a model that passes
`onnx.checker.check_model(full_check=True)`, runs in onnxruntime, and gives the gradients of
torch autograd (float32, rtol 1e-4): for the input, every parameter, and zero for the running
statistics (in training mode the loss does not read them).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_grad_cli_torch import _run_gradient_model, _weight_names

from irkit.cli import main

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(17)
X = RNG.standard_normal((6, 2, 8, 8)).astype(np.float32)
LABELS = np.array([0, 3, 1, 2, 3, 1], dtype=np.int64)
RTOL, ATOL = 1e-4, 1e-6
LOSS_NODES = {"fused": ["SoftmaxCrossEntropyLoss"],
              "unfused": ["LogSoftmax", "NegativeLogLikelihoodLoss"]}


class CNNLoss(torch.nn.Module):
    """The CNN and its NLL loss; `fused=False` puts `* 1.0` between LogSoftmax and NLLLoss."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Flatten())
        self.head = torch.nn.Sequential(torch.nn.Linear(27, 4), torch.nn.LogSoftmax(dim=1))
        self.loss = torch.nn.NLLLoss()
        self.fused = fused
        bn = self.features[1]
        with torch.no_grad():  # not the default ones and zeros: every initializer distinct
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x, labels):
        logp = self.head(self.features(x))
        return self.loss(logp if self.fused else logp * 1.0, labels)


def _export(module: torch.nn.Module, path: str) -> None:
    module.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter and training= are deprecated
        torch.onnx.export(module, (torch.from_numpy(X), torch.from_numpy(LABELS)), path,
                          dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                          input_names=["x", "labels"], output_names=["loss"])


@pytest.fixture(scope="module", params=["fused", "unfused"])
def exported(request, tmp_path_factory):
    """(variant, module, path of its export)."""
    module = CNNLoss(fused=request.param == "fused")
    path = str(tmp_path_factory.mktemp("cnn") / f"cnn_{request.param}.onnx")
    _export(module, path)
    return request.param, module, path


def _float_initializers(path: str) -> list[str]:
    return [t.name for t in onnx.load(path).graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT]


def test_export_keeps_batch_normalization_in_training_mode(exported):
    variant, _, path = exported
    graph = onnx.load(path).graph
    ops_ = [n.op_type for n in graph.node]
    assert ops_[:5] == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten"], ops_
    assert [op for op in ops_ if op in ("SoftmaxCrossEntropyLoss", "LogSoftmax",
                                        "NegativeLogLikelihoodLoss")] == LOSS_NODES[variant]
    bn = graph.node[1]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bn.attribute}
    assert attrs.get("training_mode") == 1
    assert len(bn.output) == 3
    assert [o.name for o in graph.output] == ["loss"]
    assert [i.name for i in graph.input] == ["x", "labels"]


def _torch_gradients(module: CNNLoss) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    module.train()
    module.zero_grad()
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    loss = module(x, torch.from_numpy(LABELS))
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in module.named_parameters()}
    return loss.item(), x.grad.numpy(), grads


def test_grad_cli_matches_torch_autograd(exported, tmp_path):
    _, module, path = exported
    names = _weight_names(module, path)          # torch parameter -> initializer
    floats = _float_initializers(path)
    statistics = [n for n in floats if n not in names.values()]
    assert len(statistics) == 2, f"expected the running mean and variance, got {statistics}"
    out = str(tmp_path / "grad.onnx")
    result = CliRunner().invoke(main, ["grad", path, "--of", "loss", "--wrt",
                                       ",".join(["x", *floats]), "-o", out])
    assert result.exit_code == 0, result.output
    expected = ["loss", "x_grad", *(f"{n}_grad" for n in floats)]
    assert result.output.strip() == f"wrote {out}: outputs {', '.join(expected)}"

    got = _run_gradient_model(out, {"x": X, "labels": LABELS})  # full_check, then onnxruntime
    assert list(got) == expected
    loss, dx, dparams = _torch_gradients(module)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(got["x_grad"], dx, rtol=RTOL, atol=ATOL, err_msg="x_grad")
    for pname, init in names.items():
        np.testing.assert_allclose(got[f"{init}_grad"], dparams[pname], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{init}_grad ({pname})")
    for name in statistics:  # training mode: the loss does not read the running statistics
        np.testing.assert_array_equal(got[f"{name}_grad"], 0, err_msg=f"{name}_grad")
    # BatchNorm removes the per-channel mean, so the conv bias cannot change the loss
    np.testing.assert_allclose(got[f"{names['features.0.bias']}_grad"], 0, atol=1e-6)
