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
from tests.cli_checks import cli, one_line_error

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
    """The detaching read is held to the same rules: a location out of the folder, byte
    ranges shared by two tensors and a tensor larger than its file are refused in one line
    (checked before the array is made)."""
    monkeypatch.setattr(_external, "DETACH_BYTES", 0)
    path = _model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[1].external_data[1].value = "0"  # b0 over W0's bytes
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="overlap"):
        load(path)
    big = onnx.load(str(path), load_external_data=False)  # W0 claims 1 GiB of an 80 KiB file
    big.graph.initializer[0].dims[:] = [1 << 14, 1 << 14]
    big.graph.initializer[0].external_data[2].value = str(1 << 30)
    (tmp_path / "big.onnx").write_bytes(big.SerializeToString())
    with pytest.raises(ModelFileError, match="too few"):
        load(tmp_path / "big.onnx")
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


def test_grad_external_equals_one_file(tmp_path, monkeypatch):
    """`irkit grad -o` writes PATH.data when forced to (threshold 0): the same weights, and
    onnxruntime (reading the external file itself) gives the same gradients, exactly."""
    path = _model(tmp_path)
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(3).standard_normal((6, WIDTH)).astype(np.float32)
    cotangent = np.ones((6, CLASSES), np.float32)
    weights, outputs = [], []
    for threshold in ("", "0"):
        monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", threshold)
        out = f"grad{threshold}.onnx"
        r = cli("grad", path, "--of", "logits", "--wrt", "W0,W1,b0", "-o", out)
        assert r.exit_code == 0, r.output
        assert os.path.exists(f"{out}.data") == (threshold == "0")
        weights.append(_weights(tmp_path / out))
        session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"x": x, "logits_grad": cotangent}))
    _same(*weights)
    assert len(outputs[0]) == 4 and all(np.array_equal(a, b) for a, b in zip(*outputs))


def _train(tmp_path: Path, threshold: str) -> dict:
    """Two SGD epochs with -o, --save-training and --checkpoint, a resume to epoch 3, and a
    prediction of the -o file, at the external-data `threshold`: what each wrote."""
    os.environ["IRKIT_EXTERNAL_DATA_BYTES"] = threshold  # (monkeypatched by the caller)
    out, train, ck = f"out{threshold}.onnx", f"train{threshold}.onnx", f"ck{threshold}"
    r = cli("train", _model(tmp_path), "--data", "data.npz", "--epochs", "2", "--batch-size",
            "8", "--optimizer", "sgd", "--lr", "0.05", "-o", out, "--save-training", train,
            "--checkpoint", ck)
    assert r.exit_code == 0, r.output
    for written in (out, train, f"{ck}/last.onnx", f"{ck}/last_train.onnx"):
        assert os.path.exists(f"{written}.data") == (threshold == "0"), written
    r = cli("train", train, "--data", "data.npz", "--epochs", "3", "-o", f"re{out}")
    assert r.exit_code == 0, r.output
    p = cli("predict", out, "--data", "data.npz", "--json")  # irkit's predictor
    assert p.exit_code == 0, p.output
    return {"out": _weights(tmp_path / out), "resumed": _weights(tmp_path / f"re{out}"),
            "checkpoint": _weights(tmp_path / ck / "last_train.onnx"),
            "predict": {k: v for k, v in json.loads(p.stdout).items() if k != "model"},
            "run": _run(tmp_path / out, np.load("data.npz")["x"])}


