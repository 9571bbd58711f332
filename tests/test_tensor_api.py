"""irkit.Tensor as a learner meets it: the promotion table, the lesson's tensor tasks (eagerly
and under grad, with the lesson's numbers), value_and_grad's JAX shape, numpy's functions on
Tensors, and misuse in one line."""

from __future__ import annotations

import numpy as np
import pytest

import irkit
import irkit.numpy as inp
from irkit.errors import ShapeError, TraceError

F32, F64, I32, I64, B = np.float32, np.float64, np.int32, np.int64, np.bool_


# ---- dtypes -------------------------------------------------------------------------------
def _t(dtype):
    return inp.tensor(np.ones(2, dtype))


PROMOTION = [  # (a, b, the dtype of a + b)
    (_t(F64), 100.0, F64),           # weak Python float: the data's dtype (the lesson's w = 100.0)
    (_t(F32), 100.0, F32),
    (_t(F32), 1, F32),
    (_t(I64), 1, I64),
    (_t(I32), 1, I32),
    (_t(I64), 0.5, F32),             # a float scalar lifts ints to the default float
    (_t(B), 1, I64),
    (_t(B), 1.0, F32),
    (_t(F32), _t(F64), F64),         # within a kind the wider wins (numpy, torch, JAX)
    (_t(np.float16), _t(F32), F32),
    (_t(I32), _t(I64), I64),
    (_t(I64), _t(F32), F32),         # across kinds the float's dtype (torch, JAX)
    (_t(I32), _t(F64), F64),
    (_t(B), _t(I32), I32),
    (_t(F32), np.float64(2.0), F64),  # numpy scalars and arrays are strong (NEP 50)
    (_t(F32), np.ones(2, F64), F64),
    (np.ones(2, I64), _t(F32), F32),
]


@pytest.mark.parametrize("a, b, expected", PROMOTION,
                         ids=[f"{np.asarray(a).dtype}-{type(b).__name__}" for a, b, _ in PROMOTION])
def test_promotion_table_eager_and_traced(a, b, expected):
    assert (a + b).dtype == expected and (b + a).dtype == expected
    assert (a * b).dtype == expected and inp.maximum(a, b).dtype == expected
    # the same rule inside a trace: Tensors become traced inputs, the rest constants
    traced = irkit.function(lambda x: x + b)(np.asarray(a))
    assert traced.dtype == expected


