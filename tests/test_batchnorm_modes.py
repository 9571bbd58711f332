"""How BatchNorm trains in an imported model (irkit.train.modes.BATCHNORM_MODES, `irkit train
--batchnorm`, `load_model(..., batchnorm=)`), against torch: "train" (the default) trains an
inference-mode export as torch's `model.train()` trains the module (batch statistics, running
statistics updated with the node's momentum and the unbiased variance), "frozen" as torch's
`model.train()` with every BatchNorm in `eval()`; the written model is in inference mode with
the running statistics training left."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from cli_checks import cli, one_line_error

from irkit.train.loading import load_model

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
tm = pytest.importorskip("tests.torch_models")

STEPS, BATCH = 3, 8


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """(torch ResNet, its dynamo export in eval mode without the optimizer, images, labels)."""
    torch.manual_seed(0)
    net = tm.perturb(tm.ResNet(), 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    path = str(tmp_path_factory.mktemp("bn") / "resnet.onnx")
    ref = copy.deepcopy(net)
    tm.export(net, {"x": x[:2]}, path, dynamo=True, output="logits", optimize=False)
    return ref, path, x, y


def _torch_sgd(net, x, y, frozen: bool) -> torch.nn.Module:
    """`STEPS` SGD steps of torch's `model.train()` (BatchNorms in eval() when `frozen`)."""
    net = copy.deepcopy(net).train()
    for m in net.modules():
        if frozen and isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for i in range(0, len(x), BATCH):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(x[i:i + BATCH])),
                                          torch.from_numpy(y[i:i + BATCH])).backward()
        opt.step()
    return net


def _irkit_sgd(path, x, y, **kw):
    model = load_model(path, **kw).compile(optimizer="sgd", lr=0.1)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, validation_split=0.0,
              keep_best=False, verbose=0)
    return model


def _state(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: t.detach().numpy() for n, t in
            list(net.named_parameters()) + list(net.named_buffers()) if "num_batches" not in n}


def _assert_same_state(got: dict, want: torch.nn.Module, start: torch.nn.Module,
                       buffers_move: bool) -> int:
    """Every torch parameter and running statistic equals irkit's within float32 noise of k
    steps (1e-3 of how far the step moved it; measured: 3e-4 on the last stage, whose
    BatchNorms normalize over 8 values), running statistics moved or not as `buffers_move`."""
    before, compared = _state(start), 0
    for name, w in _state(want).items():
        assert name in got, f"{name} is not in the imported model"
        moved = np.abs(w - before[name]).max()
        assert (moved > 0) == ("running" not in name or buffers_move), name
        error = np.abs(got[name] - w).max()
        assert error <= 1e-3 * moved + 1e-7, f"{name}: {error:.3g} (moved {moved:.3g})"
        compared += 1
    return compared


