"""Second order through whole models: irkit's Hessian-vector products equal torch's.

For a small MLP (Gemm + Relu/Tanh + SoftmaxCrossEntropyLoss) and a small CNN (Conv -> Relu
-> MaxPool or AveragePool -> Flatten -> Gemm -> LogSoftmax -> NegativeLogLikelihoodLoss),
built with `irkit.ops`, the graph gets `g = d loss / d weights` from `irkit.passes.gradients`,
then, per direction v, `s_v = sum(g * v)` and `H v = d s_v / d weights` (the gradient graph
differentiated again). In float64 on the numpy reference runtime these equal torch's double
backward (`torch.autograd.grad(..., create_graph=True)`, then again); on onnxruntime they
agree too (float32 where its CPU provider lacks float64 kernels: Conv, AveragePool). The
Hessian is symmetric: u . (H v) = v . (H u).

MaxPool picks the first of tied values, as torch does; ties happen only between zeros left by
Relu, whose gradient is zero either way, so random inputs need no care.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import reference_outputs
from test_ops_gradients import TORCH_ATOL, TORCH_RTOL, _as_outputs, _numpy

from irkit import ops, passes
from irkit.ir import Graph, Value

torch = pytest.importorskip("torch")
F = torch.nn.functional
N_DIRECTIONS = 2
gradients = passes.gradients


@dataclass
class Model:
    """A loss over `data` inputs and weights, in irkit ops and in torch, with its feeds."""

    name: str
    data: dict[str, tuple[np.dtype, tuple[int, ...]]]   # non-weight inputs: dtype, shape
    weights: dict[str, tuple[int, ...]]
    ir_loss: Callable[[dict[str, Value]], Value]
    torch_loss: Callable[[dict], object]
    ort_dtype: type = np.float64  # float32 where onnxruntime's CPU lacks float64 kernels

    def feeds(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for k, (dtype, shape) in self.data.items():
            feeds[k] = rng.integers(0, 3, shape) if dtype == np.int64 else \
                rng.standard_normal(shape)
        feeds.update({k: rng.standard_normal(s) * 0.6 for k, s in self.weights.items()})
        return feeds

    def directions(self, seed: int) -> list[dict[str, np.ndarray]]:
        """float32-exact directions (onnxruntime may fold scalar constants into float32
        attributes), the same in every dtype."""
        rng = np.random.default_rng(seed + 1)
        return [{k: rng.standard_normal(s).astype(np.float32).astype(np.float64)
                 for k, s in self.weights.items()} for _ in range(N_DIRECTIONS)]


def hvp_graph(model: Model, directions: list[dict[str, np.ndarray]],
              dtype=np.float64) -> Graph:
    """Outputs [loss, *g, *H v_1, *H v_2, ...], the weights in `model.weights` order."""
    graph = Graph(f"{model.name}_hvp")
    values = {k: graph.add_input(k, dtype if dt != np.int64 else dt, s)
              for k, (dt, s) in model.data.items()}
    weights = [graph.add_input(k, dtype, s) for k, s in model.weights.items()]
    values.update({w.name: w for w in weights})
    loss = model.ir_loss(values)
    grads = gradients(graph, loss, weights)
    outputs = [loss, *grads]
    for v in directions:
        s = None
        for g, w in zip(grads, weights, strict=True):
            term = ops.ReduceSum(ops.Mul(g, graph.constant(v[w.name].astype(dtype))), keepdims=0)
            s = term if s is None else ops.Add(s, term)
        outputs += gradients(graph, s, weights)
    graph.outputs = _as_outputs(graph, outputs)
    graph.verify()
    return graph


def torch_hvps(model: Model, feeds: dict[str, np.ndarray],
               directions: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The same outputs from torch: backward with create_graph, then backward again."""
    t = {k: torch.tensor(a, requires_grad=k in model.weights) for k, a in feeds.items()}
    weights = [t[k] for k in model.weights]
    loss = model.torch_loss(t)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    out = [loss, *grads]
    for v in directions:
        s = sum((g * torch.tensor(v[k])).sum() for g, k in zip(grads, model.weights,
                                                                 strict=True))
        out += torch.autograd.grad(s, weights, retain_graph=True)
    return [_numpy(x) for x in out]


