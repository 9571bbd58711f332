"""Composite gradient rules (passes/composite_gradients.py): a subgraph an exporter writes for
one function (Erf-GELU) differentiated by that function's own derivative, checked against the
closed form and against the chain rule through the nodes."""

from __future__ import annotations

import numpy as np
import pytest
from irkit.passes import gradients

from irkit import ops
from irkit.ir import Graph
from tests.test_autodiff import _run_both, _run_reference


def _erf_gelu(x, half=0.5):
    return ops.Mul(ops.Mul(x, half), ops.Add(ops.Erf(ops.Mul(x, float(1 / np.sqrt(2)))), 1.0))


def _legacy_erf_gelu(x):
    return ops.Mul(ops.Mul(x, ops.Add(ops.Erf(ops.Div(x, float(np.sqrt(2)))), 1.0)), 0.5)


@pytest.mark.parametrize("form", [_erf_gelu, _legacy_erf_gelu])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_gelu_gradient_is_one_rule(dtype, form):
    """An imported Erf-GELU's gradient is Phi(x) + x phi(x) in 7 kernels (one Exp, no Neg),
    equal to torch's gelu derivative; where a value inside is read elsewhere, the chain rule
    runs through the nodes instead, with the same result."""
    from math import erf, exp, pi, sqrt
    xs = np.linspace(-4, 4, 24).reshape(4, 6).astype(dtype)
    want = np.vectorize(lambda v: 0.5 * (1 + erf(v / sqrt(2))) + v * exp(-v * v / 2) /
                        sqrt(2 * pi))(xs.astype(np.float64))
    for shared in (False, True):
        g = Graph("gelu")
        x = g.add_input("x", dtype, (4, 6))
        y = form(x)
        side = y.producer.inputs[0] if shared else None  # x/2 or x A read elsewhere too
        out = ops.ReduceSum(ops.Add(y, side) if shared else y, keepdims=0)
        before = len(g.nodes)
        (gx,) = gradients(g, out, [x])
        kinds = [n.op_type for n in g.nodes[before:]]
        assert ("Neg" in kinds) == shared and kinds.count("Exp") == 1
        g.outputs = [gx]
        run = _run_both if dtype == np.float32 else _run_reference  # no float64 Erf in ORT
        (dx,) = run(g, {"x": xs})
        tol = 1e-12 if dtype == np.float64 else 2e-6
        extra = 0.0 if not shared else 0.5 if form is _erf_gelu else (
            np.vectorize(lambda v: 1 + erf(v / sqrt(2)) + v * sqrt(2 / pi) * exp(-v * v / 2))(
                xs.astype(np.float64)))  # d(x A)/dx
        np.testing.assert_allclose(dx, want + extra, rtol=tol, atol=tol)


def test_erf_gelu_rule_needs_constants_that_do_not_train():
    """A factor that is itself differentiated (here the 0.5) keeps the chain rule, so its
    gradient is not lost."""
    g = Graph("gelu_w")
    x = g.add_input("x", np.float64, (3,))
    half = g.add_initializer("half", np.array(0.5))
    out = ops.ReduceSum(_erf_gelu(x, half), keepdims=0)
    gx, gh = gradients(g, out, [x, half])
    g.outputs = [gx, gh]
    xs = np.array([-1.0, 0.3, 2.0])
    dx, dh = _run_reference(g, {"x": xs})
    from math import erf, sqrt
    np.testing.assert_allclose(dh, sum(v * (1 + erf(v / sqrt(2))) for v in xs), rtol=1e-12)
