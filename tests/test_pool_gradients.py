"""MaxPool's gradient where the gradient table cannot look: tied maxima, and which rule runs.

At a tie the max is not differentiable, so central differences say nothing; the convention
is to give g to one maximum, the first in the window's scan order (what ONNX MaxPool's Indices
point at, and what torch's CPU kernels pick). Both of irkit's rules (masks for windows that tile
the input, a scatter at the Indices otherwise) must follow it: checked against torch autograd
and against a scatter at onnxruntime's own Indices, on inputs full of ties.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_outputs
from irkit.runtimes.onnxruntime import OrtGraph

from irkit import ops, passes
from irkit.ir import Graph

# (input shape, MaxPool attributes, the torch call); every window has several maxima
POOLS = {
    "tiled-2x2": ((2, 3, 4, 6), dict(kernel_shape=[2, 2], strides=[2, 2]),
                  lambda F, x: F.max_pool2d(x, 2, 2)),
    "tiled-floor": ((1, 2, 7, 5), dict(kernel_shape=[3, 2], strides=[3, 2]),
                    lambda F, x: F.max_pool2d(x, (3, 2), (3, 2))),
    "tiled-1d": ((2, 2, 9), dict(kernel_shape=[3], strides=[3]),
                 lambda F, x: F.max_pool1d(x, 3, 3)),
    "overlapping-padded": ((1, 2, 6, 6), dict(kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1]),
                           lambda F, x: F.max_pool2d(x, 3, 2, 1)),
}


def _tied(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    """Values from {0, 1, 2}: most windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(dtype)


def _gradient_graph(shape, attrs, dtype=np.float32) -> tuple[Graph, np.ndarray]:
    """Outputs: dx of sum(MaxPool(x) * w) for a fixed random w; and w."""
    graph = Graph("pool")
    x = graph.add_input("x", dtype, shape)
    y = ops.MaxPool(x, **attrs)
    probe = reference_outputs(_forward(shape, attrs), {"x": np.zeros(shape, np.float32)})[0]
    w = np.random.default_rng(1).standard_normal(probe.shape).astype(dtype)
    loss = ops.ReduceSum(ops.Mul(y, graph.constant(w)), keepdims=0)
    graph.outputs = [passes.gradients(graph, loss, [x])[0]]
    return graph, w


def _forward(shape, attrs) -> Graph:
    graph = Graph("forward")
    x = graph.add_input("x", np.float32, shape)
    graph.outputs = [ops.MaxPool(x, **attrs)]
    return graph


def _scatter_at_ort_indices(x: np.ndarray, attrs: dict, w: np.ndarray) -> np.ndarray:
    """g added at the positions onnxruntime's MaxPool Indices name."""
    graph = Graph("indices")
    xv = graph.add_input("x", np.float32, x.shape)
    graph.outputs = [ops.MaxPool(xv, _num_outputs=2, **attrs)[1]]
    indices = OrtGraph(graph)({"x": x})[0]
    dx = np.zeros(x.size, w.dtype)
    np.add.at(dx, indices.ravel(), w.ravel())
    return dx.reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(POOLS))
def test_tied_maxima_give_the_gradient_to_the_first(name: str, dtype) -> None:
    """float32 upsamples with Resize, float64 with Expand (see irkit.ops.conv._upsample)."""
    shape, attrs, _ = POOLS[name]
    graph, w = _gradient_graph(shape, attrs, dtype)
    for seed in range(3):
        x = _tied(shape, seed, dtype)
        want = _scatter_at_ort_indices(x.astype(np.float32), attrs, w)
        np.testing.assert_array_equal(reference_outputs(graph, {"x": x})[0], want)
        np.testing.assert_array_equal(OrtGraph(graph)({"x": x})[0], want)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_tied_maxima_match_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    shape, attrs, torch_pool = POOLS[name]
    graph, w = _gradient_graph(shape, attrs)
    x = _tied(shape, 5)
    xt = torch.tensor(x, requires_grad=True)
    (torch_pool(torch.nn.functional, xt) * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(reference_outputs(graph, {"x": x})[0], xt.grad.numpy())


@pytest.mark.parametrize("name", sorted(POOLS))
def test_tiled_windows_take_the_mask_rule(name: str) -> None:
    """Tiling windows need neither the indices-producing MaxPool nor a scatter."""
    shape, attrs, _ = POOLS[name]
    graph, _ = _gradient_graph(shape, attrs)
    kinds = {n.op_type for n in graph.nodes}
    indices = any(n.op_type == "MaxPool" and len(n.outputs) == 2 for n in graph.nodes)
    tiled = name.startswith("tiled")
    assert indices is not tiled and ("ScatterElements" in kinds) is not tiled, kinds
