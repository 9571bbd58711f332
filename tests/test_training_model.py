"""Standard ONNX training files (training_info) and resuming training from them: the file holds
the training-mode step, the optimizer state (learning rate and step count included) and the
history, so 3 + 3 epochs equal 6, bit for bit, for every recipe and for schedules."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from irkit.runtimes.reference import ReferenceRuntime
from onnx import numpy_helper

import irkit
from irkit.cli import main
from irkit.errors import ModelFileError
from irkit.nn import Dense, Dropout, Normalize
from irkit.onnx_io import from_onnx
from irkit.train import LearningRateScheduler
from irkit.train.training_model import read_training_model


def _fitted(epochs: int = 2, **fit) -> irkit.Model:
    x, y = _blobs()
    model = irkit.Sequential([Normalize(), Dense(8, activation="relu"), Dropout(0.3, seed=4),
                              Dense(3)])
    model.compile(optimizer="adam", lr=0.02, seed=3)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, **fit)
    return model


def _blobs(n: int = 120):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.normal(0, 3, (3, 4))[y] + rng.normal(size=(n, 4))
    return x.astype(np.float32), y


def test_training_info_is_standard_and_checks():
    proto = _fitted().training_proto()
    onnx.checker.check_model(proto, full_check=True)
    info = proto.training_info[0]
    bindings = {e.key: e.value for e in info.update_binding}
    assert bindings["dense_3.W"] == "next/dense_3.W"
    assert bindings["m/*"] == "next/m/*"  # a small model's Adam state: one flat vector
    assert bindings["opt/step"] == "next/opt/step"
    assert "opt/lr" not in bindings  # read by the step, set by schedules between steps
    assert [i.name for i in info.algorithm.input] == ["input", "target"]
    assert all(n.domain in ("", "ai.onnx") for n in info.algorithm.node)


def test_algorithm_graph_runs_one_step_in_training_mode():
    """Run the algorithm graph by hand (outer initializers fed as initializers) on the
    reference runtime: a valid step, the step counter advances, dropout is active."""
    model = _fitted()
    proto = model.training_proto()
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
    x, y = _blobs(5)
    out = dict(zip([v.name for v in graph.outputs],
                   ReferenceRuntime().compile(graph)({"input": x, "target": y})))
    assert int(out["next/opt/step"]) == int(outer["opt/step"]) + 1
    assert np.isfinite(out["loss"])
    assert not np.allclose(out["next/dense_3.W"], outer["dense_3.W"])
    assert "GreaterOrEqual" in {n.op_type for n in graph.nodes}  # dropout's mask


def test_read_training_model_recovers_state():
    model = _fitted(epochs=2)
    steps_done = int(model._runner.read_state(["opt/step"])["opt/step"])
    f = read_training_model(model.training_proto())
    assert f.epochs_done == 2 and int(f.state["opt/step"]) == steps_done > 0
    assert float(f.state["opt/lr"]) == pytest.approx(0.02)
    assert f.slots == ["m/*", "v/*"]
    assert f.state["m/*"].size == sum(f.state[p].size for p in f.params)
    assert f.history["history"]["loss"] == model.history["loss"]
    assert not any(n.startswith(("m/", "v/", "opt/", "best/")) for n in f.inference.initializers)


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _train(*args) -> dict:
    r = CliRunner().invoke(main, ["train", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.mark.parametrize("recipe, data, epochs", [("iris_mlp", "iris", 3),
                                                  ("digits_mlp", "digits", 2),
                                                  ("digits_cnn", "digits", 2)])
def test_resumed_training_is_bit_identical(tmp_path, recipe, data, epochs):
    """3 + 3 epochs equal 6 (here N + N = 2N) bit for bit: weights, optimizer state, step
    count, running statistics, history; Dropout and BatchNorm models included."""
    full, half, rest = (tmp_path / f"{n}.onnx" for n in ("full", "half", "rest"))
    a = _train(recipe, "-o", str(tmp_path / "a.onnx"), "--save-training", str(full),
               "--epochs", str(2 * epochs))
    _train(recipe, "-o", str(tmp_path / "b.onnx"), "--save-training", str(half),
           "--epochs", str(epochs))
    resumed = _train(str(half), "--data", data, "-o", str(tmp_path / "c.onnx"),
                     "--save-training", str(rest), "--epochs", str(epochs))
    assert resumed["epochs_run"] == epochs and resumed["epochs_total"] == 2 * epochs
    assert resumed["history"] == a["history"]  # the history continues across the resume
    assert resumed["best_epoch"] == a["best_epoch"]
    wa, wb = _weights(full), _weights(rest)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    ia, ib = _weights(tmp_path / "a.onnx"), _weights(tmp_path / "c.onnx")
    for name in ia:  # -o holds the best epoch's weights in both runs
        np.testing.assert_array_equal(ia[name], ib[name], err_msg=name)


def test_schedule_survives_save_and_resume(tmp_path):
    """A learning-rate schedule saved mid-run continues at the scheduled rate: 3 + 3 = 6."""
    def schedule(epoch, lr):
        return 0.05 * 0.5 ** epoch
    x, y = _blobs()
    full = irkit.Sequential([Dense(8, activation="relu"), Dense(3)])
    full.compile(optimizer="sgd", lr=0.05, momentum=0.9, seed=1)
    full.fit(x, y, epochs=6, callbacks=[LearningRateScheduler(schedule)], verbose=0)
    half = irkit.Sequential([Dense(8, activation="relu"), Dense(3)])
    half.compile(optimizer="sgd", lr=0.05, momentum=0.9, seed=1)
    half.fit(x, y, epochs=3, callbacks=[LearningRateScheduler(schedule)], verbose=0)
    half.save(str(tmp_path / "half.onnx"))
    resumed = irkit.load_model(str(tmp_path / "half.onnx"))
    assert resumed.learning_rate == pytest.approx(0.05 * 0.5 ** 2)  # the scheduled rate
    resumed.fit(x, y, epochs=6, callbacks=[LearningRateScheduler(schedule)], verbose=0)
    assert resumed.learning_rate == pytest.approx(full.learning_rate)
    assert resumed.history["val_loss"] == full.history["val_loss"]
    a, b = full._runner.read_state(), resumed._runner.read_state()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_export_training_cli(tmp_path):
    out = tmp_path / "t.onnx"
    r = CliRunner().invoke(main, ["export", "iris_linear", "-o", str(out), "--training"])
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.training_info) == 1


def _edited(path, tmp_path, name: str, edit) -> str:
    proto = onnx.load(str(path))
    edit(proto)
    out = tmp_path / name
    onnx.save(proto, str(out))
    return str(out)


def test_stored_counters_are_checked(tmp_path):
    saved = tmp_path / "t.onnx"
    _train("iris_mlp", "-o", str(tmp_path / "m.onnx"), "--save-training", str(saved),
           "--epochs", "1")

    def huge_epoch(proto):
        for p in proto.metadata_props:
            if p.key == "irkit.epoch":
                p.value = str(10**12)

    def negative_lr(proto):
        for t in proto.graph.initializer:
            if t.name == "opt/lr":
                t.CopyFrom(numpy_helper.from_array(np.array(-0.5, np.float32), "opt/lr"))
    for name, edit, message in [("epoch.onnx", huge_epoch, "irkit.epoch"),
                                ("lr.onnx", negative_lr, "learning rate")]:
        path = _edited(saved, tmp_path, name, edit)
        with pytest.raises(ModelFileError, match=message):
            irkit.load_model(path)
        r = CliRunner().invoke(main, ["train", path, "--data", "iris", "-o",
                                      str(tmp_path / "out.onnx")])
        assert r.exit_code == 1 and message in r.output and len(r.output.splitlines()) == 1
        assert not (tmp_path / "out.onnx").exists()


def test_resume_needs_data_and_never_opens_the_stored_path(tmp_path):
    saved = tmp_path / "t.onnx"
    _train("iris_mlp", "-o", str(tmp_path / "m.onnx"), "--save-training", str(saved),
           "--epochs", "1")
    r = CliRunner().invoke(main, ["train", str(saved), "-o", str(tmp_path / "out.onnx")])
    assert r.exit_code == 1
    assert "pass --data" in r.output and "'iris'" in r.output


def test_training_model_with_batchnorm_binds_running_stats(tmp_path):
    saved = tmp_path / "cnn_train.onnx"
    _train("digits_cnn", "-o", str(tmp_path / "cnn.onnx"), "--epochs", "1",
           "--save-training", str(saved))
    proto = onnx.load(str(saved))
    onnx.checker.check_model(proto, full_check=True)
    bound = {e.key for e in proto.training_info[0].update_binding}
    assert {"batchnorm_3.running_mean", "batchnorm_3.running_var"} <= bound


def test_resume_refuses_another_loss_or_optimizer(tmp_path):
    saved = tmp_path / "t.onnx"
    _train("iris_mlp", "-o", str(tmp_path / "m.onnx"), "--save-training", str(saved),
           "--epochs", "1")
    r = CliRunner().invoke(main, ["train", str(saved), "--data", "iris", "-o",
                                  str(tmp_path / "out.onnx"), "--optimizer", "sgd"])
    assert r.exit_code == 1 and "continues with the optimizer" in r.output
    assert len(r.output.splitlines()) == 1


def test_train_constants_sharing_a_name_with_the_model_keep_their_value():
    """The algorithm reads the main graph's initializers; a train-graph constant named like an
    inference constant but holding another value must not be replaced by it on save."""
    from onnx import TensorProto, helper

    from irkit.signature import LR, STEP
    from irkit.train.training_model import to_training_model

    def graph(nodes, inputs, outputs, inits):
        g = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))

    def scalar(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    vi = helper.make_tensor_value_info
    inference = graph([helper.make_node("Mul", ["x", "w"], ["m"]),
                       helper.make_node("Add", ["m", "c"], ["y"])],
                      [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])],
                      [scalar("w", [1.0, 1.0]), scalar("c", 1.0)])
    train = graph([helper.make_node("Mul", [LR, "c"], ["d"]),
                   helper.make_node("Sub", ["w", "d"], ["next/w"]),
                   helper.make_node("Add", [STEP, "one"], ["next/" + STEP])],
                  [vi("w", TensorProto.FLOAT, [2]), vi(LR, TensorProto.FLOAT, []),
                   vi(STEP, TensorProto.INT64, [])],
                  [vi("next/w", TensorProto.FLOAT, [2]),
                   vi("next/" + STEP, TensorProto.INT64, [])],
                  [scalar("c", 2.0), scalar("one", 1, np.int64)])
    state = {"w": np.ones(2, np.float32), LR: np.float32(0.5), STEP: np.int64(0)}
    proto = to_training_model(inference, train, state, ["w"])
    back = read_training_model(proto)
    feeds = {n: np.asarray(v) for n, v in back.state.items() if back.train.has_value(n)
             and any(i.name == n for i in back.train.inputs)}
    outputs = ReferenceRuntime().compile(back.train)(feeds)
    got = dict(zip([o.name for o in back.train.outputs], outputs))
    np.testing.assert_array_equal(got["next/w"], np.zeros(2, np.float32))  # 1 - 0.5 * 2
    assert back.inference.initializers["c"].const == np.float32(1.0)
