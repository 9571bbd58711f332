"""`irkit export --opset 13..16` of models with opset-17 forms (issue 18, item 6's lowering):
LayerNormalization decomposed, training-mode BatchNormalization unfused, Reshape's allowzero
dropped where the shape holds no 0 (refused in one line otherwise), Shape's start/end sliced.

Torch exports (a ResNet from the dynamo exporter, a legacy training-mode one, and a pre-LN
transformer block from both) are lowered to opset 13 by the CLI, checked by onnx's full checker
and run by onnxruntime, equal to the original file; hand-made models cover the outputs the
exporters do not read (running statistics, LayerNorm's Mean and InvStdDev, float16).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from irkit.errors import UnsupportedOpError
from irkit.onnx_io import convert_opset
from tests.cli_checks import cli, one_line_error

OLD_OPSET = 13


def _run(model: onnx.ModelProto | str, feeds: dict) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _lowered_by_cli(src: str, tmp_path, opset: int = OLD_OPSET) -> onnx.ModelProto:
    out = tmp_path / f"lowered_{opset}.onnx"
    result = cli("export", src, "-o", out, "--opset", opset)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    return model


def _assert_same_as_original(src: str, lowered: onnx.ModelProto, x: np.ndarray) -> None:
    name = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    want = _run(src, {name: x})
    got = _run(lowered, {lowered.graph.input[0].name: x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.fixture(scope="module")
def torch_models():
    torch = pytest.importorskip("torch")
    return torch, pytest.importorskip("tests.torch_models")


@pytest.mark.parametrize("dynamo,training", [(True, False), (False, True)])
def test_torch_cnn_lowered_to_13_equals_the_original(torch_models, tmp_path, dynamo, training):
    torch, tm = torch_models
    net, inputs = tm.make("resnet", loss=False, batch=2)
    src = str(tmp_path / "resnet.onnx")
    tm.export(net, {"x": inputs["x"][:, :, :32, :32]}, src, dynamo=dynamo, training=training,
              output="logits")
    lowered = _lowered_by_cli(src, tmp_path)
    assert not any(a.name == "allowzero" for n in lowered.graph.node for a in n.attribute)
    if training:  # opset 13's BatchNormalization has no training_mode: unfused
        assert "BatchNormalization" not in _ops(lowered) and "ReduceMean" in _ops(lowered)
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    _assert_same_as_original(src, lowered, x)


@pytest.mark.parametrize("dynamo", [True, False])
def test_transformer_block_lowered_to_13_equals_the_original(torch_models, tmp_path, dynamo):
    torch, tm = torch_models

    class Block(torch.nn.Module):
        """A pre-LN transformer block: LayerNorm, attention, LayerNorm, GELU MLP."""

        def __init__(self, d: int = 16) -> None:
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.att = torch.nn.MultiheadAttention(d, 2, batch_first=True)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(),
                                           torch.nn.Linear(2 * d, d))

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.att(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    torch.manual_seed(0)
    net = tm.perturb(Block()).eval()
    rng = np.random.default_rng(0)
    src = str(tmp_path / "block.onnx")
    tm.export(net, {"x": rng.standard_normal((2, 5, 16)).astype(np.float32)}, src,
              dynamo=dynamo, output="y")
    assert "LayerNormalization" in _ops(onnx.load(src, load_external_data=False))
    for opset in (OLD_OPSET, 16):
        lowered = _lowered_by_cli(src, tmp_path, opset)
        assert "LayerNormalization" not in _ops(lowered)
        _assert_same_as_original(src, lowered, rng.standard_normal((3, 5, 16)).astype(
            np.float32))


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _info(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def test_training_batch_norm_running_statistics_lowered():
    """All three outputs of a training-mode BatchNormalization, stats fed as inputs (onnxruntime
    writes a training BatchNorm's running statistics into its input buffers)."""
    f = TensorProto.FLOAT
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                          training_mode=1, momentum=0.8, epsilon=1e-3)
    model = _model([bn], [_info("x", f, [4, 3, 5]), *[_info(k, f, [3]) for k in "sbmv"]],
                   [_info("y", f, [4, 3, 5]), _info("rm", f, [3]), _info("rv", f, [3])])
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 3, 5)).astype(np.float32),
             **{k: rng.random(3).astype(np.float32) + 0.5 for k in "sbmv"}}
    lowered = convert_opset(model, OLD_OPSET)
    onnx.checker.check_model(lowered, full_check=True)
    assert "BatchNormalization" not in _ops(lowered)
    for got, want in zip(_run(lowered, dict(feeds)), _run(model, dict(feeds)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("elem,axis", [(TensorProto.FLOAT, 1), (TensorProto.FLOAT16, -1)])
def test_layer_norm_mean_and_inv_std_dev_outputs_lowered(elem, axis):
    """Y in X's type; Mean and InvStdDev in float32 (stash_type 1) over axes axis..-1."""
    np_type = helper.tensor_dtype_to_np_dtype(elem)
    shape = [2, 3, 4]
    norm, stats = shape[axis:], shape[:axis] + [1] * len(shape[axis:])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(norm).astype(np_type), k)
             for k in ("scale", "bias")]
    ln = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv"],
                          axis=axis, epsilon=1e-4)
    model = _model([ln], [_info("x", elem, shape)],
                   [_info("y", elem, shape), _info("mean", TensorProto.FLOAT, stats),
                    _info("inv", TensorProto.FLOAT, stats)], inits)
    lowered = convert_opset(model, OLD_OPSET)
    onnx.checker.check_model(lowered, full_check=True)
    assert "LayerNormalization" not in _ops(lowered)
    feeds = {"x": rng.standard_normal(shape).astype(np_type)}
    tol = 1e-5 if elem == TensorProto.FLOAT else 2e-3
    for got, want in zip(_run(lowered, feeds), _run(model, feeds), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol,
                                   atol=tol)


