"""Import-time folding (issue 9 items 3 and 7): computed shape parameters of real torch exports
without constant folding become constants, so `irkit grad` works on them and agrees with torch
autograd; and folding never evaluates what would exceed its cap (the 181-byte fold bomb)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from irkit.cli import main
from irkit.errors import UnsupportedOpError
from irkit.onnx_io import from_onnx, to_onnx

torch = pytest.importorskip("torch")
F = torch.nn.functional


class _PadSliceCNN(torch.nn.Module):
    """F.pad (computed Pad pads), Conv, slicing (Slice starts from Unsqueeze of constants),
    reshape by x.shape[0] (Shape -> Gather -> Unsqueeze -> Concat), Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * 4 * 6, 5)

    def forward(self, x):
        h = F.pad(x, (1, 2, 0, 1))
        h = torch.tanh(self.conv(h))
        h = h[:, :, 1:5, 2:-1]
        return self.fc(h.reshape(h.shape[0], -1))


X = np.random.default_rng(3).standard_normal((2, 2, 5, 6)).astype(np.float32)


@pytest.fixture(scope="module", params=[17, 20])
def unfolded(request, tmp_path_factory):
    module = _PadSliceCNN()
    path = tmp_path_factory.mktemp("unfolded") / f"cnn{request.param}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(X),), str(path), dynamo=False,
                          do_constant_folding=False, opset_version=request.param,
                          input_names=["x"], output_names=["y"])
    return module, path


def test_torch_export_without_folding_computes_its_shape_parameters(unfolded):
    _, path = unfolded
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert {"Shape", "Gather", "Concat", "ConstantOfShape"} <= set(ops)  # really unfolded


def test_grad_of_unfolded_torch_export_equals_torch_autograd(unfolded, tmp_path):
    module, path = unfolded
    out = tmp_path / "g.onnx"
    result = CliRunner().invoke(main, ["grad", str(path), "--of", "y", "--wrt",
                                       "x,conv.weight,fc.bias", "-o", str(out)])
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    cotangent = np.random.default_rng(4).standard_normal((2, 5)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {"x": X, "y_grad": cotangent})))
    module.zero_grad()
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    module(x).backward(torch.from_numpy(cotangent))
    np.testing.assert_allclose(got["y"], module(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["x_grad"], x.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["conv.weight_grad"], module.conv.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["fc.bias_grad"], module.fc.bias.grad.numpy(), rtol=1e-5)


def test_folding_keeps_static_shapes_and_drops_the_shape_arithmetic(unfolded):
    _, path = unfolded
    graph = from_onnx(onnx.load(str(path)))
    ops = {n.op_type for n in graph.nodes}
    assert not ops & {"Shape", "Gather", "Concat", "ConstantOfShape", "Unsqueeze"}
    assert all(v.shape is not None and None not in v.shape for n in graph.nodes
               for v in n.outputs)


def _fold_bomb(elements: int) -> onnx.ModelProto:
    """ConstantOfShape of `elements` zeros reduced to a computed ReduceMean axes input."""
    nodes = [helper.make_node("ConstantOfShape", ["bs"], ["cz"]),
             helper.make_node("ReduceSum", ["cz"], ["s"], keepdims=1),
             helper.make_node("Cast", ["s"], ["ax"], to=TensorProto.INT64),
             helper.make_node("ReduceMean", ["x", "ax"], ["y"])]
    graph = helper.make_graph(
        nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([elements], np.int64), "bs")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def test_fold_bomb_is_refused_without_allocating(tmp_path):
    """Issue 9: 7.9 GB before. A subprocess measures its own peak memory around the import."""
    path = tmp_path / "fold_bomb.onnx"
    onnx.save(_fold_bomb(4 * 10**8), str(path))
    code = ("import resource, sys\n"
            "from irkit.onnx_io import load\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=path.parent)  # the installed irkit
    error, grown_kb = done.stdout.splitlines()
    assert error.startswith("UnsupportedOpError") and "folding limit" in error, error
    assert int(grown_kb) < 50_000, f"import grew the process by {grown_kb} kB"


def test_small_fold_still_folds():
    """Under the cap the same construction folds: the axes are the sum of one zero, axis 0."""
    graph = from_onnx(_fold_bomb(1))
    mean = next(n for n in graph.nodes if n.op_type == "ReduceMean")
    assert list(mean.attributes["axes"]) == [0] and len(mean.inputs) == 1


def test_unfoldable_parameter_is_a_one_line_error():
    with pytest.raises(UnsupportedOpError, match="2097152 elements, over the import folding"):
        from_onnx(_fold_bomb(2**21))


def test_static_dims_of_a_dynamic_shape_fold():
    """The legacy exporter's `x.view(-1, x.shape[-1])` and `x.shape[1:]` under a dynamic batch:
    a Gather or Slice of Shape(x) that picks only static dims folds, so the Reshapes' shapes
    are constants (the batch dim stays symbolic) and the outputs are onnxruntime's."""
    model = onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
        m (float[N,3,4] x) => (float[M,4] a, float[N,12] b) {
        s = Shape (x)
        last = Constant <value_ints = [-1]> ()
        tail = Gather <axis = 0> (s, last)
        shape_a = Concat <axis = 0> (last, tail)
        a = Reshape (x, shape_a)
        one = Constant <value_ints = [1]> ()
        big = Constant <value_ints = [9]> ()
        dims = Slice (s, one, big)
        twelve = ReduceProd <keepdims = 1> (dims)
        shape_b = Concat <axis = 0> (last, twelve)
        b = Reshape (x, shape_b) }''')
    graph = from_onnx(model)
    reshapes = [n for n in graph.nodes if n.op_type == "Reshape"]
    assert [list(n.inputs[1].const) for n in reshapes] == [[-1, 4], [-1, 12]]
    assert reshapes[1].outputs[0].shape == ("N", 12)
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    for proto in (model, to_onnx(graph)):
        a, b = ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})
        np.testing.assert_array_equal(a, x.reshape(-1, 4))
        np.testing.assert_array_equal(b, x.reshape(5, 12))