# ---- the models -------------------------------------------------------------------------------
def mlp(activation: str, reduction: str) -> Model:
    """5 -> 6 -> 4 -> 3, both hidden layers with `activation`; the first Gemm uses transB."""
    act_ir, act_pt = {"Relu": (ops.Relu, torch.relu), "Tanh": (ops.Tanh, torch.tanh)}[activation]

    def ir_loss(v):
        h = act_ir(ops.Gemm(v["x"], v["w1"], v["b1"], transB=1))
        h = act_ir(ops.Gemm(h, v["w2"], v["b2"]))
        logits = ops.Gemm(h, v["w3"], v["b3"])
        return ops.SoftmaxCrossEntropyLoss(logits, v["labels"], reduction=reduction)

    def torch_loss(t):
        h = act_pt(t["x"] @ t["w1"].T + t["b1"])
        h = act_pt(h @ t["w2"] + t["b2"])
        return F.cross_entropy(h @ t["w3"] + t["b3"], t["labels"], reduction=reduction)

    return Model(f"mlp_{activation}_{reduction}",
                 {"x": (np.float64, (8, 5)), "labels": (np.int64, (8,))},
                 {"w1": (6, 5), "b1": (6,), "w2": (6, 4), "b2": (4,), "w3": (4, 3), "b3": (3,)},
                 ir_loss, torch_loss)


def cnn(pool: str) -> Model:
    """(2, 2, 6, 6) -> Conv 3x3 (3 channels) -> Relu -> 2x2 pool, stride 2 -> Flatten (12)
    -> Gemm (3 classes) -> LogSoftmax -> NegativeLogLikelihoodLoss (mean)."""
    pool_ir = {"MaxPool": ops.MaxPool, "AveragePool": ops.AveragePool}[pool]
    pool_pt = {"MaxPool": F.max_pool2d, "AveragePool": F.avg_pool2d}[pool]

    def ir_loss(v):
        h = ops.Relu(ops.Conv(v["x"], v["conv_w"], v["conv_b"], kernel_shape=[3, 3]))
        h = ops.Flatten(pool_ir(h, kernel_shape=[2, 2], strides=[2, 2]), axis=1)
        logp = ops.LogSoftmax(ops.Gemm(h, v["fc_w"], v["fc_b"], transB=1), axis=1)
        return ops.NegativeLogLikelihoodLoss(logp, v["labels"])

    def torch_loss(t):
        h = torch.relu(F.conv2d(t["x"], t["conv_w"], t["conv_b"]))
        h = pool_pt(h, 2, 2).flatten(1)
        logp = torch.log_softmax(F.linear(h, t["fc_w"], t["fc_b"]), 1)
        return F.nll_loss(logp, t["labels"])

    return Model(f"cnn_{pool}", {"x": (np.float64, (2, 2, 6, 6)), "labels": (np.int64, (2,))},
                 {"conv_w": (3, 2, 3, 3), "conv_b": (3,), "fc_w": (3, 12), "fc_b": (3,)},
                 ir_loss, torch_loss, ort_dtype=np.float32)


MODELS = [mlp(a, r) for a in ("Relu", "Tanh") for r in ("mean", "sum")] + \
    [cnn("MaxPool"), cnn("AveragePool")]
IDS = [m.name for m in MODELS]


# ---- the checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_hessian_vector_products_match_torch_double_backward(model: Model, seed: int) -> None:
    feeds, directions = model.feeds(seed), model.directions(seed)
    got = reference_outputs(hvp_graph(model, directions), feeds)
    want = torch_hvps(model, feeds, directions)
    names = ["loss", *(f"d/d{k}" for k in model.weights)] + [
        f"H v{i} ({k})" for i in range(N_DIRECTIONS) for k in model.weights]
    assert len(got) == len(want) == len(names)
    for name, mine, theirs in zip(names, got, want, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=TORCH_RTOL, atol=TORCH_ATOL, err_msg=name)
    assert any(np.abs(h).max() > 1e-3 for h in got[1 + len(model.weights):]), \
        "the Hessian-vector products are all ~0: the check would prove nothing"


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_hessian_vector_products_on_onnxruntime(model: Model) -> None:
    from irkit.runtimes.onnxruntime import OrtGraph

    feeds, directions = model.feeds(2), model.directions(2)
    want = torch_hvps(model, feeds, directions)
    graph = hvp_graph(model, directions, dtype=model.ort_dtype)
    got = OrtGraph(graph)(feeds)
    rtol, atol = (TORCH_RTOL, TORCH_ATOL) if model.ort_dtype == np.float64 else (2e-4, 2e-5)
    for i, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(mine.astype(np.float64), theirs, rtol=rtol,
                                   atol=atol * scale, err_msg=f"output {i}")


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_hessian_is_symmetric(model: Model) -> None:
    """u . (H v) = v . (H u) for the two directions (no torch needed)."""
    feeds, (u, v) = model.feeds(3), model.directions(3)
    got = reference_outputs(hvp_graph(model, [u, v]), feeds)
    n = len(model.weights)
    hu, hv = got[1 + n:1 + 2 * n], got[1 + 2 * n:]
    u_hv = sum(float(np.sum(u[k] * h)) for k, h in zip(model.weights, hv, strict=True))
    v_hu = sum(float(np.sum(v[k] * h)) for k, h in zip(model.weights, hu, strict=True))
    assert u_hv == pytest.approx(v_hu, rel=1e-10, abs=1e-12)