def test_creation_defaults_and_dtype_rules_of_functions():
    assert inp.tensor([1.0, 2.0]).dtype == F32 and inp.tensor([1, 2]).dtype == I64
    assert inp.tensor(np.array([1.0])).dtype == F64  # numpy data keeps its dtype
    assert inp.tensor([1, 2], dtype=F64).dtype == F64
    assert inp.zeros((2, 3)).dtype == F32 and inp.ones(3, dtype=I32).dtype == I32
    assert inp.arange(5).dtype == I64 and inp.arange(0.0, 1.0, 0.25).shape == (4,)
    ints = inp.tensor([1, 2, 3])
    assert (ints / 2).dtype == F32 and float((ints / 2).sum()) == 3.0  # true division
    assert (ints // 2).tolist() == [0, 1, 1] and (ints // 2).dtype == I64
    assert inp.mean(ints).dtype == F32 and inp.exp(ints).dtype == F32
    assert inp.sum(ints > 1).dtype == I64 and int(inp.sum(ints > 1)) == 2
    a = inp.random.normal((3, 2), seed=4)
    np.testing.assert_array_equal(a.numpy(), inp.random.normal((3, 2), seed=4).numpy())
    assert a.dtype == F32 and not np.array_equal(a.numpy(), inp.random.normal((3, 2)).numpy())
    assert sorted(inp.random.permutation(5, seed=1).tolist()) == [0, 1, 2, 3, 4]


# ---- the lesson's tensor notebook -----------------------------------------------------------
def test_tensor_arithmetic_and_indexing_as_in_pytorch():
    x = inp.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.shape == (2, 3) and x.dtype == F32 and x.ndim == 2 and x.size == 6
    assert (x * 2 + 1).tolist() == [[3, 5, 7], [9, 11, 13]]
    assert (x @ x.T).tolist() == [[14, 32], [32, 77]]
    assert x[1].tolist() == [4, 5, 6] and x[:, 1].tolist() == [2, 5] and float(x[1, 2]) == 6
    assert x[:, ::-1][0].tolist() == [3, 2, 1] and x[[1, 1, 0], 0].tolist() == [4, 4, 1]
    assert x.sum().item() == 21 and x.sum(axis=0).tolist() == [5, 7, 9]
    assert x.max().item() == 6 and x.max(axis=1).tolist() == [3, 6]
    assert x.argmax().item() == 5 and x.argmax(axis=0).tolist() == [1, 1, 1]
    assert x.mean(axis=1, keepdims=True).shape == (2, 1)
    assert (x > 2).tolist() == [[False, False, True], [True, True, True]]
    assert inp.where(x > 2, x, 0.0).tolist() == [[0, 0, 3], [4, 5, 6]]
    assert x.reshape(3, 2)[2].tolist() == [5, 6] and inp.stack([x, x]).shape == (2, 2, 3)
    assert inp.concatenate([x, x], axis=1).shape == (2, 6)
    assert inp.expand_dims(x, 0).shape == (1, 2, 3) and inp.squeeze(x[None]).shape == (2, 3)
    y = x.at[0, 0].set(10.0)
    assert y[0, 0].item() == 10 and x[0, 0].item() == 1  # a new tensor; x is unchanged
    assert x.at[:, 2].add(1.0)[:, 2].tolist() == [4, 7]
    np.testing.assert_allclose(inp.softmax(x).sum(axis=1).numpy(), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(inp.sigmoid(inp.tensor([0.0])).numpy(), [0.5])
    assert float(x.sum()) == 21.0 and [r.tolist() for r in x][1] == [4, 5, 6]


TARGET = np.array([3.0, -2.0])


@pytest.mark.parametrize("start", [np.zeros(2), inp.zeros(2, dtype=F64)],
                         ids=["numpy", "tensor"])
def test_gradient_descent_on_the_quadratic(start):
    """sum((x - [3, -2])^2), lr 0.1, 15 steps from 0: [2.894, -1.930], as in PyTorch."""
    df = irkit.grad(lambda x: inp.sum((x - TARGET) ** 2))
    x = start
    for _ in range(15):
        x = x - 0.1 * df(x)  # eager arithmetic on a Tensor start, numpy on an array
    np.testing.assert_allclose(np.asarray(x), [2.894, -1.930], atol=5e-4)
    np.testing.assert_allclose(np.asarray(x), TARGET * (1 - 0.8 ** 15), rtol=1e-12)


def test_linear_regression_with_weak_python_floats():
    """The lesson's minibatch SGD (seed 13, one shuffle, w = 100, b = 0, lr 0.1, batch 4,
    10 epochs): w 1.86, b 1.07; `w = 100.0` against float64 data just works."""
    np.random.seed(13)
    xs = np.linspace(0, 3, 120)
    ys = 2 * xs + 0.9 + 0.5 * np.random.randn(120)
    order = np.random.permutation(120)
    dloss = irkit.grad(lambda w, b, xb, yb: ((w * xb + b - yb) ** 2).mean(), wrt=(0, 1))
    w, b = 100.0, 0.0
    for _ in range(10):
        for i in range(0, 120, 4):
            batch = order[i:i + 4]
            gw, gb = dloss(w, b, xs[batch], ys[batch])
            w, b = w - 0.1 * gw, b - 0.1 * gb
    assert (round(float(w), 2), round(float(b), 2)) == (1.86, 1.07)


def test_hessian_vector_product_by_grad_of_grad():
    a = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]])

    def f(x):  # 1/2 x^T A x + sum(tanh x): Hessian A + diag(-2 tanh sech^2)
        return 0.5 * (x @ (a @ x)) + inp.sum(inp.tanh(x))

    df = irkit.grad(f)
    hvp = irkit.grad(lambda x, v: inp.sum(df(x) * v))
    x, v = np.array([0.3, -0.2, 0.5]), np.array([1.0, 2.0, -1.0])
    t = np.tanh(x)
    hessian = a + np.diag(-2 * t * (1 - t ** 2))
    np.testing.assert_allclose(hvp(x, v), hessian @ v, rtol=1e-12)
    np.testing.assert_allclose(df(x), a @ x + 1 - t ** 2, rtol=1e-12)


