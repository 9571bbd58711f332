"""The low-level Python API (irkit.function): function, grad, value_and_grad, vjp, on the
lesson examples, on both runtimes, and nested."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from irkit import ops
from irkit.errors import ShapeError
from irkit.function import Function, Input, function, grad, value_and_grad, vjp
from irkit.onnx_io import to_onnx

TARGET = np.array([3.0, -2.0])


def _quadratic(x):
    return ((x - TARGET) ** 2).sum()


# ---- lesson 1: gradient descent on a quadratic -----------------------------------------------
def test_quadratic_gradient_at_zero():
    f = function(_quadratic)
    df = grad(f)
    np.testing.assert_allclose(df(np.zeros(2)), [-6.0, 4.0])
    np.testing.assert_allclose(f(np.zeros(2)), 13.0)
    value, gradient = value_and_grad(f)(np.array([1.0, 1.0]))
    np.testing.assert_allclose(value, 4.0 + 9.0)
    np.testing.assert_allclose(gradient, [-4.0, 6.0])


def test_gradient_descent_converges_to_the_minimum():
    df = grad(_quadratic)
    x = np.zeros(2, np.float32)
    for _ in range(60):
        x = x - 0.1 * df(x)
    np.testing.assert_allclose(x, TARGET, atol=1e-4)
    # each step shrinks the error by (1 - 2 lr) = 0.8: not there after a few steps
    y = np.zeros(2, np.float32)
    for _ in range(3):
        y = y - 0.1 * df(y)
    np.testing.assert_allclose(y, TARGET * (1 - 0.8 ** 3), rtol=1e-5)


# ---- lesson 2: linear regression with minibatch SGD ------------------------------------------
def _regression_data(shuffle_once: bool) -> tuple[np.ndarray, np.ndarray]:
    """x = linspace(0, 3, 120), y = 2x + 0.9 + 0.5 N(0, 1) drawn after np.random.seed(13);
    optionally put in one fixed random order (drawn next from the same global generator)."""
    x = np.linspace(0, 3, 120)
    np.random.seed(13)
    y = 2 * x + 0.9 + 0.5 * np.random.randn(120)
    if shuffle_once:
        order = np.random.permutation(120)
        x, y = x[order], y[order]
    return x, y


def _batch_mse(w, b, xb, yb):
    err = xb * w + b - yb
    return (err * err).mean()


def _sgd_irkit(x, y, dtype, lr=0.1, batch=4, epochs=10) -> tuple[float, float]:
    d_mse = grad(_batch_mse, wrt=(0, 1))
    w, b = np.asarray(100.0, dtype), np.asarray(0.0, dtype)
    xs, ys = x.astype(dtype), y.astype(dtype)
    for _ in range(epochs):
        for i in range(0, len(xs), batch):
            gw, gb = d_mse(w, b, xs[i:i + batch], ys[i:i + batch])
            w, b = (w - dtype(lr) * gw).astype(dtype), (b - dtype(lr) * gb).astype(dtype)
    assert len(d_mse._compiled) == 1  # traced once: every batch has the same signature
    return float(w), float(b)


def _sgd_numpy(x, y, lr=0.1, batch=4, epochs=10) -> tuple[float, float]:
    w, b = 100.0, 0.0
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            err = xb * w + b - yb
            w, b = w - lr * np.mean(2 * err * xb), b - lr * np.mean(2 * err)
    return w, b


@pytest.mark.parametrize("shuffle_once, expected", [
    (False, (1.7636, 0.9310)),  # the data in linspace order
    (True, (1.8617, 1.0711)),   # one fixed shuffle: the lesson's w ~ 1.86, b ~ 1.07
], ids=["in_order", "shuffled_once"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_regression_lesson(shuffle_once, expected, dtype):
    x, y = _regression_data(shuffle_once)
    w, b = _sgd_irkit(x, y, dtype)
    w_np, b_np = _sgd_numpy(x, y)
    np.testing.assert_allclose([w, b], [w_np, b_np], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([w, b], expected, atol=1e-4)


# ---- runtimes --------------------------------------------------------------------------------
def _model(x, w):
    return ops.Tanh(x @ w).sum() + (w * w).mean()


def test_reference_runtime_and_onnxruntime_agree():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    results = {}
    for runtime in ("onnxruntime", "reference"):
        f = function(_model, runtime=runtime)
        value, (dx, dw) = value_and_grad(f, wrt=(0, 1))(x, w)
        results[runtime] = (value, dx, dw)
    for ort_out, ref_out in zip(results["onnxruntime"], results["reference"], strict=True):
        assert ort_out.shape == ref_out.shape
        np.testing.assert_allclose(ort_out, ref_out, rtol=1e-5, atol=1e-6)
    t = 1 - np.tanh(x @ w) ** 2
    np.testing.assert_allclose(results["reference"][1], t @ w.T, rtol=1e-5)
    np.testing.assert_allclose(results["reference"][2], x.T @ t + 2 * w / w.size, rtol=1e-5)


def test_traced_gradient_graph_is_valid_onnx():
    graph = grad(_model, wrt=1).trace(Input(("N", 3)), Input((3, 2)))
    graph.verify()
    assert [v.name for v in graph.inputs] == ["x", "w"]
    assert graph.inputs[0].shape == ("N", 3)
    onnx.checker.check_model(to_onnx(graph), full_check=True)


def test_a_function_is_traced_once_per_signature():
    f = function(lambda x: (x * 2.0).sum())
    f(np.ones(3, np.float32))
    f(np.zeros(3, np.float32))
    assert len(f._compiled) == 1
    np.testing.assert_allclose(f(np.ones(4, np.float32)), 8.0)
    assert len(f._compiled) == 2


# ---- nesting ---------------------------------------------------------------------------------
def test_grad_of_a_function_that_calls_grad():
    def cube(x):
        return (x ** 3.0).sum()

    d_cube = grad(cube)
    second = grad(lambda x: d_cube(x).sum())  # d/dx sum(3 x^2) = 6 x
    np.testing.assert_allclose(second(np.array([1.0, 2.0, -0.5], np.float32)), [6.0, 12.0, -3.0],
                               rtol=1e-6)


def test_grad_of_grad_of_a_scalar_function():
    d2_sin = grad(grad(lambda x: ops.Sin(x).sum()))
    x = np.array(0.5, np.float32)
    np.testing.assert_allclose(d2_sin(x), -np.sin(0.5), rtol=1e-6)
    d3_sin = grad(grad(grad(lambda x: ops.Sin(x).sum())))
    np.testing.assert_allclose(d3_sin(x), -np.cos(0.5), rtol=1e-6)


def test_a_function_called_inside_a_trace_is_inlined():
    inner = function(lambda x: ops.Exp(x))
    outer = function(lambda x: inner(x * 2.0).sum())
    graph = outer.trace(np.zeros(3, np.float32))
    assert [n.op_type for n in graph.nodes] == ["Mul", "Exp", "ReduceSum"]
    x = np.array([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(grad(outer)(x), 2 * np.exp(2 * x), rtol=1e-6)


# ---- vjp and errors --------------------------------------------------------------------------
def test_vjp_takes_the_cotangent_after_the_inputs():
    v = vjp(lambda x, y: x * y, wrt=(0, 1))
    x = np.array([1.0, 2.0, 3.0], np.float32)
    y = np.array([-1.0, 0.5, 2.0], np.float32)
    ct = np.array([1.0, 1.0, 0.5], np.float32)
    dx, dy = v(x, y, ct)
    np.testing.assert_allclose(dx, ct * y)
    np.testing.assert_allclose(dy, ct * x)
    with pytest.raises(ShapeError, match="cotangent has shape"):
        v(x, y, np.ones(2, np.float32))


def test_grad_of_a_non_scalar_output_asks_for_vjp():
    with pytest.raises(ShapeError, match="not a scalar"):
        grad(lambda x: x * 2.0)(np.ones(3, np.float32))


def test_bad_functions_and_indices_fail_clearly():
    with pytest.raises(ShapeError, match="returned float"):
        function(lambda x: 1.0)(np.ones(2, np.float32))
    with pytest.raises(ShapeError, match="wrt=3 is none"):
        grad(_quadratic, wrt=3)(np.zeros(2))
    with pytest.raises(ShapeError, match="`of=1` is none"):
        grad(_quadratic, of=1)(np.zeros(2))


def test_function_is_a_decorator_and_idempotent():
    @function(runtime="reference")
    def f(x):
        return (x * x).sum()

    assert isinstance(f, Function) and f.runtime == "reference"
    assert function(f) is f
    np.testing.assert_allclose(f(np.array([1.0, 2.0], np.float32)), 5.0)


def test_function_returning_one_value_twice_gets_two_outputs():
    f = function(lambda x: ((x * 2.0),) * 2)
    graph = f.trace(np.ones(3, np.float32))
    assert len({v.name for v in graph.outputs}) == 2
    a, b = f(np.ones(3, np.float32))
    np.testing.assert_array_equal(a, b)


# ---- JAX's shapes: pytrees, has_aux, argnums ---------------------------------------------
def _mlp_loss(params, x, y):
    h = ops.Tanh(x @ params["w"] + params["b"])
    out = h @ params["head"][0]
    return ((out[:, 0] - y) ** 2).mean(), out.max()


def test_gradients_come_back_shaped_like_the_arguments():
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((3, 4)), "b": np.zeros(4),
              "head": [rng.standard_normal((4, 1))]}
    x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    (value, top), g = value_and_grad(_mlp_loss, has_aux=True)(params, x, y)
    assert set(g) == {"w", "b", "head"} and isinstance(g["head"], list)
    assert g["w"].shape == (3, 4) and g["head"][0].shape == (4, 1)
    f = function(_mlp_loss)
    assert float(value) == pytest.approx(float(f(params, x, y)[0]))
    assert float(top) == pytest.approx(float(f(params, x, y)[1]))
    h, direction = 1e-6, rng.standard_normal((3, 4))
    moved = [dict(params, w=params["w"] + s * h * direction) for s in (1, -1)]
    numeric = (f(moved[0], x, y)[0] - f(moved[1], x, y)[0]) / (2 * h)
    assert float(np.sum(g["w"] * direction)) == pytest.approx(float(numeric), rel=1e-6)
    names = [v.name for v in grad(_mlp_loss, has_aux=True).trace(params, x, y).inputs]
    assert names == ["params.b", "params.head.0", "params.w", "x", "y"]  # keys sorted, as JAX


def test_has_aux_and_argnums_as_in_jax():
    def f(x, w):
        return (x * w).sum(), (x * 2.0, w.max())

    x, w = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    (gx, gw), (double, top) = grad(f, argnums=(0, 1), has_aux=True)(x, w)
    assert gx.tolist() == [3.0, -1.0] and gw.tolist() == [1.0, 2.0]
    assert double.tolist() == [2.0, 4.0] and float(top) == 3.0
    with pytest.raises(ShapeError, match="has_aux=True return"):
        grad(lambda x: (x * x).sum(), has_aux=True)(x)