def _computed_shape_reshape(allowzero: int) -> onnx.ModelProto:
    """Reshape(x, Concat(Shape(x)[:1], [2, 3])) of a symbolic batch: the shape is known only
    when it runs."""
    nodes = [helper.make_node("Shape", ["x"], ["batch"], end=1),
             helper.make_node("Constant", [], ["rest"],
                              value=numpy_helper.from_array(np.array([2, 3], np.int64))),
             helper.make_node("Concat", ["batch", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten",
                              allowzero=allowzero)]
    return _model(nodes, [_info("x", TensorProto.FLOAT, ["N", 6])],
                  [_info("y", TensorProto.FLOAT, ["N", 2, 3])])


def test_reshape_allowzero_of_a_computed_shape_is_refused_in_one_line(tmp_path):
    with pytest.raises(UnsupportedOpError, match="'flatten'.*allowzero=1.*--opset 14"):
        convert_opset(_computed_shape_reshape(1), OLD_OPSET)
    src = tmp_path / "reshape.onnx"
    onnx.save(_computed_shape_reshape(1), str(src))
    one_line_error(cli("export", src, "-o", tmp_path / "out.onnx", "--opset", "13"),
                   "'flatten'", "allowzero=1", "--opset 14")
    assert not (tmp_path / "out.onnx").exists()
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    for allowzero, opset in ((0, OLD_OPSET), (1, 14)):  # expressible: written, same values
        lowered = convert_opset(_computed_shape_reshape(allowzero), opset)
        onnx.checker.check_model(lowered, full_check=True)
        np.testing.assert_array_equal(_run(lowered, {"x": x})[0], x.reshape(4, 2, 3))


def test_types_opset_17_lacks_are_written_between_casts():
    """A float16 Celu and a bool ReduceMax built in Python (opset 17's Celu takes float, its
    ReduceMax no bool): written between Casts, valid, and equal to the reference runtime."""
    from irkit.runtimes.reference import ReferenceRuntime

    from irkit import ops
    from irkit.ir import Graph
    from irkit.onnx_io import to_onnx

    g = Graph("widen")
    x = g.add_input("x", np.float16, (2, 3))
    b = g.add_input("b", np.bool_, (2, 3))
    g.outputs = [ops.Celu(x, alpha=0.5), ops.ReduceMax(b, axes=[1], keepdims=0)]
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Cast") == 4
    feeds = {"x": np.array([[-2, -0.5, 0], [0.25, 1, 3]], np.float16),
             "b": np.array([[False, True, False], [False, False, False]])}
    got = _run(model, feeds)
    for have, want in zip(got, ReferenceRuntime().compile(g)(feeds), strict=True):
        assert have.dtype == want.dtype
        np.testing.assert_allclose(have.astype(np.float32), want.astype(np.float32), atol=1e-3)
    np.testing.assert_array_equal(got[1], [True, False])


@pytest.mark.parametrize("kernel, shape, written", [
    ([1, 1], (1, 1, 2, 2), 0),   # both axes drop the window starting in the end pad: floor
    ([2, 2], (1, 1, 3, 3), 1),   # both keep a partial window: ceil_mode as it is
    ([1, 2], (1, 1, 2, 3), None),  # one drops, one keeps: opset 17 cannot say it
])
def test_ceil_pool_windows_are_written_as_onnx_checks_them(kernel, shape, written):
    """irkit (as onnxruntime) drops a ceil_mode window that would start in the end pad; onnx's
    opset-17 shape inference keeps it: the file says floor mode where that is the same."""
    from irkit.runtimes.reference import ReferenceRuntime

    from irkit import ops
    from irkit.ir import Graph
    from irkit.onnx_io import to_onnx

    g = Graph("pool")
    x = g.add_input("x", np.float32, shape)
    g.outputs = [ops.MaxPool(x, kernel_shape=kernel, strides=[2, 2], ceil_mode=1)]
    if written is None:
        with pytest.raises(UnsupportedOpError, match="ceil_mode drops the last window"):
            to_onnx(g)
        return
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    assert helper.get_attribute_value(next(a for a in pool.attribute
                                           if a.name == "ceil_mode")) == written
    feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    np.testing.assert_array_equal(_run(model, feeds)[0],
                                  ReferenceRuntime().compile(g)(feeds)[0])
