"""Analyses on the networkx view and `irkit inspect`: figures, exports, cycles, lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import networkx as nx
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from irkit.passes.analysis import (
    Sizes,
    execution_order,
    figures,
    node_flops,
    peak_memory,
    saved_for_backward,
    with_batch,
)
from irkit.passes.graph_view import critical_path, depth, to_dot, to_networkx
from onnx import helper

from irkit import ops
from irkit.cli import main
from irkit.errors import ModelFileError
from irkit.ir import Graph
from irkit.onnx_io import from_onnx


def mlp(batch="N", widths=(8, 16, 4)) -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", np.float32, (batch, widths[0]))
    rng = np.random.default_rng(0)
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        w = g.add_initializer(f"W{i}", rng.standard_normal((a, b)).astype(np.float32))
        x = ops.Relu(ops.MatMul(x, w))
    g.outputs = [x]
    return g


def test_flops_bytes_and_parameters_of_an_mlp():
    g = mlp()
    f = figures(g, dims={"N": 10})
    # MatMul: 2 * (10*16) * 8 and 2 * (10*4) * 16; Relu: one per element
    assert f.flops == 2 * 160 * 8 + 160 + 2 * 40 * 16 + 40
    assert f.parameters == 8 * 16 + 16 * 4
    assert f.ops == {"MatMul": 2, "Relu": 2}
    assert f.parts == {"forward": {"nodes": 4, "flops": f.flops, "bytes": f.bytes}}
    matmul = g.nodes[0]
    assert f.bytes > 0 and node_flops(matmul, Sizes({"N": 1})) == 2 * 16 * 8


def test_peak_memory_is_liveness_over_the_order():
    g = mlp(batch=10)
    m = peak_memory(g)
    # MatMul0 out (640 B) + Relu0 out (640) live together; later 640 + 160, then 160 + 160
    assert m.peak_bytes == 2 * 640 and m.peak_node == g.nodes[1].name
    assert m.inputs_bytes == 10 * 8 * 4 and m.initializer_bytes == (8 * 16 + 16 * 4) * 4
    assert m.timeline[-1] == 160  # only the output stays


def test_execution_order_is_onnxruntimes_reverse_walk():
    g = Graph("walk")
    x = g.add_input("x", np.float32, (4,))
    a = ops.Neg(x)
    b = ops.Exp(a)
    c = ops.Sqrt(x)            # reads only x: the walk back from Add reaches it first
    g.outputs = [ops.Add(b, c)]
    names = [n.name for n in g.nodes]
    assert [n.name for n in execution_order(g)] == [names[2], names[0], names[1], names[3]]


def test_training_batch_norm_counts_its_scratch():
    g = Graph("bn")
    x = g.add_input("x", np.float32, (8, 2, 4, 4))
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    y, _, _ = ops.BatchNormalization(x, ones, zeros, zeros, ones, training_mode=1,
                                     _num_outputs=3)
    g.outputs = [y]
    m = peak_memory(g)
    # y (1024 B) and the two running statistics (8 B each), plus one input-sized scratch
    assert m.peak_bytes == 1024 + 8 + 8 + 1024


def test_aliases_hold_their_inputs_buffer():
    # onnxruntime's Reshape/Squeeze/Unsqueeze/Flatten/Identity write no buffer of their own
    g = Graph("alias")
    x = g.add_input("x", np.float32, (4, 4))                        # 64 B
    a = ops.Neg(x)
    r = ops.Reshape(a, np.array([16], dtype=np.int64))              # a's buffer, read later
    g.outputs = [ops.Add(ops.Exp(ops.Flatten(x, axis=0)), ops.Unsqueeze(r, np.array([0])))]
    m = peak_memory(g)
    names = {n.op_type: n.outputs[0].name for n in g.nodes}
    # at most a (whose buffer r and its Unsqueeze share), Exp's output and the sum: never
    # the aliases themselves, nor Flatten(x), which is x's buffer
    assert m.peak_bytes == 3 * 64
    assert not {names["Reshape"], names["Flatten"], names["Unsqueeze"]} & set(m.live_at_peak)


def test_planned_layout_counts_fragmentation():
    g = Graph("frag")
    x = g.add_input("x", np.float32, (250,))
    a = ops.Neg(x)                                                  # 1000 B -> 1024 aligned
    b = ops.ReduceSum(a, keepdims=1)                                # 4 B -> 64
    c = ops.Expand(b, np.array([500], dtype=np.int64))              # 2000 B -> 2048
    g.outputs = [c]
    m = peak_memory(g)
    assert m.peak_bytes == 4 + 2000  # b and c; a is gone by then
    # c does not fit in the 1024-byte hole a left below b: it goes on top
    assert m.planned_bytes == 1024 + 64 + 2048


def test_with_batch_folds_exported_shape_arithmetic():
    # what torch's legacy exporter writes for `x.expand(batch, -1)`: Shape -> Gather ->
    # Concat with Constants -> Equal(-1) -> Where -> Expand. Constant nodes and the bool
    # Equal must carry their values, or the Expand (and all after it) has unknown dims,
    # each counted as 1 element in the memory estimate
    def const(name, value):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(
            np.array(value, np.int64)))
    nodes = [helper.make_node("Shape", ["x"], ["s"]), const("zero", 0), const("minus", [-1]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             const("axes", [0]), helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus"], ["want"], axis=0),
             helper.make_node("Equal", ["want", "minus"], ["keep"]),
             const("ones", [1, 1]), helper.make_node("Where", ["keep", "ones", "want"], ["sh"]),
             helper.make_node("Expand", ["row", "sh"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "expand", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3]),
                          helper.make_tensor_value_info("row", onnx.TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = from_onnx(model)
    assert with_batch(g, 7).value("y").shape == (7, 5)
    assert figures(g, default=7).unknown_dims == []


def test_depth_critical_path_and_view():
    g = mlp()
    view = to_networkx(g)
    assert isinstance(view, nx.DiGraph) and nx.is_directed_acyclic_graph(view)
    assert view.nodes[g.nodes[0].name]["op_type"] == "MatMul"
    length, path = depth(g)
    assert length == 4 and path == [n.name for n in g.nodes]
    flops, crit = critical_path(g, {"N": 1})
    assert crit == path and flops == figures(g, {"N": 1}).flops
    dot = to_dot(g)
    assert dot.startswith('digraph "mlp"') and dot.count("->") == view.number_of_edges()


def test_saved_for_backward_counts_forward_values_read_by_gradients():
    from irkit.passes import gradients
    g = mlp(batch=4)
    loss = ops.ReduceSum(g.outputs[0], keepdims=0)
    grads = gradients(g, loss, [g.value("W0"), g.value("W1")])
    g.outputs = [loss, *grads]
    saved = {v.name for v in saved_for_backward(g)}
    assert saved and all(not g.value(n).producer.name.startswith("grad/") for n in saved)
    f = figures(g)
    assert set(f.parts) == {"forward", "backward"} and f.saved_for_backward == len(saved)


def test_cycle_at_import_names_its_nodes():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Add", ["a", "d"], ["b"], name="second"),
             helper.make_node("Neg", ["b"], ["c"], name="third"),
             helper.make_node("Abs", ["c"], ["d"], name="fourth\x1b")]
    vi = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph(nodes, "g", [vi("x", 1, [2])], [vi("d", 1, [2])]))
    with pytest.raises(ModelFileError) as e:
        from_onnx(model)
    assert "third -> fourth\\x1b -> second -> third" in str(e.value)
    assert "\x1b" not in str(e.value)


@pytest.mark.parametrize("command", ["import irkit", "import irkit.cli"])
def test_import_does_not_load_networkx(command):
    code = f"import sys; {command}; print('networkx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())  # the installed irkit, not a checkout's
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "iris.onnx"
    assert CliRunner().invoke(main, ["build", "iris_mlp", "-o", str(path)]).exit_code == 0
    return path


def test_inspect_summary_and_exports(iris_model, tmp_path):
    dot, graphml = tmp_path / "g.dot", tmp_path / "g.graphml"
    result = CliRunner().invoke(main, ["inspect", str(iris_model), "--batch", "32", "--dot",
                                       str(dot), "--graphml", str(graphml), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["parameters"] == 131 and info["nodes"] == 5 and info["batch"] == 32
    assert {p["name"] for p in info["parameter_tensors"]} >= {"dense_1.W", "dense_2.b"}
    assert info["flops"] > 2 * 32 * (4 * 16 + 16 * 3)
    assert info["peak_memory"]["activation_bytes"] >= 2 * 32 * 16 * 4
    view = nx.read_graphml(graphml)
    assert view.number_of_nodes() == 5 + 2  # ops, the input and the output
    assert dot.read_text().startswith("digraph")
    text = CliRunner().invoke(main, ["inspect", str(iris_model)])
    assert "FLOPs" in text.stdout and "peak activations" in text.stdout
    nodes = json.loads(CliRunner().invoke(main, ["inspect", str(iris_model), "--nodes",
                                                 "--json"]).stdout)
    assert len(nodes["per_node"]) == 5
    assert sum(r["flops"] for r in nodes["per_node"]) == nodes["flops"]
    gemm = next(r for r in nodes["per_node"] if r["op_type"] == "Gemm")
    assert gemm["flops"] == 2 * 1 * 4 * 16 + 16  # batch 1: 2*M*N*K + the bias


def test_inspect_train_shows_the_three_parts():
    result = CliRunner().invoke(main, ["inspect", "--train", "digits_cnn", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info["parts"]) == {"forward", "backward", "optimizer"}
    assert info["batch"] == 32 and not info["unknown_dims"]
    assert info["saved_for_backward"]["bytes"] > 0
    assert info["parts"]["backward"]["flops"] > info["parts"]["forward"]["flops"]


def test_inspect_refuses_bad_outputs_and_escapes_names(iris_model, tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(iris_model), "--dot", str(iris_model)])
    assert result.exit_code == 1 and "input" in result.output
    model = onnx.load(str(iris_model))
    model.graph.name = "evil\x1b[31mname"
    path = tmp_path / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0 and "evil\\x1b[31mname" in result.output
    assert "\x1b" not in result.output


def test_inspect_train_with_checkpointing_keeps_less():
    def saved(*extra):
        result = CliRunner().invoke(main, ["inspect", "--train", "digits_mlp", "--batch", "256",
                                           "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["saved_for_backward"]["bytes"]
    assert saved("--recompute", "sqrt") < saved()
    bad = CliRunner().invoke(main, ["inspect", "--train", "digits_mlp", "--recompute", "-3"])
    assert bad.exit_code == 2 and "--recompute" in bad.output
