"""`irkit optimize` and its passes: same outputs (1e-5) on onnxruntime, fewer nodes, checker."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from irkit.passes import (
    FoldBatchNormPass,
    FuseMatMulAddPass,
    RemoveNoOpsPass,
    SimplifyShapesPass,
)
from irkit.runtimes.onnxruntime import make_session

from irkit.cli import main
from irkit.graph_optimize import optimize_proto, random_feeds
from irkit.onnx_io import from_onnx, to_onnx

torch = pytest.importorskip("torch")


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return make_session(model.SerializeToString(), "cpu").run(None, feeds)


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, batch: int = 3):
    onnx.checker.check_model(after, full_check=True)
    feeds = random_feeds(before, batch, seed=1)
    for a, b in zip(run(before, feeds), run(after, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


class BnNet(torch.nn.Module):
    """Conv-BN (with and without conv bias), a flatten by shape arithmetic, Linear-BN1d,
    Dropout: what torch.onnx.export writes for a small CNN."""

    def __init__(self) -> None:
        super().__init__()
        t = torch.nn
        self.c1, self.b1 = t.Conv2d(3, 8, 3, padding=1), t.BatchNorm2d(8)
        self.c2, self.b2 = t.Conv2d(8, 16, 3, padding=1, bias=False), t.BatchNorm2d(16)
        self.fc, self.b3 = t.Linear(16 * 4 * 4, 32), t.BatchNorm1d(32)
        self.drop, self.out = t.Dropout(0.1), t.Linear(32, 10)

    def forward(self, x):
        f = torch.nn.functional
        x = f.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = f.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        x = x.reshape(x.shape[0], -1)
        return self.out(self.drop(torch.relu(self.b3(self.fc(x)))))


def torch_cnn(tmp_path, dynamo: bool, fold: bool) -> onnx.ModelProto:
    torch.manual_seed(0)
    net = BnNet()
    for bn in (net.b1, net.b2, net.b3):  # statistics far from the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    path = tmp_path / "cnn.onnx"
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(net, (x,), str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(net, (x,), str(path), dynamo=False, do_constant_folding=fold,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load(str(path))


@pytest.mark.parametrize("fold", [False, True])
def test_torch_legacy_cnn_with_batchnorm(tmp_path, fold):
    model = torch_cnn(tmp_path, dynamo=False, fold=fold)
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    optimized = optimize_proto(model)
    assert_same_outputs(model, optimized)
    ops = [n.op_type for n in optimized.graph.node]
    assert len(ops) < len(model.graph.node)
    assert not {"BatchNormalization", "Shape", "Gather", "Concat", "Constant"} & set(ops)


def test_torch_dynamo_cnn_runs_the_same(tmp_path):
    model = torch_cnn(tmp_path, dynamo=True, fold=True)  # the exporter folded BN already
    optimized = optimize_proto(model)
    assert_same_outputs(model, optimized)
    assert len(optimized.graph.node) <= len(model.graph.node)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    paths = {}
    for name in ("iris_mlp", "digits_mlp", "digits_cnn", "iris_linear"):
        paths[name] = folder / f"{name}.onnx"
        result = CliRunner().invoke(main, ["build", name, "-o", str(paths[name])])
        assert result.exit_code == 0, result.output
    return paths


@pytest.mark.parametrize("name", ["iris_mlp", "digits_mlp", "digits_cnn", "iris_linear"])
def test_irkit_recipes(recipes, name):
    model = onnx.load(str(recipes[name]))
    optimized = optimize_proto(model)
    assert_same_outputs(model, optimized, batch=5)
    assert len(optimized.graph.node) < len(model.graph.node)


def test_trained_cnn_with_batchnorm(tmp_path):
    path = tmp_path / "cnn.onnx"
    result = CliRunner().invoke(main, ["train", "digits_cnn", "--epochs", "1", "-o", str(path)])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(path))
    optimized = optimize_proto(model)
    assert_same_outputs(model, optimized, batch=7)
    assert "BatchNormalization" not in {n.op_type for n in optimized.graph.node}


def test_cli_optimize_reports_and_writes(recipes, tmp_path):
    out = tmp_path / "opt.onnx"
    result = CliRunner().invoke(main, ["optimize", str(recipes["digits_cnn"]), "-o", str(out),
                                       "--repeats", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["nodes_after"] < report["nodes_before"] and report["ran_before"]
    assert set(report["latency_ms"]) == {"before", "after"}
    assert_same_outputs(onnx.load(str(recipes["digits_cnn"])), onnx.load(str(out)))
    same = CliRunner().invoke(main, ["optimize", str(out), "-o", str(out)])
    assert same.exit_code == 1 and "input" in same.output


def test_each_pass_alone_keeps_outputs(tmp_path):
    model = torch_cnn(tmp_path, dynamo=False, fold=False)
    for p in (SimplifyShapesPass(), RemoveNoOpsPass(), FoldBatchNormPass(), FuseMatMulAddPass()):
        graph = from_onnx(model)
        result = p(graph)
        graph.verify()
        assert_same_outputs(model, to_onnx(graph))
        if isinstance(p, FoldBatchNormPass):
            assert result.modified
    # the legacy exporter's Shape-Gather-Unsqueeze-Concat-Reshape of a dynamic batch is
    # already a constant Reshape after import: SimplifyShapesPass's own case is below
    assert not any(n.op_type == "Shape" for n in from_onnx(model).nodes)


def test_simplify_shapes_makes_a_computed_reshape_constant():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) on an IR graph: the shape
    becomes the constant [0, -1] (the Shape, Gather... are then dead); outputs unchanged."""
    from irkit.ir import Graph
    from irkit.ops.base import apply
    g = Graph("flatten")
    x = g.add_input("x", np.float32, ("N", 3, 4))
    zero = g.add_initializer("zero", np.array(0, np.int64))
    axes = g.add_initializer("axes", np.array([0], np.int64))
    rest = g.add_initializer("rest", np.array([-1], np.int64))
    n = apply(g, "Gather", [apply(g, "Shape", [x]).outputs[0], zero]).outputs[0]
    shape = apply(g, "Concat", [apply(g, "Unsqueeze", [n, axes]).outputs[0], rest],
                  {"axis": 0}).outputs[0]
    g.outputs.append(apply(g, "Reshape", [x, shape]).outputs[0])
    before = to_onnx(g)
    result = SimplifyShapesPass()(g)
    g.verify()
    reshape = next(node for node in g.nodes if node.op_type == "Reshape")
    assert result.modified and reshape.inputs[1].const.tolist() == [0, -1]
    assert_same_outputs(before, to_onnx(g))