def test_train_external_equals_one_file(tmp_path, monkeypatch):
    """`irkit train` writes PATH.data for -o, --save-training and the checkpoint files when
    forced to (threshold 0); weights, the resumed run, irkit's and onnxruntime's predictions
    are exactly those of the one-file path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "")
    one, external = _train(tmp_path, ""), _train(tmp_path, "0")
    for key in ("out", "resumed", "checkpoint"):
        _same(one[key], external[key])
    assert one["predict"] == external["predict"] and len(one["predict"]["probabilities"]) == 24
    assert all(np.array_equal(a, b) for a, b in zip(one["run"], external["run"]))
    assert not all(np.array_equal(one["out"][n], one["resumed"][n])
                   for n in one["out"])  # the resumed epoch moved the weights


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


def test_torch_dynamo_export_keeps_external_data(tmp_path, monkeypatch):
    """torch's default exporter writes its weights as external data (model.onnx.data, opset
    20: the downgrade path): imported through the detached read, the graph and `irkit grad`
    equal those of the same model with every tensor inside the file."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(WIDTH, 256), torch.nn.GELU(),
                              torch.nn.LayerNorm(256), torch.nn.Linear(256, CLASSES)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(net, (torch.randn(2, WIDTH),), str(tmp_path / "t.onnx"), dynamo=True,
                      input_names=["x"], output_names=["logits"], dynamic_shapes=({0: batch},),
                      verbose=False)
    assert (tmp_path / "t.onnx.data").exists()
    onnx.save(onnx.load(str(tmp_path / "t.onnx")), str(tmp_path / "inside.onnx"))
    detached: dict = {}
    load_proto(tmp_path / "t.onnx", detached=detached)
    assert [n for n, a in detached.items() if a is not None] == ["0.weight"]
    a, b = load(tmp_path / "t.onnx"), load(tmp_path / "inside.onnx")
    assert list(a.initializers) == list(b.initializers)
    _same({n: v.const for n, v in a.initializers.items()},
          {n: v.const for n, v in b.initializers.items()})
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(4).standard_normal((3, WIDTH)).astype(np.float32)
    feeds = {"x": x, "logits_grad": np.ones((3, CLASSES), np.float32)}
    runs = []
    for source in ("t.onnx", "inside.onnx"):
        r = cli("grad", source, "--of", "logits", "--wrt", "0.weight,2.weight", "-o",
                f"g-{source}")
        assert r.exit_code == 0, r.output
        runs.append(ort.InferenceSession(f"g-{source}").run(None, feeds))
    assert all(np.array_equal(p, q) for p, q in zip(*runs))


def test_external_data_beyond_the_cap_is_one_line(tmp_path, monkeypatch):
    """External data count against their cap, summed from the dims before any is read:
    a model beyond it is refused in one line that says which variable to raise."""
    path = _model(tmp_path)
    monkeypatch.setenv("IRKIT_MAX_EXTERNAL_BYTES", "100000")  # the weights hold 170 KB
    one_line_error(cli("inspect", path), "IRKIT_MAX_EXTERNAL_BYTES", "initializer 'W1'")


# ---- the step runner adopts the weights it is given (no copy beside its first state set) ----

def _fitted(model, epochs: int = 3):
    """`model` compiled for plain SGD (no optimizer state) and fitted on the test data."""
    data = np.load("data.npz")
    model.compile(optimizer="sgd", lr=0.05)
    model.fit(data["x"], data["y"], epochs=epochs, batch_size=8, verbose=0, shuffle=False,
              validation_split=0.0)
    return model


def test_runner_adopts_the_imported_arrays_and_trains_exactly(tmp_path, monkeypatch):
    """load_model's arrays become the runner's first state set (shared memory, not copies);
    SGD without momentum keeps no optimizer state; the weights trained this way equal bit for
    bit those of a runner that copies (a Graph the caller made: its arrays are never
    adopted, and never written)."""
    from irkit import load_model
    from irkit.train.model import Model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    model = load_model(str(_model(tmp_path)))
    imported = dict(model.source.weights())
    model.compile(optimizer="sgd", lr=0.05)
    model.prepare(np.load("data.npz")["x"], runner=True)
    assert model._graphs.slots == []  # plain SGD: nothing but weights, rate and step count
    views = model._runner.state_views()
    # the large ones, read into arrays of their own; the small ones are read-only views of
    # the file's bytes, copied (and then released: the source holds the runner's arrays)
    assert [n for n in imported if np.shares_memory(views[n], imported[n])] == ["W0", "W1"]
    assert all(np.shares_memory(model.source.weights()[n], views[n]) for n in imported)
    adopted = _fitted(model).get_weights()
    graph = load(str(tmp_path / "model.onnx"))
    caller = {n: v.const.copy() for n, v in graph.initializers.items()}
    copied = _fitted(Model(graph)).get_weights()
    _same(adopted, copied)
    assert not np.array_equal(adopted["W0"], caller["W0"])  # training moved them
    _same({n: v.const for n, v in load(str(tmp_path / "model.onnx")).initializers.items()},
          caller)
    # (the caller's own arrays were replaced by the trained ones, never written in place)
    assert all(not np.shares_memory(graph.initializers[n].const, caller[n]) for n in caller)


