"""Training-mode torch exports (issue 18, items 3 and 4): the step trains in training mode and
updates BatchNorm's running statistics as torch does; every written model is in inference
mode; what trains is counted, and chosen from Python as from the CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from irkit.errors import DataError
from irkit.train.loading import load_model

torch = pytest.importorskip("torch")
tm = pytest.importorskip("tests.torch_models")


def _resnet(tmp_path, n=24):
    torch.manual_seed(0)
    net = tm.perturb(tm.ResNet(), 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, n)
    path = str(tmp_path / "resnet.onnx")
    ref = copy.deepcopy(net)
    tm.export(net, {"x": x[:2]}, path, dynamo=False, training=True, output="logits")
    return ref, path, x, y


def test_sgd_steps_match_torch_train_mode_and_the_written_model_is_inference(tmp_path):
    ref, path, x, y = _resnet(tmp_path)
    model = load_model(path)
    start = model.get_weights()  # the export ran the module: its statistics moved
    with torch.no_grad():
        for name, t in list(ref.named_parameters()) + list(ref.named_buffers()):
            if name in start:
                t.copy_(torch.from_numpy(start[name]))
    model.compile(optimizer="sgd", lr=0.1)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, validation_split=0.0,
              keep_best=False, verbose=0)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for i in range(0, len(x), 8):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(torch.from_numpy(x[i:i + 8])),
                                          torch.from_numpy(y[i:i + 8])).backward()
        opt.step()
    got = model.get_weights()
    compared = 0
    for name, t in list(ref.named_parameters()) + list(ref.named_buffers()):
        if name not in got:
            continue
        want, moved = t.detach().numpy(), np.abs(t.detach().numpy() - start[name]).max()
        assert moved > 0, name  # running statistics move too
        assert np.abs(got[name] - want).max() <= 2e-3 * max(moved, 1e-3), name
        compared += 1
    assert compared == len(list(ref.parameters())) + 40  # 20 BatchNorms: mean and var
    out = tmp_path / "tuned.onnx"
    model.export(str(out))
    import onnx
    import onnxruntime as ort
    proto = onnx.load(str(out))
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            assert len(node.output) == 1
            assert all(a.i == 0 for a in node.attribute if a.name == "training_mode")
    run = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    whole = run.run(None, {"x": x})[0]
    one = np.concatenate([run.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(whole - one).max() < 1e-5
    ref.eval()
    with torch.no_grad():
        assert np.abs(whole - ref(torch.from_numpy(x)).numpy()).max() < 1e-2


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_dropout_trains_resumes_bit_identically_and_is_off_in_the_file(tmp_path, dynamo):
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = tm.perturb(tm.MobileNetV2(dropout=0.3), 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    path = str(tmp_path / "m.onnx")
    tm.export(net, {"x": x[:2]}, path, dynamo=dynamo, training=True, output="logits")
    kw = {"batch_size": 8, "validation_split": 0.25, "verbose": 0}
    whole = load_model(path).compile(optimizer="adam", lr=0.01)
    whole.fit(x, y, epochs=2, **kw)
    half = load_model(path).compile(optimizer="adam", lr=0.01)
    half.fit(x, y, epochs=1, **kw)
    half.save(str(tmp_path / "t.onnx"))
    resumed = load_model(str(tmp_path / "t.onnx"))
    resumed.fit(x, y, epochs=2, **kw)
    a, b = whole.get_weights(), resumed.get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    graph = whole.to_graph()
    for node in graph.nodes:
        if node.op_type == "Dropout" and len(node.inputs) > 2:
            assert not bool(node.inputs[2].const)
    p = whole.predict(x)
    assert np.abs(p - np.concatenate([whole.predict(x[i:i + 1]) for i in range(8)] +
                                     [whole.predict(x[8:])])).max() < 1e-5


def test_count_and_choose_what_trains_from_python(tmp_path):
    ref, path, _, _ = _resnet(tmp_path, 2)
    model = load_model(path)
    assert model.count_params() == sum(p.numel() for p in ref.parameters())
    fc = load_model(path, trainable="fc.*")
    assert sorted(fc.source.trainable()) == ["fc.bias", "fc.weight"]
    frozen = load_model(path, freeze=["layers.*", "conv1.*"])
    assert all(n.startswith(("bn1.", "fc.")) for n in frozen.source.trainable())
    with pytest.raises(DataError, match="no initializer matches 'nothing.*'"):
        load_model(path, trainable=["nothing.*"])
