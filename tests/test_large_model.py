"""Issue 18 item 6: models whose weights are ONNX external data, on the path that models
beyond protobuf's 2 GB take, exercised on a small model. Import reads large external weights
straight into arrays (never through protobuf); weights above the external-data threshold
(IRKIT_EXTERNAL_DATA_BYTES, 0 here) are written to PATH.data streamed from the arrays, and
reach onnxruntime by add_external_initializers. Every result equals the one-file path's
exactly; the external files stay inside the model's folder (issue 23's rules)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from irkit.errors import ModelFileError
from irkit.onnx_io import _external, from_onnx, load, load_proto
from tests.cli_checks import cli

WIDTH, HIDDEN, CLASSES = 128, 160, 10  # W0 and W1 hold 80 KiB each: above DETACH_BYTES


def _model(folder: Path) -> Path:
    """x (N, 128) -> MatMul W0, Add b0, Relu -> MatMul W1, Add b1, Relu -> MatMul head:
    every initializer external, in one file model.data."""
    rng = np.random.default_rng(0)
    arrays = {"W0": rng.standard_normal((WIDTH, HIDDEN)) / np.sqrt(WIDTH),
              "b0": rng.standard_normal(HIDDEN) * 0.1,
              "W1": rng.standard_normal((HIDDEN, WIDTH)) / np.sqrt(HIDDEN),
              "b1": rng.standard_normal(WIDTH) * 0.1,
              "head": rng.standard_normal((WIDTH, CLASSES)) / np.sqrt(WIDTH)}
    inits, offset = [], 0
    with open(folder / "model.data", "wb") as f:
        for name, a in arrays.items():
            a = a.astype(np.float32)
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=a.shape,
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "model.data"), ("offset", str(offset)),
                               ("length", str(a.nbytes))):
                t.external_data.add(key=key, value=value)
            f.write(a.tobytes())
            offset += a.nbytes
            inits.append(t)
    nodes = []
    for i, h in enumerate(["x", "h0"]):
        nodes += [helper.make_node("MatMul", [h, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
    nodes.append(helper.make_node("MatMul", ["h1", "head"], ["logits"]))
    g = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", WIDTH])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["N", CLASSES])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    rng = np.random.default_rng(1)
    np.savez(folder / "data.npz", x=rng.standard_normal((24, WIDTH)).astype(np.float32),
             y=rng.integers(0, CLASSES, 24))
    return folder / "model.onnx"


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def test_import_reads_large_weights_into_arrays(tmp_path):
    path = _model(tmp_path)
    detached: dict = {}
    proto = load_proto(path, detached=detached)
    assert [n for n, a in detached.items() if a is not None] == ["W0", "W1"]
    assert {t.name for t in proto.graph.initializer} == {"b0", "b1", "head"}
    graph = load(path)
    want = from_onnx(onnx.load(str(path)))  # onnx's own loader, everything in the proto
    assert list(graph.initializers) == list(want.initializers)  # the file's order
    _same({n: v.const for n, v in graph.initializers.items()},
          {n: v.const for n, v in want.initializers.items()})
    assert [v.name for v in graph.inputs] == ["x"]
    assert graph.inputs[0].shape == ("N", WIDTH)


def test_detached_weights_keep_the_folder_rules(tmp_path, monkeypatch):
    """The detaching read is held to the same rules: a location out of the folder and byte
    ranges shared by two tensors are refused in one line."""
    monkeypatch.setattr(_external, "DETACH_BYTES", 0)
    path = _model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[1].external_data[1].value = "0"  # b0 over W0's bytes
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="overlap"):
        load(path)
    (tmp_path / "sub").mkdir()
    os.symlink("../model.data", tmp_path / "sub" / "link.data")
    model.graph.initializer[1].external_data[1].value = str(WIDTH * HIDDEN * 4)
    for t in model.graph.initializer:
        t.external_data[0].value = "link.data"
    (tmp_path / "sub" / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="out of the model's folder"):
        load(tmp_path / "sub" / "model.onnx")


def _run(model: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("command", ["grad", "train"])
def test_external_path_equals_one_file(tmp_path, monkeypatch, command):
    """`irkit grad` and two SGD epochs of `irkit train` (with -o, --save-training and
    --checkpoint, then a resume) write PATH.data when forced to (threshold 0), and give
    exactly what the one-file path gives; onnxruntime runs the written files."""
    path = _model(tmp_path)
    monkeypatch.chdir(tmp_path)
    results = {}
    for threshold in ("", "0"):
        monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", threshold)
        out = f"out{threshold}.onnx"
        if command == "grad":
            r = cli("grad", path, "--of", "logits", "--wrt", "W0,W1,b0", "-o", out)
        else:
            train = f"train{threshold}.onnx"
            r = cli("train", path, "--data", "data.npz", "--epochs", "2", "--batch-size", "8",
                    "--optimizer", "sgd", "--lr", "0.05", "-o", out, "--save-training", train,
                    "--checkpoint", f"ck{threshold}")
            assert r.exit_code == 0, r.output
            for written in (train, f"ck{threshold}/last.onnx", f"ck{threshold}/last_train.onnx"):
                assert os.path.exists(f"{written}.data") == (threshold == "0"), written
            results[f"ck{threshold}"] = _weights(tmp_path / f"ck{threshold}" / "last_train.onnx")
            r = cli("train", train, "--data", "data.npz", "--epochs", "3", "-o", f"re{out}")
            results[f"resumed{threshold}"] = _weights(tmp_path / f"re{out}")
        assert r.exit_code == 0, r.output
        assert os.path.exists(f"{out}.data") == (threshold == "0")
        results[threshold] = _weights(tmp_path / out)
        if command == "train":  # irkit's predictor on the written model
            r = cli("predict", out, "--data", "data.npz", "--json")
            assert r.exit_code == 0, r.output
            results[f"predict{threshold}"] = {k: v for k, v in json.loads(r.stdout).items()
                                              if k != "model"}
        x = np.load("data.npz")["x"]
        feeds_out = _run(tmp_path / out, x) if command == "train" else None
        results[f"run{threshold}"] = feeds_out
    _same(results[""], results["0"])
    if command == "train":
        _same(results["resumed"], results["resumed0"])
        _same(results["ck"], results["ck0"])
        assert results["predict"] == results["predict0"]
        assert len(results["predict"]["probabilities"]) == 24
        assert all(np.array_equal(a, b) for a, b in zip(results["run"], results["run0"]))
        assert not all(np.array_equal(results[""][n], results["resumed"][n])
                       for n in results[""])  # the resumed epoch moved the weights


def test_session_takes_weights_as_external_initializers(tmp_path, monkeypatch):
    """An onnxruntime graph of a model above the threshold: its large weights are left out
    of the model's bytes and given as arrays; outputs equal the one-file session's."""
    from irkit.runtimes.onnxruntime import OrtGraph, session_model
    graph = load(_model(tmp_path))
    x = np.random.default_rng(2).standard_normal((5, WIDTH)).astype(np.float32)
    want = OrtGraph(graph)({"x": x})
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    head, arrays = session_model(graph)
    assert sorted(arrays) == ["W0", "W1"] and len(head) < 20_000
    got = OrtGraph(graph)({"x": x})
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
