"""Standard ONNX training models (training_info) and resuming training from them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from irkit.runtimes.reference import ReferenceRuntime
from onnx import numpy_helper

from irkit.cli import main
from irkit.nn import Dense, Normalize, Sequential
from irkit.onnx_io import from_onnx
from irkit.train import Adam, ModuleModel, get_loss
from irkit.train.training_model import read_training_model, to_training_model


def _model() -> ModuleModel:
    return ModuleModel(Sequential([Normalize(), Dense(8, "relu"), Dense(3)]), (4,), seed=3)


def test_training_info_is_standard_and_checks():
    proto = to_training_model(_model(), get_loss("cross_entropy"), Adam(lr=0.01))
    onnx.checker.check_model(proto, full_check=True)
    info = proto.training_info[0]
    bindings = {e.key: e.value for e in info.update_binding}
    assert bindings["dense_1.W"] == "next/dense_1.W"
    assert bindings["m/dense_1.W"] == "next/m/dense_1.W"
    assert bindings["irkit.step"] == "next/irkit.step"
    assert [i.name for i in info.algorithm.input] == ["input", "target"]
    assert all(n.domain in ("", "ai.onnx") for n in info.algorithm.node)


def test_algorithm_graph_runs_one_step_like_the_trainer():
    """Run the algorithm graph by hand (outer initializers fed as inputs) on the reference
    runtime: its outputs are a valid step whose step counter advances."""
    proto = to_training_model(_model(), get_loss("cross_entropy"), Adam(lr=0.01))
    outer = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    alg = onnx.ModelProto()
    alg.CopyFrom(proto)
    del alg.training_info[:]
    alg.graph.CopyFrom(proto.training_info[0].algorithm)
    used = {n for node in alg.graph.node for n in node.input}
    for name, arr in outer.items():
        if name in used:
            alg.graph.initializer.append(numpy_helper.from_array(arr, name))
    graph = from_onnx(alg)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    out = dict(zip([v.name for v in graph.outputs],
                   ReferenceRuntime().compile(graph)({"input": x, "target": y})))
    assert float(out["next/irkit.step"]) == 1.0
    assert np.isfinite(out["loss"])
    assert not np.allclose(out["next/dense_1.W"], outer["dense_1.W"])


def test_read_training_model_recovers_state():
    proto = to_training_model(_model(), get_loss("cross_entropy"), Adam(lr=0.02),
                              steps_done=7, epochs_done=2)
    graph, info = read_training_model(proto)
    assert info["steps_done"] == 7 and info["epochs_done"] == 2
    assert info["lr"] == pytest.approx(0.02)
    assert set(info["state"]) == {f"{s}/{p}" for s in "mv" for p in info["params"]}
    assert not any(name.startswith(("m/", "v/", "irkit.")) for name in graph.initializers)


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_resumed_training_matches_uninterrupted(tmp_path):
    run = CliRunner().invoke
    full, half, rest = tmp_path / "full.onnx", tmp_path / "half.onnx", tmp_path / "rest.onnx"
    args = ["--epochs", "6", "--json"]
    r = run(main, ["train", "iris_mlp", "-o", str(tmp_path / "a.onnx"), "--save-training",
                   str(full), *args])
    assert r.exit_code == 0, r.output
    r = run(main, ["train", "iris_mlp", "-o", str(tmp_path / "b.onnx"), "--save-training",
                   str(half), "--epochs", "3", "--json"])
    assert r.exit_code == 0, r.output
    r = run(main, ["train", str(half), "-o", str(tmp_path / "c.onnx"), "--save-training",
                   str(rest), "--epochs", "3", "--json"])
    assert r.exit_code == 0, r.output
    resumed = json.loads(r.output)
    assert resumed["epochs_run"] == 3
    a, b = _weights(full), _weights(rest)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)


def test_export_training_cli(tmp_path):
    out = tmp_path / "t.onnx"
    r = CliRunner().invoke(main, ["export", "iris_linear", "-o", str(out), "--training"])
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.training_info) == 1


def test_training_model_with_batchnorm_binds_running_stats_and_resumes(tmp_path):
    saved, out = tmp_path / "cnn_train.onnx", tmp_path / "cnn2.onnx"
    run = CliRunner().invoke
    r = run(main, ["train", "digits_cnn", "-o", str(tmp_path / "cnn.onnx"), "--epochs", "1",
                   "--save-training", str(saved), "--json"])
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(saved))
    onnx.checker.check_model(proto, full_check=True)
    bound = {e.key for e in proto.training_info[0].update_binding}
    assert {"batchnorm_3.running_mean", "batchnorm_3.running_var"} <= bound
    r = run(main, ["train", str(saved), "-o", str(out), "--epochs", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["final"]["val_accuracy"] > 0.5
