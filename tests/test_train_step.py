"""The train-step graph: standard ai.onnx only, checker-clean, the same step on onnxruntime and
on the numpy reference runtime, and the same update as torch.optim."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from irkit.runtimes.onnxruntime import OrtGraph
from irkit.runtimes.reference import ReferenceRuntime

from irkit.nn import Dense, Sequential
from irkit.onnx_io import to_onnx
from irkit.signature import LR as LR_NAME
from irkit.signature import STEP
from irkit.train import SGD, Adam, ModuleSource, build_step_graphs, get_loss

FEATURES, CLASSES, BATCH = 4, 3, 6
LR = {"sgd": 0.1, "adam": 0.01}
LOSSES = ("sparse_categorical_crossentropy", "mse")


def _optimizer(kind: str):
    return SGD(momentum=0.9) if kind == "sgd" else Adam()


def _build(kind: str, loss: str, flat: bool = False):
    model = ModuleSource(Sequential([Dense(8, "relu"), Dense(CLASSES)]), input_shape=(FEATURES,),
                         seed=0)
    steps = build_step_graphs(model, get_loss(loss), _optimizer(kind), flat=flat)
    return model, steps


def _batch(loss: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
    if loss == "mse":
        return x, rng.standard_normal((BATCH, CLASSES)).astype(np.float32)
    return x, np.array([0, 1, 2, 2, 1, 0], np.int64)


def _feeds(model, steps, kind: str, x, y, step: int, state=None) -> dict[str, np.ndarray]:
    """Feeds of step number `step` (1-based): the state before it, and the batch."""
    feeds = steps.initial_state(model.weights(), LR[kind], state)
    assert int(feeds[STEP]) == step - 1 and float(feeds[LR_NAME]) == np.float32(LR[kind])
    feeds.update({steps.input_name: x, "target": y})
    return feeds


def _next_state(steps, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: outputs[f"next/{n}"] for n in steps.params + steps.slots + [STEP]}


CASES = [(k, loss) for k in ("sgd", "adam") for loss in LOSSES]
# the same steps with one flat update over all parameters (what small models get)
FLAT_CASES = [(k, loss, flat) for k, loss in CASES for flat in (False, True)]


@pytest.mark.parametrize("kind, loss", CASES)
def test_step_graph_is_standard_onnx(kind, loss):
    _, steps = _build(kind, loss)
    for graph in (steps.train, steps.eval):
        graph.verify()
        assert {n.domain for n in graph.nodes} == {""}
        model = to_onnx(graph)
        onnx.checker.check_model(model, full_check=True)
        assert {n.domain for n in model.graph.node} == {""}
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    train = steps.train
    names = [v.name for v in train.outputs]
    expected = ["loss"] + (["correct"] if steps.has_correct else []) + [f"next/{STEP}"]
    for p in steps.params:
        expected += [f"next/{p}"] + [f"next/{s}" for s in steps.slots if s.endswith(f"/{p}")]
    assert names == expected
    assert steps.has_correct == (loss != "mse")
    slots = {"sgd": ["velocity"], "adam": ["m", "v"]}[kind]
    assert steps.slots == [f"{s}/{p}" for p in steps.params for s in slots]
    assert {v.name for v in train.inputs} == {steps.input_name, "target", LR_NAME, STEP,
                                              *steps.params, *steps.slots}
    assert not set(steps.params) & set(train.initializers)  # weights are inputs of the step


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_flat_update_has_one_set_of_slots(kind):
    _, steps = _build(kind, "mse", flat=True)
    slots = {"sgd": ["velocity"], "adam": ["m", "v"]}[kind]
    assert steps.slots == [f"{s}/*" for s in slots]
    size = sum(int(np.prod(steps.train.value(p).shape)) for p in steps.params)
    assert all(steps.train.value(s).shape == (size,) for s in steps.slots)
    ops_used = [n.op_type for n in steps.train.nodes]
    assert ops_used.count("Split") == 1 and ops_used.count("Sqrt") == (2 if kind == "adam" else 0)


@pytest.mark.parametrize("kind, loss, flat", FLAT_CASES)
def test_one_step_same_on_onnxruntime_and_reference(kind, loss, flat):
    model, steps = _build(kind, loss, flat)
    ort_step, ref_step = OrtGraph(steps.train), ReferenceRuntime().compile(steps.train)
    names = [v.name for v in steps.train.outputs]
    state = None
    for step in (1, 2):  # the second step reads the state the first one wrote
        x, y = _batch(loss, seed=step)
        feeds = _feeds(model, steps, kind, x, y, step, state)
        got = dict(zip(names, ort_step(feeds), strict=True))
        want = dict(zip(names, ref_step(feeds), strict=True))
        for name in names:
            assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5,
                                       err_msg=f"step {step}: {name}")
        for p in steps.params:  # a step changes every weight
            assert not np.array_equal(got[f"next/{p}"], feeds[p]), p
        state = _next_state(steps, want)


@pytest.mark.parametrize("kind, loss, flat", FLAT_CASES)
def test_steps_equal_torch_optim(kind, loss, flat):
    torch = pytest.importorskip("torch")
    model, steps = _build(kind, loss, flat)
    weights = model.weights()
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, CLASSES))
    with torch.no_grad():  # irkit's Dense computes x W + b: torch's weight is W^T
        for i, layer in ((0, net[0]), (1, net[2])):
            layer.weight.copy_(torch.from_numpy(weights[f"dense_{i}.W"].T.copy()))
            layer.bias.copy_(torch.from_numpy(weights[f"dense_{i}.b"]))
    if kind == "sgd":
        optim = torch.optim.SGD(net.parameters(), lr=LR["sgd"], momentum=0.9)
    else:
        optim = torch.optim.Adam(net.parameters(), lr=LR["adam"])
    criterion = torch.nn.CrossEntropyLoss() if loss != "mse" else torch.nn.MSELoss()
    run = OrtGraph(steps.train)
    names = [v.name for v in steps.train.outputs]
    state = None
    for step in (1, 2, 3):
        x, y = _batch(loss, seed=step)
        out = dict(zip(names, run(_feeds(model, steps, kind, x, y, step, state)), strict=True))
        state = _next_state(steps, out)
        optim.zero_grad()
        torch_loss = criterion(net(torch.from_numpy(x)), torch.from_numpy(y))
        torch_loss.backward()
        optim.step()
        np.testing.assert_allclose(out["loss"], torch_loss.item(), rtol=1e-5, atol=1e-6)
        for i, layer in ((0, net[0]), (1, net[2])):
            np.testing.assert_allclose(state[f"dense_{i}.W"], layer.weight.detach().numpy().T,
                                       rtol=1e-5, atol=1e-6, err_msg=f"step {step} W{i}")
            np.testing.assert_allclose(state[f"dense_{i}.b"], layer.bias.detach().numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=f"step {step} b{i}")


def test_correct_counts_hits_of_the_batch():
    model, steps = _build("sgd", "sparse_categorical_crossentropy")
    x, y = _batch("sparse_categorical_crossentropy", seed=5)
    out = dict(zip([v.name for v in steps.train.outputs],
                   ReferenceRuntime().compile(steps.train)(_feeds(model, steps, "sgd", x, y, 1)),
                   strict=True))
    w = model.weights()
    logits = np.maximum(x @ w["dense_0.W"] + w["dense_0.b"], 0) @ w["dense_1.W"] + w["dense_1.b"]
    assert float(out["correct"]) == float((logits.argmax(axis=1) == y).sum())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out["loss"], -log_probs[np.arange(BATCH), y].mean(), rtol=1e-5)