def test_matmul_add_becomes_gemm():
    from irkit import ops
    from irkit.ir import Graph
    g = Graph("g")
    x = g.add_input("x", np.float32, ("N", 4))
    w = g.add_initializer("w", np.ones((4, 3), np.float32))
    b = g.add_initializer("b", np.arange(3, dtype=np.float32))
    g.outputs = [ops.Add(b, ops.MatMul(x, w))]
    before = to_onnx(g)
    assert FuseMatMulAddPass()(g).modified
    assert [n.op_type for n in g.nodes] == ["Gemm"] and g.outputs[0].name == "Add"
    assert_same_outputs(before, to_onnx(g))
    ints = Graph("ints")  # onnxruntime has no integer Gemm: these stay MatMul + Add
    xi = ints.add_input("x", np.int64, (2, 4))
    ints.outputs = [ops.Add(ops.MatMul(xi, np.ones((4, 3), np.int64)), np.ones(3, np.int64))]
    assert not FuseMatMulAddPass()(ints).modified


def test_compare_with_onnxsim(tmp_path):
    onnxsim = pytest.importorskip("onnxsim")
    model = torch_cnn(tmp_path, dynamo=False, fold=False)
    simplified, ok = onnxsim.simplify(model)
    assert ok
    ours = optimize_proto(model)
    assert_same_outputs(model, ours)
    assert len(ours.graph.node) <= len(simplified.graph.node)


def test_neutral_arithmetic_goes_but_broadcasting_stays():
    from irkit import ops
    from irkit.ir import Graph
    g = Graph("g")
    x = g.add_input("x", np.float32, ("N", 4))
    y = ops.Mul(ops.Sub(x, np.zeros(4, np.float32)), np.ones((1, 4), np.float32))
    widened = ops.Add(y, np.zeros((3, 1, 4), np.float32))  # broadcasts to (3, N, 4): kept
    halved = ops.Div(y, np.full(4, 2.0, np.float32))        # not neutral: kept
    g.outputs = [widened, halved]
    before = to_onnx(g)
    assert RemoveNoOpsPass()(g).modified
    assert sorted(n.op_type for n in g.nodes) == ["Add", "Div"]
    assert_same_outputs(before, to_onnx(g))