def _central_jacobian(f, x, eps=1e-6):
    """d f / d x by central differences, shaped f(x).shape + x.shape (float64)."""
    cols = []
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = eps
        step = step.reshape(x.shape)
        cols.append((np.asarray(f(x + step)) - np.asarray(f(x - step))) / (2 * eps))
    out = np.asarray(f(x)).shape
    return np.stack(cols, axis=-1).reshape(out + x.shape)


def test_jacobian_and_hessian_against_central_differences_and_torch():
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 2.0]])

    def f(x):  # R^(3,) -> R^(2,)
        return inp.tanh(w @ x) * x[0]

    def g(x):  # scalar: its Hessian is the Jacobian of its gradient
        return inp.sum(inp.sin(x) * x ** 2) + x[0] * x[2]

    x = np.array([0.4, -0.7, 1.1])
    numeric = lambda x: np.tanh(w @ x) * x[0]  # noqa: E731
    jac = irkit.jacobian(f)(x)
    assert jac.shape == (2, 3)
    np.testing.assert_allclose(jac, _central_jacobian(numeric, x), rtol=1e-6, atol=1e-9)
    hess = irkit.hessian(g)(x)
    grad_g = irkit.grad(g)
    np.testing.assert_allclose(hess, _central_jacobian(grad_g, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-12)
    torch = pytest.importorskip("torch")
    tw = torch.tensor(w)
    tj = torch.autograd.functional.jacobian(lambda t: torch.tanh(tw @ t) * t[0],
                                            torch.tensor(x))
    th = torch.autograd.functional.hessian(
        lambda t: (torch.sin(t) * t ** 2).sum() + t[0] * t[2], torch.tensor(x))
    np.testing.assert_allclose(jac, tj.numpy(), rtol=1e-12)
    np.testing.assert_allclose(hess, th.numpy(), rtol=1e-12)


def test_jacobian_of_several_arguments_is_shaped_output_then_argument():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2) / 5
    ja, jb = irkit.jacobian(lambda a, b: a @ b, wrt=(0, 1))(a, b)
    assert ja.shape == (2, 2, 2, 3) and jb.shape == (2, 2, 3, 2)
    # d(ab)_ij / d a_kl = [i == k] b_lj;  d(ab)_ij / d b_kl = a_ik [j == l]
    eye = np.eye(2)
    np.testing.assert_allclose(ja, np.einsum("ik,lj->ijkl", eye, b))
    np.testing.assert_allclose(jb, np.einsum("ik,jl->ijkl", a, eye))


def test_jacobian_refuses_what_it_cannot_do_in_one_line():
    with pytest.raises(ShapeError, match="at most 4096.*use vjp"):
        irkit.jacobian(lambda x: x * 2.0)(np.zeros(5000))
    with pytest.raises(ShapeError, match="one argument index"):
        irkit.hessian(lambda x, y: inp.sum(x * y), wrt=(0, 1))
    with pytest.raises(ShapeError, match="has 1 outputs; `of=2`"):
        irkit.jacobian(lambda x: x * 2.0, of=2)(np.zeros(3))