def test_train_mode_on_an_inference_export_is_torchs_train(resnet, tmp_path):
    """The default: k SGD steps give torch's weights and running statistics; the written
    model is in inference mode (one output per BatchNorm) and predicts as torch's eval() with
    those weights and statistics."""
    ref, path, x, y = resnet
    assert all(not any(a.name == "training_mode" and a.i for a in n.attribute)
               for n in onnx.load(path).graph.node if n.op_type == "BatchNormalization")
    model = _irkit_sgd(path, x, y)
    want = _torch_sgd(ref, x, y, frozen=False)
    got = model.get_weights()
    compared = _assert_same_state(got, want, ref, buffers_move=True)
    assert compared == len(list(ref.parameters())) + 2 * 20  # 20 BatchNorms: mean and var
    # and that difference is float32's: torch in float64 is as far from torch as from irkit
    exact = _state(_torch_sgd(copy.deepcopy(ref).double(), x.astype(np.float64), y, False))
    torch_noise = max(np.abs(w - exact[n]).max() for n, w in _state(want).items())
    irkit_noise = max(np.abs(got[n] - w).max() for n, w in exact.items())
    assert irkit_noise <= 2 * torch_noise, (irkit_noise, torch_noise)
    out = tmp_path / "tuned.onnx"
    model.export(str(out))
    for node in onnx.load(str(out)).graph.node:
        if node.op_type == "BatchNormalization":
            assert len(node.output) == 1 and not any(
                a.name == "training_mode" and a.i for a in node.attribute), node.name
    import onnxruntime as ort
    predicted = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[:4]})[0]
    tuned = copy.deepcopy(ref).eval()  # torch's eval() with irkit's weights and statistics
    with torch.no_grad():
        for name, t in list(tuned.named_parameters()) + list(tuned.named_buffers()):
            if name in got:
                t.copy_(torch.from_numpy(got[name]))
        np.testing.assert_allclose(predicted, tuned(torch.from_numpy(x[:4])).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_frozen_keeps_the_running_statistics_as_torchs_bn_eval(resnet):
    ref, path, x, y = resnet
    model = _irkit_sgd(path, x, y, batchnorm="frozen")
    _assert_same_state(model.get_weights(), _torch_sgd(ref, x, y, frozen=True), ref,
                       buffers_move=False)


def test_the_cli_choice_and_its_refusals(resnet, tmp_path):
    """`--batchnorm frozen` keeps the running statistics from the CLI (irkit train, and the
    step of `irkit export --bundle`); a bad name, a recipe, a plain export and a training file
    (which trains as it was saved) are one-line refusals."""
    _, path, x, y = resnet
    np.savez(tmp_path / "d.npz", x=x, y=y)
    args = ["--data", tmp_path / "d.npz", "--epochs", "1", "--batch-size", "8"]
    result = cli("train", path, *args, "-o", tmp_path / "f.onnx", "--batchnorm", "frozen",
                 "--save-training", tmp_path / "t.onnx")
    assert result.exit_code == 0, result.output
    before = {t.name: t for t in onnx.load(path).graph.initializer}
    after = {t.name: t for t in onnx.load(str(tmp_path / "f.onnx")).graph.initializer}
    stats = [n for n in before if "running_" in n]
    assert len(stats) == 40 and all(before[n] == after[n] for n in stats)
    assert before["fc.weight"] != after["fc.weight"]
    for mode, buffers in (("train", 40), ("frozen", 0)):  # a bundle's step state: the same
        result = cli("export", path, "--bundle", tmp_path / mode, "--data", tmp_path / "d.npz",
                     "--batchnorm", mode)
        assert result.exit_code == 0, result.output
        contract = json.loads((tmp_path / mode / "bundle.json").read_text())
        assert sum(e["role"] == "buffer" for e in contract["state"]) == buffers
    one_line_error(cli("export", path, "-o", tmp_path / "e.onnx", "--batchnorm", "frozen"),
                   "--batchnorm", "--bundle")
    one_line_error(cli("train", path, *args, "-o", tmp_path / "g.onnx", "--batchnorm", "x"),
                   "batchnorm", code=2)
    one_line_error(cli("train", "iris_mlp", "-o", tmp_path / "h.onnx", "--batchnorm",
                       "frozen"), "--batchnorm", "recipe")
    one_line_error(cli("train", tmp_path / "t.onnx", *args, "-o", tmp_path / "i.onnx",
                       "--batchnorm", "train"), "training file", "batchnorm")


def test_a_batch_of_one_row_leaves_no_nan_in_the_running_variance(tmp_path):
    """BatchNorm after a Linear normalizes over the rows alone; a last batch of one row (9
    rows, batch 8) has no unbiased variance (torch refuses it): the update is ONNX's biased
    one (m var + (1 - m) 0), the mean torch's formula, and nothing is NaN."""
    torch.manual_seed(0)
    net = tm.perturb(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                         torch.nn.ReLU(), torch.nn.Linear(6, 3)))
    x = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    y = np.arange(9) % 3
    path = str(tmp_path / "mlp.onnx")
    tm.export(net, {"x": x[:2]}, path, dynamo=True, output="logits", optimize=False)
    got = _irkit_sgd(path, x, y).get_weights()
    ref = copy.deepcopy(net).train()  # torch's first batch, then the one-row update by hand
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(ref(torch.from_numpy(x[:8])),
                                      torch.from_numpy(y[:8])).backward()
    opt.step()
    with torch.no_grad():
        row = ref[0](torch.from_numpy(x[8:]))[0].numpy()
    bn = ref[1]
    np.testing.assert_allclose(got["1.running_var"], 0.9 * bn.running_var.numpy(), rtol=1e-5)
    np.testing.assert_allclose(got["1.running_mean"], 0.9 * bn.running_mean.numpy() + 0.1 * row,
                               rtol=1e-4, atol=1e-6)


def test_frozen_turns_a_training_mode_export_to_bn_eval(tmp_path):
    """A legacy training-mode export (BatchNorm on batch statistics in the file) with
    batchnorm="frozen": its BatchNorms read and keep their running statistics, as torch's
    model.train() with every BatchNorm in eval()."""
    torch.manual_seed(0)
    net = tm.perturb(tm.ResNet(), 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((STEPS * BATCH, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    path = str(tmp_path / "train_mode.onnx")
    tm.export(net, {"x": x[:2]}, path, dynamo=False, training=True, output="logits")
    assert any(a.name == "training_mode" and a.i for n in onnx.load(path).graph.node
               for a in n.attribute)
    start = load_model(path).get_weights()  # the export ran the module: its statistics moved
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for name, t in list(ref.named_parameters()) + list(ref.named_buffers()):
            if name in start:
                t.copy_(torch.from_numpy(start[name]))
    model = _irkit_sgd(path, x, y, batchnorm="frozen")
    _assert_same_state(model.get_weights(), _torch_sgd(ref, x, y, frozen=True), ref,
                       buffers_move=False)