def test_weights_outlive_the_runner_and_callers_arrays_stay(tmp_path, monkeypatch):
    """After a fit the source holds read-only views of the runner's arrays; they stay valid
    once the runner is gone (compile drops it). Arrays given to set_weights are the
    caller's: a later fit starts from them and leaves them as they were."""
    import gc

    from irkit import load_model
    monkeypatch.chdir(tmp_path)
    model = _fitted(load_model(str(_model(tmp_path))), epochs=1)
    trained = {n: np.array(a) for n, a in model.get_weights().items()}
    held = model.source.weights()
    assert not held["W0"].flags.writeable
    model.compile(optimizer="sgd", lr=0.05)  # the runner is dropped
    gc.collect()
    _ = [np.full((256, 256), 7.0, np.float32) for _ in range(64)]  # reuse freed memory
    _same(dict(held), trained)
    start = {n: np.array(a) for n, a in trained.items()}
    model.set_weights(start)
    _fitted(model, epochs=2)
    _same(start, trained)  # the caller's arrays were not trained in place


def test_adopted_names_skip_aliasing_arrays():
    """Of arrays sharing memory at most one is adopted (a step would otherwise write what it
    still reads); read-only, non-C-ordered or other-dtype arrays are copied."""
    from irkit.runtimes import read_only
    from irkit.runtimes.base import adopted_names
    base = np.zeros((4, 8), np.float32)
    state = {"a": base, "half": base[2:], "own": np.ones(3, np.float32),
             "ro": read_only(np.ones(3, np.float32)), "t": np.ones((3, 2), np.float32).T,
             "f64": np.ones(3), "lr": np.array(0.1, np.float32)}
    dtypes = {n: np.dtype(np.float32) for n in state}
    assert adopted_names(state, list(state), dtypes) == {"a", "own"}
    assert adopted_names(state, ["half", "own"], dtypes) == {"half", "own"}


def test_step_adds_one_set_beside_the_weights(tmp_path):
    """A runner given the imported weights adds one state set (first written by the first
    step), not two: on a 200 MB model, in a fresh process (the suite's own process frees
    memory of earlier tests meanwhile), making the runner and one step grows the resident
    memory by less than 1.6x the weights (measured 1.32x; two new sets, as before, are 2x
    and more)."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent.parent / "benchmarks")!r})
from bench_large_model import write_data, write_model
from irkit import load_model
def rss():
    return next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status")
                if ln.startswith("VmRSS"))
path, nbytes = write_model({str(tmp_path)!r}, 0.2, 2048)
data = np.load(write_data({str(tmp_path)!r}, 2048))
model = load_model(path)
model.compile(optimizer="sgd", lr=0.01)
before = rss()
model.prepare(data["x"], runner=True)
model._runner.step(data["x"], data["y"])
print((rss() - before) / nbytes)
"""
    env = {**os.environ, "IRKIT_EXTERNAL_DATA_BYTES": "0"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    grown = float(run.stdout.split()[-1])
    assert grown < 1.6, grown


def test_an_interrupted_fit_leaves_the_last_steps_weights(tmp_path, monkeypatch):
    """The source's arrays are the runner's, which each step rewrites: a fit stopped by an
    exception still brings the weights back, so once the runner is gone the model holds
    those of the last step done (here after one epoch of three), not a set half a step old."""
    from irkit import load_model
    from irkit.train.callbacks import Callback

    class Stop(Callback):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    one = _fitted(load_model(str(_model(tmp_path))), epochs=1).get_weights()
    model = load_model(str(tmp_path / "model.onnx"))
    model.compile(optimizer="sgd", lr=0.05)
    data = np.load("data.npz")
    with pytest.raises(KeyboardInterrupt):
        model.fit(data["x"], data["y"], epochs=3, batch_size=8, verbose=0, shuffle=False,
                  validation_split=0.0, callbacks=[Stop()])
    model.compile(optimizer="sgd", lr=0.05)  # the runner is dropped
    _same(model.get_weights(), one)


def test_training_file_resumes_through_arrays(tmp_path, monkeypatch):
    """A training file whose tensors are external data resumes from arrays read straight from
    its data file (never through protobuf): the inference graph, the train step and the state
    hold the same arrays, no copy (what keeps a resume beyond 2 GB to the train step's
    memory: benchmarks/bench_large_model.py, "resume")."""
    from irkit.train.training_model import read_training_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    r = cli("train", _model(tmp_path), "--data", "data.npz", "--epochs", "1", "--optimizer",
            "adam", "-o", "out.onnx", "--save-training", "train.onnx")
    assert r.exit_code == 0, r.output
    detached: dict = {}
    proto = load_proto("train.onnx", detached=detached)
    read = sorted(n for n, a in detached.items() if a is not None)
    assert {"W0", "W1"} <= set(read) and len(read) > 2, read  # Adam's slots too
    file = read_training_model(proto, detached)
    for name in read:  # weights and their Adam slots alike
        if name in file.state:
            assert file.state[name] is detached[name], name
    assert file.inference.initializers["W0"].const is detached["W0"]
