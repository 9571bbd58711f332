"""AdamW, gradient clipping by global norm and gradient accumulation in the step graph, step by
step against torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and a torch loop that sums the
gradients of micro-batches (issue 18, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from irkit.errors import SpecError
from irkit.onnx_io import from_onnx
from irkit.train.model import Model
from irkit.train.optimizers import AdamW

torch = pytest.importorskip("torch")

N, F, C = 24, 5, 3


def _linear():
    """torch.nn.Linear's layout: scores = x W^T + b, two hidden layers deep."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(8, F)) * 0.5, "b1": rng.normal(size=8) * 0.1,
               "w2": rng.normal(size=(C, 8)) * 0.5, "b2": rng.normal(size=C) * 0.1}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Gemm", ["t", "w2", "b2"], ["scores"], transB=1)]
    g = helper.make_graph(nodes, "linear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", F])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", C])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in weights.items()])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return from_onnx(proto), {k: np.asarray(v, np.float32) for k, v in weights.items()}


def _data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, F)).astype(np.float32), rng.integers(0, C, size=N)


def _irkit(batch: int, runtime: str = "onnxruntime", **compile_args) -> dict[str, np.ndarray]:
    graph, _ = _linear()
    x, y = _data()
    model = Model(graph)
    model.compile(runtime=runtime, **compile_args)
    model.fit(x, y, epochs=1, batch_size=batch, validation_split=0, shuffle=False, verbose=0)
    return model.get_weights()


def _torch(batch: int, make_optimizer, clip: float = 0.0, accumulate: int = 1):
    _, weights = _linear()
    x, y = _data()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    optimizer = make_optimizer(list(params.values()))

    def loss_of(xb, yb):
        h = torch.tanh(xb @ params["w1"].T + params["b1"])
        return torch.nn.functional.cross_entropy(h @ params["w2"].T + params["b2"], yb)
    for i, start in enumerate(range(0, N, batch)):
        loss = loss_of(torch.tensor(x[start:start + batch]), torch.tensor(y[start:start + batch]))
        (loss / accumulate).backward()
        if (i + 1) % accumulate == 0:
            if clip:
                torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
            optimizer.step()
            optimizer.zero_grad()
    return {k: v.detach().numpy() for k, v in params.items()}


def _close(got, want):
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_adamw_is_torch_s(runtime):
    got = _irkit(4, runtime, optimizer="adamw", lr=0.05, weight_decay=0.3)
    _close(got, _torch(4, lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.3)))


def test_adamw_defaults_are_torch_s():
    want = torch.optim.AdamW([torch.zeros(1)]).defaults
    mine = AdamW()
    assert (mine.weight_decay, mine.beta_1, mine.beta_2, mine.epsilon) == (
        want["weight_decay"], *want["betas"], want["eps"])
    got = _irkit(6, optimizer="adamw")
    _close(got, _torch(6, lambda p: torch.optim.AdamW(p)))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clip_norm_is_clip_grad_norm(optimizer):
    torch_opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
                 "adam": lambda p: torch.optim.Adam(p, lr=0.05)}[optimizer]
    args = {"sgd": {"lr": 0.5, "momentum": 0.9}, "adam": {"lr": 0.05}}[optimizer]
    got = _irkit(4, optimizer=optimizer, clip_norm=0.1, **args)
    _close(got, _torch(4, torch_opt, clip=0.1))
    unclipped = _irkit(4, optimizer=optimizer, **args)
    assert not np.allclose(got["w1"], unclipped["w1"])  # the bound was reached
    loose = _irkit(4, optimizer=optimizer, clip_norm=1e6, **args)  # never reached: no change
    _close(loose, unclipped)


@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_accumulation_is_one_update_per_n_micro_batches(runtime):
    got = _irkit(4, runtime, optimizer="adam", lr=0.05, accumulate=3, clip_norm=0.5)
    _close(got, _torch(4, lambda p: torch.optim.Adam(p, lr=0.05), clip=0.5, accumulate=3))


def test_accumulation_moves_the_weights_on_every_nth_step_only():
    graph, weights = _linear()
    x, y = _data()
    model = Model(graph)
    model.compile("sgd", lr=0.1, accumulate=2)
    model.fit(x[:4], y[:4], epochs=1, batch_size=4, validation_split=0, verbose=0)
    np.testing.assert_array_equal(model.get_weights()["w1"], weights["w1"])
    model.fit(x[:4], y[:4], epochs=1, batch_size=4, validation_split=0, verbose=0)
    assert not np.array_equal(model.get_weights()["w1"], weights["w1"])


def test_bad_settings_are_one_line():
    graph, _ = _linear()
    for args, message in [({"clip_norm": -1}, "clip_norm must be a finite number >= 0"),
                          ({"accumulate": 0}, "accumulate must be an integer from 1"),
                          ({"optimizer": "adamw", "weight_decay": -0.1},
                           "weight_decay must be a number >= 0")]:
        with pytest.raises(SpecError, match=message):
            Model(graph).compile(**args)
