"""ONNX export and import: checker-clean exports onnxruntime reads, round trips, models written
by torch.onnx.export, one-line errors for malformed files, and opset conversion."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from irkit.runtimes.reference import ReferenceRuntime
from onnx import TensorProto, helper, numpy_helper

from irkit import ops
from irkit.errors import IRError, ModelFileError, UnsupportedOpError
from irkit.ir import Graph
from irkit.onnx_io import convert_opset, from_onnx, load, save, to_onnx

RNG = np.random.default_rng(20240611)
X = RNG.standard_normal((5, 4)).astype(np.float32)


def _graph() -> Graph:
    """A small model using Gemm, Relu, MatMul, Softmax, ReduceMean and ReduceSum."""
    rng = np.random.default_rng(3)
    g = Graph("small")
    x = g.add_input("x", np.float32, ("N", 4))
    w1 = g.add_initializer("w1", rng.standard_normal((4, 6)).astype(np.float32))
    b1 = g.add_initializer("b1", rng.standard_normal(6).astype(np.float32))
    w2 = g.add_initializer("w2", rng.standard_normal((6, 3)).astype(np.float32))
    h = ops.Relu(ops.Gemm(x, w1, b1))
    logits = ops.MatMul(h, w2)
    probs = ops.Softmax(logits, axis=1)
    g.outputs = [probs, logits.mean(axis=1, keepdims=True),
                 ops.ReduceSum(h, np.array([1], np.int64), keepdims=0)]
    return g


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _assert_outputs_close(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# ---- export -----------------------------------------------------------------------------------
def test_export_passes_full_checker_and_ort_reads_it():
    g = _graph()
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    # the lowest IR version that opset 17 allows, which the installed onnxruntime reads
    assert model.ir_version == helper.find_min_ir_version_for(list(model.opset_import)) == 8
    assert model.producer_name == "irkit"
    assert [i.name for i in model.graph.input] == ["x"]
    assert {"b1", "w1", "w2"} <= {t.name for t in model.graph.initializer}
    got = _ort_run(model, {"x": X})
    want = ReferenceRuntime().compile(g)({"x": X})
    _assert_outputs_close(got, want)
    # the symbolic batch dim survives as a dim_param
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 4


def test_export_writes_metadata_and_save_writes_the_file(tmp_path):
    g = _graph()
    g.metadata["irkit.note"] = "hello"
    path = tmp_path / "m.onnx"
    save(g, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props} == {"irkit.note": "hello"}
    assert not (tmp_path / "m.onnx.tmp").exists()
    assert load(path).metadata == {"irkit.note": "hello"}


def test_export_verifies_the_graph_first():
    g = _graph()
    g.value("b1").uses.clear()  # corrupt a use-def chain
    with pytest.raises(IRError, match="not recorded"):
        to_onnx(g)


def test_round_trip_onnx_ir_onnx_keeps_outputs():
    g = _graph()
    first = to_onnx(g)
    back = from_onnx(first)
    back.verify()
    second = to_onnx(back)
    onnx.checker.check_model(second, full_check=True)
    assert [n.op_type for n in second.graph.node] == [n.op_type for n in first.graph.node]
    assert [n.name for n in second.graph.node] == [n.name for n in first.graph.node]
    assert [o.name for o in second.graph.output] == [o.name for o in first.graph.output]
    for t1, t2 in zip(first.graph.initializer, second.graph.initializer, strict=True):
        assert t1.name == t2.name
        np.testing.assert_array_equal(numpy_helper.to_array(t1), numpy_helper.to_array(t2))
    _assert_outputs_close(_ort_run(second, {"x": X}), _ort_run(first, {"x": X}), 0, 0)
    assert [v.shape for v in back.outputs] == [v.shape for v in g.outputs]


# ---- models written by torch.onnx.export --------------------------------------------------------
def _torch_mlp():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch, torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                      torch.nn.Linear(8, 3))


def _torch_export(torch, module, example, **kwargs) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, input_names=["x"], output_names=["y"],
                          **kwargs)
    return onnx.load_from_string(buf.getvalue())


def _check_imported(torch, module, model: onnx.ModelProto) -> None:
    graph = from_onnx(model)
    graph.verify()
    assert [v.name for v in graph.inputs] == ["x"]
    with torch.no_grad():
        want = module(torch.from_numpy(X)).numpy()
    (ref,) = ReferenceRuntime().compile(graph)({"x": X})
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-6)
    exported = to_onnx(graph)  # and irkit's export of it is valid and equal
    onnx.checker.check_model(exported, full_check=True)
    np.testing.assert_allclose(_ort_run(exported, {"x": X})[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic_batch"])
def test_import_torch_legacy_export_opset17(dynamic):
    torch, mlp = _torch_mlp()
    kwargs = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}} if dynamic else {}
    model = _torch_export(torch, mlp, torch.from_numpy(X), dynamo=False, opset_version=17,
                          **kwargs)
    assert model.opset_import[0].version == 17
    graph = from_onnx(model)
    assert [n.op_type for n in graph.nodes] == ["Gemm", "Relu", "Gemm"]
    assert sorted(graph.initializers) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert graph.inputs[0].shape == (("batch", 4) if dynamic else (5, 4))
    _check_imported(torch, mlp, model)


def test_import_torch_legacy_export_opset18_reduce_axes_input():
    """From opset 18 ReduceMean takes its axes as an input; import turns them back."""
    torch, mlp = _torch_mlp()

    class MeanHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, x):
            return self.mlp(x).mean(dim=1, keepdim=True)

    module = MeanHead()
    model = _torch_export(torch, module, torch.from_numpy(X), dynamo=False, opset_version=18)
    (reduce,) = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert len(reduce.input) == 2
    graph = from_onnx(model)
    (node,) = [n for n in graph.nodes if n.op_type == "ReduceMean"]
    assert len(node.inputs) == 1 and list(node.attributes["axes"]) == [1]
    _check_imported(torch, module, model)


def test_import_torch_dynamo_export():
    pytest.importorskip("onnxscript")
    torch, mlp = _torch_mlp()
    model = _torch_export(torch, mlp, torch.from_numpy(X), dynamo=True)
    _check_imported(torch, mlp, model)


# ---- malformed files: one-line errors that name the file --------------------------------------
def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])


def _write(tmp_path, nodes, outputs=("y",), name="bad.onnx", inits=()):
    graph = helper.make_graph(nodes, "g", [_vi("x")], [_vi(o) for o in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_truncated_file(tmp_path, keep):
    good = tmp_path / "good.onnx"
    save(_graph(), good)
    data = good.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ModelFileError) as err:
        load(path)
    assert str(path) in _one_line(err)


@pytest.mark.parametrize("payload", [b"\x89PNG\r\n\x1a\n" + bytes(64), b"not an onnx model\n" * 3,
                                     bytes(range(256))], ids=["png", "text", "bytes"])
def test_garbage_bytes(tmp_path, payload):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(payload)
    with pytest.raises(ModelFileError) as err:
        load(path)
    assert str(path) in _one_line(err)


def test_empty_file_has_no_opset(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError) as err:
        load(path)
    assert "imports no ai.onnx opset" in _one_line(err)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(ModelFileError) as err:
        load(path)
    assert _one_line(err) == f"{path}: no such file"


def test_cyclic_graph(tmp_path):
    path = _write(tmp_path, [helper.make_node("Relu", ["b"], ["a"], name="first"),
                             helper.make_node("Relu", ["a"], ["b"], name="second"),
                             helper.make_node("Add", ["x", "a"], ["y"], name="out")])
    with pytest.raises(ModelFileError) as err:
        load(path)
    message = _one_line(err)
    assert str(path) in message  # the cycle, named node by node, in data-flow order
    assert "cycle: second -> first -> second" in message or \
        "cycle: first -> second -> first" in message


def test_dangling_input_name(tmp_path):
    path = _write(tmp_path, [helper.make_node("Add", ["x", "nowhere"], ["y"], name="adder")])
    with pytest.raises(ModelFileError) as err:
        load(path)
    message = _one_line(err)
    assert str(path) in message and "'adder' (Add) reads 'nowhere'" in message


def test_value_defined_twice(tmp_path):
    path = _write(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r1"),
                             helper.make_node("Neg", ["x"], ["y"], name="r2")])
    with pytest.raises(ModelFileError) as err:
        load(path)
    assert "'y' is defined twice" in _one_line(err)


def test_undefined_graph_output(tmp_path):
    path = _write(tmp_path, [helper.make_node("Relu", ["x"], ["a"], name="r")],
                  outputs=("missing",))
    with pytest.raises(ModelFileError) as err:
        load(path)
    message = _one_line(err)
    assert str(path) in message and "'missing'" in message


def test_unknown_ops_are_all_listed_with_node_names(tmp_path):
    path = _write(tmp_path, [helper.make_node("FooOp", ["x"], ["a"], name="foo_1"),
                             helper.make_node("Relu", ["a"], ["b"], name="fine"),
                             helper.make_node("BarOp", ["b"], ["c"], name="bar_1"),
                             helper.make_node("FooOp", ["c"], ["y"], name="foo_2")])
    with pytest.raises(UnsupportedOpError) as err:
        load(path)
    message = _one_line(err)
    assert str(path) in message
    assert "FooOp (nodes foo_1, foo_2)" in message and "BarOp (nodes bar_1)" in message
    assert "Relu" not in message and "irkit ops" in message


def test_op_in_an_unknown_domain_is_unsupported(tmp_path):
    path = _write(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="custom",
                                              domain="com.example")])
    with pytest.raises(UnsupportedOpError) as err:
        load(path)
    message = _one_line(err)
    assert "custom" in message and "com.example" in message


# ---- opsets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [13, 14, 15, 16, 18, 19, 20, 21])
def test_convert_opset_keeps_outputs(opset):
    base = to_onnx(_graph())
    converted = convert_opset(base, opset)
    onnx.checker.check_model(converted, full_check=True)
    assert {o.domain: o.version for o in converted.opset_import}[""] == opset
    assert converted.ir_version == helper.find_min_ir_version_for(list(converted.opset_import))
    want = _ort_run(base, {"x": X})
    _assert_outputs_close(_ort_run(converted, {"x": X}), want)
    back = from_onnx(converted)  # and irkit reads it again (opset 18+ axes inputs included)
    _assert_outputs_close(ReferenceRuntime().compile(back)({"x": X}), want)


def test_convert_to_too_old_opset_is_refused():
    with pytest.raises(UnsupportedOpError) as err:
        convert_opset(to_onnx(_graph()), 11)
    assert "--opset 13" in _one_line(err)
    with pytest.raises(UnsupportedOpError):
        to_onnx(_graph(), opset=12)


def test_save_with_opset_writes_that_opset(tmp_path):
    path = tmp_path / "o18.onnx"
    save(_graph(), path, opset=18)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert any(n.op_type == "ReduceMean" and len(n.input) == 2 for n in model.graph.node)
    _assert_outputs_close(_ort_run(model, {"x": X}), ReferenceRuntime().compile(_graph())(
        {"x": X}))


def test_import_of_an_older_opset_converts_it():
    node = helper.make_node("ReduceSum", ["x"], ["y"], name="total", axes=[0], keepdims=1)
    graph = helper.make_graph([node], "old", [_vi("x")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    g = from_onnx(model)
    (reduce,) = [n for n in g.nodes if n.op_type == "ReduceSum"]
    assert len(reduce.inputs) == 2  # opset 13 moved ReduceSum's axes into an input
    x = np.array([1.5, -4.0], np.float32)
    np.testing.assert_allclose(ReferenceRuntime().compile(g)({"x": x})[0], [-2.5])


def test_import_reads_external_data(tmp_path):
    """Initializers stored beside the model (external data, as models over 2 GB must be)."""
    import onnx as _onnx
    from onnx import TensorProto as _T
    from onnx import helper as _h
    from onnx import numpy_helper as _nh

    from irkit.onnx_io import load
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    g = _h.make_graph([_h.make_node("MatMul", ["x", "W"], ["y"])], "ext",
                      [_h.make_tensor_value_info("x", _T.FLOAT, ["N", 4])],
                      [_h.make_tensor_value_info("y", _T.FLOAT, ["N", 3])],
                      [_nh.from_array(w, "W")])
    model = _h.make_model(g, opset_imports=[_h.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    _onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                     location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    graph = load(path)
    np.testing.assert_array_equal(graph.initializers["W"].const, w)
