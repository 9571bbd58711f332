"""A gradient asked through a float input whose op rule gives it none (Resize's scales, a
training Dropout's ratio) is refused in one line naming the node and the input, instead of
coming back as zeros; constant, frozen and piecewise-constant cases stay silent, and an
inactive Dropout's ratio has its true gradient, 0."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from irkit.passes import gradients
from irkit.runtimes.reference import ReferenceRuntime
from onnx import TensorProto, helper, numpy_helper

from irkit import ops
from irkit.errors import UnsupportedOpError
from irkit.ir import Graph
from tests.cli_checks import cli, one_line_error

F64 = np.float64


def _resize_model(path: str) -> None:
    """y = Resize(x, scales=s) with s an initializer (it folds as a constant)."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="upsample", mode="linear")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], [scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)


def test_grad_through_resize_scales_is_refused_in_one_line(tmp_path):
    src = str(tmp_path / "resize.onnx")
    _resize_model(src)
    out = tmp_path / "g.onnx"
    one_line_error(cli("grad", src, "--of", "y", "--wrt", "s", "-o", out),
                   "'upsample' (Resize)", "input 2 ('s')", "no gradient")
    assert not out.exists()
    # the scales as the constant they are: the gradient of x is written
    result = cli("grad", src, "--of", "y", "--wrt", "x", "-o", out)
    assert result.exit_code == 0, result.output


def _dropout_graph(training: bool):
    g = Graph("dropout")
    x = g.add_input("x", F64, (4, 5))
    ratio = g.add_input("ratio", F64, ())
    y, _ = ops.Dropout(x, ratio, np.array(training), seed=1, _num_outputs=2)
    return g, x, ratio, (y * x).sum()


def test_training_dropout_ratio_gradient_is_refused_naming_the_node():
    g, x, ratio, loss = _dropout_graph(training=True)
    with pytest.raises(UnsupportedOpError) as e:
        gradients(g, loss, [x, ratio])
    message = str(e.value)
    assert "\n" not in message and "(Dropout)" in message and "input 1 ('ratio')" in message
    g, x, ratio, loss = _dropout_graph(training=True)
    (gx,) = gradients(g, loss, [x])  # the ratio not differentiated: silent, as before
    assert gx.shape == (4, 5)


def test_inactive_dropout_passes_g_and_gives_the_ratio_a_zero_gradient():
    g, x, ratio, loss = _dropout_graph(training=False)
    gx, gr = gradients(g, loss, [x, ratio])
    g.outputs = [gx, gr]
    xs = np.random.default_rng(0).standard_normal((4, 5))
    dx, dr = ReferenceRuntime().compile(g)({"x": xs, "ratio": np.array(0.3)})
    np.testing.assert_allclose(dx, 2 * xs)  # d sum(x * x) = 2x: no 1 / (1 - ratio) scaling
    assert dr == 0.0


def test_piecewise_constant_and_computed_integer_paths_stay_silent():
    g = Graph("silent")
    x = g.add_input("x", F64, (2, 3))
    # Floor's gradient is 0; Shape(x) is an integer path feeding Expand's shape
    loss = (ops.Floor(x) + ops.Expand(ops.Tanh(x), ops.Shape(x))).sum()
    (gx,) = gradients(g, loss, [x])
    g.outputs = [gx]
    xs = np.random.default_rng(1).standard_normal((2, 3))
    (dx,) = ReferenceRuntime().compile(g)({"x": xs})
    np.testing.assert_allclose(dx, 1 - np.tanh(xs) ** 2)
