"""Fine-tuning models irkit did not write: PyTorch exports (legacy and dynamo) of an MLP and a
CNN import, round-trip with equal outputs, and train on the digits data to >= 0.95."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from irkit.cli import main
from irkit.onnx_io import from_onnx, to_onnx

torch = pytest.importorskip("torch")


class _Cnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = x.reshape(-1, 1, 8, 8) / 16.0
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _export(model, path, dynamo: bool) -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 64) * 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["pixels"],
                              output_names=["scores"],
                              dynamic_shapes=({0: torch.export.Dim("N", min=1)},))
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["pixels"], output_names=["scores"],
                              dynamic_axes={"pixels": {0: "N"}, "scores": {0: "N"}})


CASES = [("mlp", False), ("mlp", True), ("cnn", False), ("cnn", True)]


@pytest.mark.parametrize("kind,dynamo", CASES, ids=[f"{k}-{'dynamo' if d else 'legacy'}"
                                                    for k, d in CASES])
def test_torch_export_round_trips_and_fine_tunes(tmp_path, kind, dynamo):
    torch.manual_seed(0)
    model = _mlp() if kind == "mlp" else _Cnn()
    src = tmp_path / "src.onnx"
    _export(model, src, dynamo)
    proto = onnx.load(str(src))
    x = (np.random.default_rng(0).random((4, 64)) * 16).astype(np.float32)
    want = ort.InferenceSession(str(src)).run(None, {"pixels": x})[0]
    trip = to_onnx(from_onnx(proto))
    got = ort.InferenceSession(trip.SerializeToString()).run(None, {"pixels": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    out = tmp_path / "tuned.onnx"
    r = CliRunner().invoke(main, ["train", str(src), "--data", "digits", "-o", str(out),
                                  "--loss", "cross_entropy", "--optimizer", "adam", "--lr",
                                  "0.005", "--epochs", "25", "--batch-size", "32", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["final"]["val_accuracy"] >= 0.95
    tuned = onnx.load(str(out))
    onnx.checker.check_model(tuned, full_check=True)
    assert [i.name for i in tuned.graph.input] == ["pixels"]
    assert [o.name for o in tuned.graph.output] == ["scores"]
    batch = ort.InferenceSession(str(out)).run(None, {"pixels": np.zeros((7, 64), np.float32)})
    assert batch[0].shape == (7, 10)


def test_freeze_keeps_chosen_weights(tmp_path):
    src, out = tmp_path / "src.onnx", tmp_path / "tuned.onnx"
    _export(_mlp(), src, dynamo=False)
    first = [t.name for t in onnx.load(str(src)).graph.initializer if t.dims][0]
    r = CliRunner().invoke(main, ["train", str(src), "--data", "digits", "-o", str(out),
                                  "--loss", "cross_entropy", "--epochs", "1", "--freeze",
                                  first, "--json"])
    assert r.exit_code == 0, r.output
    before = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(after[first], before[first])
    assert any(not np.array_equal(after[k], before[k]) for k in before if k != first)


def test_fixed_batch_export_gives_one_line_error(tmp_path):
    pytest.importorskip("onnxscript")
    src = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Cnn(), (torch.rand(4, 64),), str(src), dynamo=True)
    r = CliRunner().invoke(main, ["train", str(src), "--data", "digits", "-o",
                                  str(tmp_path / "o.onnx"), "--epochs", "1"])
    assert r.exit_code != 0
    assert "fixed batch size of 4" in r.output and "Traceback" not in r.output