# ---- value_and_grad and grad: JAX's shapes --------------------------------------------------
def test_value_and_grad_returns_value_then_grads():
    def f(x, y):
        return inp.sum(x * y) + inp.sum(x ** 2)

    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    value, gx = irkit.value_and_grad(f)(x, y)
    assert float(value) == 6.0 and gx.tolist() == [5.0, 3.0]
    value, (gx, gy) = irkit.value_and_grad(f, wrt=(0, 1))(x, y)
    assert gx.tolist() == [5.0, 3.0] and gy.tolist() == [1.0, 2.0]
    (only,) = irkit.grad(f, wrt=(1,))(x, y)  # a sequence gives a tuple, even of one
    assert only.tolist() == [1.0, 2.0]
    inner = irkit.value_and_grad(lambda x: inp.sum(x ** 3))
    outer = irkit.function(lambda x: inner(x)[0] + inp.sum(inner(x)[1]))  # inside a trace
    np.testing.assert_allclose(outer(np.array([1.0, 2.0])), 9.0 + 15.0)


# ---- numpy's functions on Tensors -------------------------------------------------------------
def test_numpy_functions_dispatch_to_irkit():
    t = inp.tensor(np.array([[1.0, -2.0], [3.0, 0.5]]))
    for result in (np.exp(t), np.sum(t, axis=0), np.maximum(t, 0.0), np.transpose(t),
                   np.concatenate([t, t]), np.where(t > 0, t, 0.0), t + np.ones(2)):
        assert isinstance(result, irkit.Tensor)
    np.testing.assert_allclose(np.mean(t, axis=1).numpy(), [-0.5, 1.75])
    assert np.median(t) == 0.75  # no irkit median: numpy computes it on the data (eager only)
    g = irkit.grad(lambda x: np.sum(np.tanh(x) * 2.0))(np.array([0.0, 1.0]))
    np.testing.assert_allclose(g, 2 * (1 - np.tanh([0.0, 1.0]) ** 2))


# ---- misuse: one line each ------------------------------------------------------------------
def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_shapes_that_do_not_broadcast_name_both():
    with pytest.raises(ShapeError) as e:
        inp.ones((2, 3)) + inp.ones((4,))
    assert "(2, 3)" in _one_line(e) and "(4)" in _one_line(e)
    with pytest.raises(ShapeError, match="do not multiply"):
        inp.ones((2, 3)) @ inp.ones((2, 3))


def test_a_python_branch_on_a_traced_value_says_use_where():
    def f(x):
        return x * 2.0 if inp.sum(x) > 0 else -x

    with pytest.raises(TraceError) as e:
        irkit.function(f)(np.ones(2))
    assert "inp.where" in _one_line(e)
    with pytest.raises(TraceError, match="float"):
        irkit.function(lambda x: x * float(x.sum()))(np.ones(2))


def test_a_traced_value_used_after_its_trace_fails():
    leaked = []
    irkit.function(lambda x: leaked.append(x * 2.0) or x.sum())(np.ones(2))
    with pytest.raises(TraceError) as e:
        leaked[0] + 1.0
    assert "after its trace ended" in _one_line(e)
    with pytest.raises(TraceError, match="no data while tracing"):
        leaked[0].numpy()


def test_an_index_out_of_range_names_the_axis_and_size():
    x = inp.zeros((3, 4))
    with pytest.raises(ShapeError) as e:
        x[5]
    assert _one_line(e) == "index 5 is out of range for axis 0 of size 3"
    with pytest.raises(ShapeError, match="axis 1 of size 4"):
        irkit.function(lambda a: a[:, np.array([0, 4])])(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="too many indices"):
        x[0, 0, 0]


def test_numpy_without_an_irkit_equivalent_fails_in_one_line_inside_a_trace():
    with pytest.raises(TraceError) as e:
        irkit.function(lambda x: np.median(x))(np.ones(3))
    assert "numpy.median" in _one_line(e)
    with pytest.raises(TraceError, match="boolean mask"):
        irkit.function(lambda x: x[x > 0])(np.ones(3))
