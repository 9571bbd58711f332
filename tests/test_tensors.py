"""Every row of the irkit.numpy table (tests/tensor_cases.py): eager results equal numpy's; the
same function traced by irkit.function gives them on onnxruntime and on the reference runtime;
gradients agree with central differences of the numpy expression and with torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
from tensor_cases import ROWS, Row

import irkit
import irkit.numpy as inp

IDS = [r.name for r in ROWS]


def _traced(r: Row, runtime: str) -> irkit.Function:
    return irkit.function(lambda *args: r.fn(inp, *args), runtime=runtime)


def _float_output(r: Row) -> bool:
    return np.asarray(r.numpy(*r.inputs)).dtype.kind == "f"


@pytest.mark.parametrize("r", ROWS, ids=IDS)
def test_eager_equals_numpy(r: Row) -> None:
    got = r.fn(inp, *[inp.tensor(a) for a in r.inputs])
    want = np.asarray(r.numpy(*r.inputs))
    assert isinstance(got, irkit.Tensor) and not got.is_traced
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
@pytest.mark.parametrize("r", ROWS, ids=IDS)
def test_traced_equals_numpy(r: Row, runtime: str) -> None:
    inputs = r.inputs
    if r.ort32 and runtime == "onnxruntime":  # its CPU kernels lack float64 for this op
        inputs = tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in inputs)
    got = np.asarray(_traced(r, runtime)(*inputs))
    want = np.asarray(r.numpy(*inputs))
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype)
    tol = 1e-5 if want.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _weights(r: Row) -> np.ndarray:
    """A fixed random cotangent: the check differentiates sum(f(x) * weights)."""
    shape = np.shape(r.numpy(*r.inputs))
    return np.random.default_rng(len(r.name)).uniform(0.5, 1.5, shape)


def _irkit_grads(r: Row, runtime: str = "onnxruntime") -> tuple:
    w = _weights(r)
    fn = irkit.function(lambda *args: inp.sum(r.fn(inp, *args) * w), runtime=runtime)
    return irkit.grad(fn, wrt=r.grad)(*r.inputs)


# rows with float outputs (bool and integer ones are piecewise constant: no gradient)
GRAD_ROWS = [r for r in ROWS if r.grad and _float_output(r)]


@pytest.mark.parametrize("r", GRAD_ROWS, ids=[r.name for r in GRAD_ROWS])
def test_gradient_matches_central_differences(r: Row) -> None:
    w = _weights(r)
    grads = _irkit_grads(r, runtime="reference" if r.ort32 else "onnxruntime")
    rng = np.random.default_rng(7)
    directions = [rng.standard_normal(r.inputs[i].shape) for i in r.grad]
    h = 1e-6

    def loss(sign: float) -> float:
        moved = list(r.inputs)
        for i, d in zip(r.grad, directions, strict=True):
            moved[i] = r.inputs[i] + sign * h * d
        return float(np.sum(r.numpy(*moved) * w))

    numeric = (loss(1.0) - loss(-1.0)) / (2 * h)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, directions, strict=True))
    assert grads[0].shape == r.inputs[r.grad[0]].shape
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


TORCH_ROWS = [r for r in ROWS if r.torch is not None]


@pytest.mark.parametrize("r", TORCH_ROWS, ids=[r.name for r in TORCH_ROWS])
def test_values_and_gradients_match_torch(r: Row) -> None:
    torch = pytest.importorskip("torch")
    w = _weights(r)
    tensors = [torch.tensor(a, requires_grad=i in r.grad) for i, a in enumerate(r.inputs)]
    out = r.torch(*tensors)
    np.testing.assert_allclose(r.fn(inp, *[inp.tensor(a) for a in r.inputs]).numpy(),
                               out.detach().numpy(), rtol=1e-10, atol=1e-12)
    want = torch.autograd.grad((out * torch.tensor(w)).sum(), [tensors[i] for i in r.grad])
    for got, expected in zip(_irkit_grads(r), want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-12)
