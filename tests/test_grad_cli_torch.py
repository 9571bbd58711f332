"""`irkit grad` on models written by torch.onnx.export: its gradients equal torch autograd's."""

from __future__ import annotations

import os
import subprocess
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import irkit_command

from irkit.cli import main

torch = pytest.importorskip("torch")

X = np.random.default_rng(7).standard_normal((6, 4)).astype(np.float32)
REDUCTIONS = ("sum", "mean", "none")


class _MLPLoss(torch.nn.Module):
    """Linear-ReLU-Linear, then a scalar loss (sum or mean) or the raw (N, 3) output."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(),
                                       torch.nn.Linear(5, 3))
        self.reduction = reduction

    def forward(self, x):
        y = self.net(x)
        if self.reduction == "sum":
            return y.sum()
        if self.reduction == "mean":
            return y.mean()
        return y


def _export(module: torch.nn.Module, path: str, dynamic: bool = False) -> None:
    kwargs = {"dynamic_axes": {"x": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(X),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["loss"], **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{reduction: (module, path of its ONNX export)} written once for this file."""
    directory = tmp_path_factory.mktemp("torch_models")
    models = {}
    for reduction in REDUCTIONS:
        module = _MLPLoss(reduction)
        path = str(directory / f"mlp_{reduction}.onnx")
        _export(module, path)
        models[reduction] = (module, path)
    return models


def _weight_names(module: torch.nn.Module, path: str) -> dict[str, str]:
    """torch parameter name -> the initializer holding the same array in the export."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    names = {}
    for pname, param in module.named_parameters():
        data = param.detach().numpy()
        matches = [n for n, a in inits.items() if a.shape == data.shape and np.array_equal(a, data)]
        assert len(matches) == 1, f"no unique initializer for {pname}: {matches}"
        names[pname] = matches[0]
    return names


def _torch_gradients(module, cotangent=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    module.zero_grad()
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    out = module(x)
    out.backward(None if cotangent is None else torch.from_numpy(cotangent))
    return x.grad.numpy(), {n: p.grad.numpy().copy() for n, p in module.named_parameters()}


def _run_gradient_model(path: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                    strict=True))


def _assert_matches_torch(module, path: str, names: dict[str, str], cotangent=None) -> None:
    feeds = {"x": X} if cotangent is None else {"x": X, "loss_grad": cotangent}
    got = _run_gradient_model(path, feeds)
    dx, dparams = _torch_gradients(module, cotangent)
    np.testing.assert_allclose(got["x_grad"], dx, rtol=1e-4, atol=1e-6, err_msg="x_grad")
    for pname, init in names.items():
        np.testing.assert_allclose(got[f"{init}_grad"], dparams[pname], rtol=1e-4, atol=1e-6,
                                   err_msg=f"{init}_grad ({pname})")
    with torch.no_grad():
        np.testing.assert_allclose(got["loss"], module(torch.from_numpy(X)).numpy(), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_cli_matches_torch_autograd(exported, tmp_path, reduction):
    module, path = exported[reduction]
    names = _weight_names(module, path)
    out = str(tmp_path / "grad.onnx")
    wrt = ",".join(["x", *names.values()])
    result = CliRunner().invoke(main, ["grad", path, "--of", "loss", "--wrt", wrt, "-o", out])
    assert result.exit_code == 0, result.output
    expected_outputs = ["loss", "x_grad", *(f"{n}_grad" for n in names.values())]
    assert result.output.strip() == f"wrote {out}: outputs {', '.join(expected_outputs)}"
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == expected_outputs
    inputs = [i.name for i in model.graph.input]
    if reduction == "none":  # a non-scalar output takes its cotangent as an input
        assert inputs == ["x", "loss_grad"]
        cotangent = np.random.default_rng(8).standard_normal((6, 3)).astype(np.float32)
    else:
        assert inputs == ["x"]
        cotangent = None
    _assert_matches_torch(module, out, names, cotangent)


def test_grad_cli_on_a_dynamic_batch(tmp_path):
    module = _MLPLoss("mean")
    path = str(tmp_path / "dynamic.onnx")
    _export(module, path, dynamic=True)
    names = _weight_names(module, path)
    first = names["net.0.weight"]
    out = str(tmp_path / "grad.onnx")
    result = CliRunner().invoke(main, ["grad", path, "--of", "loss", "--wrt", f"x,{first}",
                                       "-o", out])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    for rows in (2, 9):
        xs = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        _, dx, dw = session.run(None, {"x": xs})
        module.zero_grad()
        xt = torch.from_numpy(xs).requires_grad_(True)
        module(xt).backward()
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(dw, module.net[0].weight.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_grad_command_in_a_subprocess(exported, tmp_path):
    module, path = exported["sum"]
    names = _weight_names(module, path)
    out = str(tmp_path / "grad.onnx")
    command = irkit_command()
    wrt = ",".join(["x", *names.values()])
    done = subprocess.run([*command, "grad", path, "--of", "loss", "--wrt", wrt, "-o", out],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}")
    _assert_matches_torch(module, out, names)


@pytest.mark.parametrize("args, message", [
    (["--of", "nope", "--wrt", "x"], "no graph output named 'nope'"),
    (["--of", "loss", "--wrt", "x,missing"], "no input or initializer named 'missing'"),
])
def test_grad_cli_bad_names_fail_in_one_line(exported, tmp_path, args, message):
    _, path = exported["sum"]
    out = tmp_path / "grad.onnx"
    result = CliRunner().invoke(main, ["grad", path, *args, "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error:") and message in lines[0]
    assert not out.exists()


def test_grad_cli_missing_model_fails_in_one_line(tmp_path):
    missing = tmp_path / "absent.onnx"
    result = CliRunner().invoke(main, ["grad", str(missing), "--of", "loss", "--wrt", "x",
                                       "-o", str(tmp_path / "g.onnx")])
    assert result.exit_code == 1
    assert result.output.strip() == f"irkit: error: {missing}: no such file"
