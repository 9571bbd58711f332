"""End to end: the `irkit` command line on the bundled data, in a temporary directory.

The main paths run the installed console script in a subprocess (what a user runs); the rest
go through click's CliRunner in-process. Bad input must exit non-zero with one line on stderr,
`irkit: error: ...`, and never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import run_irkit
from onnx import numpy_helper

from irkit.cli import main
from irkit.data import fit_scaler, load_dataset, train_val_split

MODELS = Path(__file__).resolve().parents[1] / "models"
IRIS_MLP_TOML = MODELS / "iris_mlp.toml"


# ---- helpers -------------------------------------------------------------------------------
irkit_process = run_irkit  # the installed console script in a subprocess (conftest)


def cli(*args: str):
    """Run `irkit ARGS` in-process; stdout and stderr apart."""
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result, *words: str) -> str:
    """Exit code != 0, no traceback, exactly one stderr line 'irkit: error: ...'."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"unhandled {result.exception!r}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"want one line on stderr, got {lines}"
    assert lines[0].startswith("irkit: error:"), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def assert_usage_error(result) -> None:
    """A click usage error: exit code 2 and, like irkit's own errors, one line
    `irkit: error: ...` on stderr (issue 9), no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: "), lines


def weights(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def predict(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def iris_rows(label_override: dict[int, str] | None = None,
              cell_override: dict[int, str] | None = None) -> str:
    """The iris data as CSV text, with some labels or first cells replaced."""
    ds = load_dataset("iris")
    lines = ["f0,f1,f2,f3,label"]
    for i, (x, y) in enumerate(zip(ds.x, ds.y, strict=True)):
        cells = [f"{v:g}" for v in x] + [str(int(y))]
        if label_override and i in label_override:
            cells[-1] = label_override[i]
        if cell_override and i in cell_override:
            cells[0] = cell_override[i]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def built_iris(tmp_path_factory) -> Path:
    """An untrained iris_mlp built with `irkit build` from the recipe file."""
    path = tmp_path_factory.mktemp("built") / "m.onnx"
    result = cli("build", str(IRIS_MLP_TOML), "-o", str(path))
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """Files of bad input: recipes, data and a model."""
    d = tmp_path_factory.mktemp("bad")
    dense3 = '[model]\nlayers = [{ type = "dense", units = 3 }]\n[data]\ndataset = "iris"\n'
    (d / "bad_syntax.toml").write_text("[model\nlayers = \n")
    (d / "unknown_key.toml").write_text(dense3 + 'colour = "red"\n')
    (d / "unknown_train_key.toml").write_text(dense3 + "[train]\nepochz = 3\n")
    (d / "unknown_layer_key.toml").write_text(
        '[model]\nlayers = [{ type = "dense", units = 3, unitz = 4 }]\n')
    (d / "unknown_layer.toml").write_text('[model]\nlayers = [{ type = "conv9", units = 3 }]\n')
    (d / "bad_activation.toml").write_text(
        '[model]\nlayers = [{ type = "dense", units = 3, activation = "swishy" }]\n')
    (d / "bad_epochs.toml").write_text(dense3 + '[train]\nepochs = "many"\n')
    (d / "bad_lr.toml").write_text(dense3 + "[train]\nlr = -1.0\n")
    (d / "no_layers.toml").write_text("[model]\nlayers = []\n")
    (d / "label5.csv").write_text(iris_rows(label_override={7: "5"}))
    (d / "nan.csv").write_text(iris_rows(cell_override={3: "nan"}))
    (d / "garbage.onnx").write_bytes(b"this is not an ONNX model\x00\x01\x02\xff")
    return d


# ---- the main paths, as a user runs them ----------------------------------------------------
def test_train_iris_mlp_end_to_end(tmp_path):
    result = irkit_process("train", "iris_mlp", "-o", "OUT.onnx", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert report["final"]["val_accuracy"] >= 0.93
    assert report["dataset"] == "iris"
    assert report["train_samples"] + report["val_samples"] == 150
    assert report["val_samples"] == 30
    assert set(report["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == report["epochs_run"] for v in report["history"].values())
    assert 1 <= report["best_epoch"] <= report["epochs_run"]
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]
    out = tmp_path / "OUT.onnx"
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    ds = load_dataset("iris")  # raw measurements: the scaling is inside the model
    assert (predict(out, ds.x).argmax(axis=1) == ds.y).mean() >= 0.93


def test_train_digits_mlp_end_to_end(tmp_path):
    result = irkit_process("train", "digits_mlp", "-o", "digits.onnx", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["final"]["val_accuracy"] >= 0.95
    ops = {n.op_type for n in onnx.load(str(tmp_path / "digits.onnx")).graph.node}
    assert "Dropout" not in ops


def test_train_prints_progress_and_summary(in_tmp):
    result = cli("train", "iris_linear", "-o", "lin.onnx", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.stdout and "wrote lin.onnx" in result.stdout
    assert "epoch 3/3" in result.stderr  # progress goes to stderr
    assert (in_tmp / "lin.onnx").exists()


def test_train_options_override_recipe(in_tmp):
    result = cli("train", "iris_mlp", "-o", "o.onnx", "--json", "--epochs", "4",
                 "--val-split", "0.4", "--optimizer", "sgd", "--lr", "0.05", "--seed", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["epochs_run"] == 4
    assert report["val_samples"] == 60
    meta = {p.key: p.value for p in onnx.load("o.onnx").metadata_props}
    settings = json.loads(meta["irkit.train"])
    assert settings["optimizer"] == "sgd" and settings["lr"] == 0.05 and settings["seed"] == 3


def test_build_then_train_the_onnx_file(in_tmp, built_iris):
    before = weights(built_iris)
    # built, not trained: the scaling is the identity until training fits it
    np.testing.assert_array_equal(before["normalize.shift"], 0.0)
    np.testing.assert_array_equal(before["normalize.scale"], 1.0)
    result = cli("train", str(built_iris), "--data", "iris", "-o", "t.onnx", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["final"]["val_accuracy"] >= 0.93
    after = weights(in_tmp / "t.onnx")
    assert set(after) == set(before)
    # scaling fitted on the training part (split with the recipe's seed, kept in metadata)
    ds = load_dataset("iris")
    train_idx, _ = train_val_split(len(ds.x), 0.2, 1, ds.y)
    shift, scale = fit_scaler(ds.x[train_idx], "standard")
    np.testing.assert_allclose(after["normalize.shift"], shift, rtol=1e-6)
    np.testing.assert_allclose(after["normalize.scale"], scale, rtol=1e-6)
    assert not np.allclose(after["dense_1.W"], before["dense_1.W"])
    assert (predict(in_tmp / "t.onnx", ds.x).argmax(axis=1) == ds.y).mean() >= 0.93


def test_training_continues_from_trained_weights(in_tmp, built_iris):
    data = ("--data", "iris")
    assert cli("train", str(built_iris), "-o", "t.onnx", "--json", *data).exit_code == 0
    fresh = json.loads(cli("train", str(built_iris), "-o", "f1.onnx", "--json",
                           "--epochs", "1", *data).stdout)
    again = json.loads(cli("train", "t.onnx", "-o", "t2.onnx", "--json", "--epochs", "1",
                           *data).stdout)
    # one more epoch from trained weights starts far lower than one epoch from scratch
    assert again["history"]["loss"][0] < 0.5 * fresh["history"]["loss"][0]
    assert again["final"]["val_accuracy"] >= 0.9


# ---- export / inspect / ops / grad ----------------------------------------------------------
def test_export_inference(in_tmp):
    result = cli("export", "digits_mlp", "-o", "d.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load("d.onnx")
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Dropout" not in ops and ops.count("Gemm") == 2
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    assert cli("export", "iris_mlp", "-o", "o18.onnx", "--opset", "18").exit_code == 0
    assert {o.domain: o.version for o in onnx.load("o18.onnx").opset_import}[""] == 18


def test_export_step_graph_runs(in_tmp):
    result = cli("export", "iris_mlp", "--step", "-o", "step.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load("step.onnx")
    onnx.checker.check_model(model, full_check=True)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    params = ["dense_1.W", "dense_1.b", "dense_2.W", "dense_2.b"]
    assert {"input", "target", "opt/lr", "opt/step", *params} <= set(inputs)
    assert {"m/*", "v/*"} <= set(inputs)  # Adam state: one flat vector for a small model
    assert outputs[:2] == ["loss", "correct"]
    assert {f"next/{p}" for p in params} <= set(outputs)
    assert "normalize.shift" not in inputs  # frozen: stays an initializer
    # one step with lr = 0 leaves the parameters as they were
    assert cli("build", "iris_mlp", "-o", "m.onnx").exit_code == 0
    w = weights("m.onnx")
    ds = load_dataset("iris")
    feeds = {p: w[p] for p in params}
    size = sum(w[p].size for p in params)
    feeds.update({f"{s}/*": np.zeros(size, np.float32) for s in ("m", "v")})
    feeds.update({"input": ds.x[:16], "target": ds.y[:16], "opt/lr": np.array(0.0, np.float32),
                  "opt/step": np.array(0, np.int64)})
    session = ort.InferenceSession("step.onnx", providers=["CPUExecutionProvider"])
    got = dict(zip(outputs, session.run(None, feeds), strict=True))
    assert np.isfinite(got["loss"]) and got["loss"] > 0
    assert 0 <= got["correct"] <= 16
    for p in params:
        np.testing.assert_array_equal(got[f"next/{p}"], w[p])


def test_export_training_model(in_tmp):
    result = cli("export", "digits_mlp", "--training", "-o", "t.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load("t.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert "Dropout" not in {n.op_type for n in model.graph.node}
    assert "GreaterOrEqual" not in {n.op_type for n in model.graph.node}
    (info,) = model.training_info
    # dropout only in training: its mask, drawn from the step counter
    assert "GreaterOrEqual" in {n.op_type for n in info.algorithm.node}
    bindings = {b.key: b.value for b in info.update_binding}
    assert bindings["dense_1.W"] == "next/dense_1.W"
    assert "normalize.shift" not in bindings


def test_export_step_keeps_recipe_optimizer_settings(in_tmp):
    # iris_linear trains with SGD momentum 0.9: the exported step has velocity state
    assert cli("export", "iris_linear", "--step", "-o", "lin.onnx").exit_code == 0
    inputs = [i.name for i in onnx.load("lin.onnx").graph.input]
    assert "velocity/dense_1.W" in inputs  # layer 0 is the scaling (normalize)


def test_export_from_onnx_file(in_tmp, built_iris):
    assert cli("export", str(built_iris), "-o", "same.onnx").exit_code == 0
    assert set(weights("same.onnx")) == set(weights(built_iris))
    result = cli("export", str(built_iris), "--step", "--optimizer", "sgd", "-o", "s.onnx")
    assert result.exit_code == 1 and "pass --data" in result.output  # never the stored path
    result = cli("export", str(built_iris), "--step", "--optimizer", "sgd", "-o", "s.onnx",
                 "--data", "iris")
    assert result.exit_code == 0, result.output
    inputs = [i.name for i in onnx.load("s.onnx").graph.input]
    assert "dense_1.W" in inputs and "normalize.scale" not in inputs


def test_inspect_text_and_json(built_iris):
    text = cli("inspect", str(built_iris))
    assert text.exit_code == 0, text.output
    assert "input: float32[Nx4]" in text.stdout and "output: float32[Nx3]" in text.stdout
    assert "parameters: 131" in text.stdout  # 4*16+16 + 16*3+3: what trains
    assert "fixed (constants, running statistics): 8 in 2 tensors" in text.stdout  # scaling
    result = cli("inspect", str(built_iris), "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["N", 4]}]
    assert info["outputs"][0]["shape"] == ["N", 3]
    assert info["parameters"] == 131 and info["initializers"] == 6
    assert info["fixed"] == {"weights": 8, "tensors": 2}
    assert info["ops"] == {"Gemm": 2, "Mul": 1, "Relu": 1, "Sub": 1}
    assert info["nodes"] == 5
    assert info["metadata"]["irkit.classes"] == "setosa,versicolor,virginica"


def test_ops_json():
    result = cli("ops", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    rows = {r["op"]: r for r in doc["ops"]}
    assert doc["count"] == len(doc["ops"]) == len(rows)
    assert doc["with_gradient"] == sum(r["gradient"] for r in doc["ops"])
    for op in ("Gemm", "MatMul", "Relu", "Add", "SoftmaxCrossEntropyLoss"):
        assert rows[op]["gradient"] is True, op
    assert all(r["since"] <= r["until"] == 17 for r in doc["ops"])
    text = cli("ops")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[-1] == (f"{doc['count']} ops, {doc['with_gradient']} "
                                            "with gradients")


def test_grad_adds_gradient_outputs(in_tmp, built_iris):
    result = cli("grad", str(built_iris), "--of", "output", "--wrt", "dense_2.b", "-o", "g.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load("g.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["output", "dense_2.b_grad"]
    session = ort.InferenceSession("g.onnx", providers=["CPUExecutionProvider"])
    x = load_dataset("iris").x[:5]
    cotangent = np.ones((5, 3), np.float32)
    _, grad_b = session.run(None, {"input": x, "output_grad": cotangent})
    np.testing.assert_allclose(grad_b, cotangent.sum(axis=0))  # d(sum out)/db = N


def test_every_command_has_help():
    top = cli("--help")
    assert top.exit_code == 0 and "Usage:" in top.stdout
    assert cli("-h").exit_code == 0
    assert set(main.commands) >= {"build", "train", "export", "grad", "inspect", "ops"}
    for name in main.commands:
        assert name in top.stdout
        for flag in ("--help", "-h"):
            result = cli(name, flag)
            assert result.exit_code == 0, (name, result.output)
            assert "Usage:" in result.stdout
            assert main.commands[name].help.split()[0] in result.stdout


def test_help_and_version_in_subprocess(tmp_path):
    result = irkit_process("train", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "Usage: irkit train" in result.stdout
    assert irkit_process("--version", cwd=tmp_path).returncode == 0


# ---- bad input: one line on stderr, exit code != 0, no traceback ----------------------------
@pytest.mark.parametrize("args, words", [
    (["train", "nosuch.onnx", "-o", "x.onnx"], ["nosuch.onnx"]),
    (["train", "nosuch.toml", "-o", "x.onnx"], ["nosuch.toml"]),
    (["build", "nosuch.toml", "-o", "x.onnx"], ["nosuch.toml"]),
    (["inspect", "nosuch.onnx"], ["nosuch.onnx"]),
    (["export", "nosuch.onnx", "-o", "x.onnx"], ["nosuch.onnx"]),
    (["grad", "nosuch.onnx", "--of", "output", "--wrt", "w", "-o", "x.onnx"], ["nosuch.onnx"]),
    (["train", "iris_mlp", "--data", "nosuchdata", "-o", "x.onnx"], ["nosuchdata"]),
    (["train", "iris_mlp", "--data", "missing.csv", "-o", "x.onnx"], ["missing.csv"]),
    (["build", "iris_mlp", "--data", "nosuchdata", "-o", "x.onnx"], ["nosuchdata"]),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_missing_files_and_datasets(in_tmp, args, words):
    assert_one_line_error(cli(*args), *words)


@pytest.mark.parametrize("recipe, words", [
    ("bad_syntax.toml", ["not valid TOML"]),
    ("unknown_key.toml", ["unknown key", "colour"]),
    ("unknown_train_key.toml", ["unknown key", "epochz"]),
    ("unknown_layer_key.toml", ["unknown key", "unitz"]),
    ("unknown_layer.toml", ["unknown type", "conv9"]),
    ("bad_activation.toml", ["unknown activation", "swishy"]),
    ("bad_epochs.toml", ["epochs"]),
    ("bad_lr.toml", ["lr"]),
    ("no_layers.toml", ["layers"]),
])
@pytest.mark.parametrize("command", ["train", "build"])
def test_malformed_recipes(in_tmp, bad_files, recipe, words, command):
    args = [command, str(bad_files / recipe), "-o", "x.onnx"]
    line = assert_one_line_error(cli(*args, "--data", "iris"), *words)
    assert recipe in line  # the message names the file
    assert not (in_tmp / "x.onnx").exists()


def test_labels_out_of_range_for_the_model(in_tmp, bad_files, built_iris):
    line = assert_one_line_error(
        cli("train", str(built_iris), "--data", str(bad_files / "label5.csv"), "-o", "x.onnx"),
        "label 5", "3 classes")
    assert "0..2" in line
    # the same for a recipe whose last layer has 3 units
    assert_one_line_error(cli("train", "iris_mlp", "--data", str(bad_files / "label5.csv"),
                              "-o", "x.onnx"), "label 5")


def test_nan_in_data(in_tmp, bad_files):
    assert_one_line_error(cli("train", "iris_mlp", "--data", str(bad_files / "nan.csv"),
                              "-o", "x.onnx"), "nan.csv", "NaN")


def test_targets_that_do_not_fit_the_loss(in_tmp):
    assert_one_line_error(cli("train", "iris_mlp", "--loss", "mse", "-o", "x.onnx"), "mse")
    assert_one_line_error(cli("train", "iris_mlp", "--loss", "nonsense", "-o", "x.onnx"),
                          "unknown loss")


def test_validation_split_leaving_no_training_data(in_tmp):
    assert_one_line_error(cli("train", "iris_mlp", "--val-split", "0.999", "-o", "x.onnx"),
                          "0.999")


@pytest.mark.parametrize("args", [
    ["train", "iris_mlp"],                                   # -o missing
    ["train", "iris_mlp", "-o", "x.onnx", "--bogus"],
    ["train", "iris_mlp", "-o", "x.onnx", "--epochs", "0"],
    ["train", "iris_mlp", "-o", "x.onnx", "--epochs", "ten"],
    ["train", "iris_mlp", "-o", "x.onnx", "--seed", "-1"],
    ["train", "iris_mlp", "-o", "x.onnx", "--lr", "0"],
    ["train", "iris_mlp", "-o", "x.onnx", "--optimizer", "adagrad"],
    ["train", "iris_mlp", "-o", "x.onnx", "--device", "tpu"],
    ["export", "iris_mlp", "-o", "x.onnx", "--opset", "99"],
    ["inspect"],
    ["nosuchcommand"],
], ids=lambda v: " ".join(v[1:]) or v[0])
def test_wrong_cli_arguments(in_tmp, args):
    assert_usage_error(cli(*args))
    assert not (in_tmp / "x.onnx").exists()


@pytest.mark.parametrize("command", ["inspect", "train", "export", "grad"])
def test_garbage_onnx_file(in_tmp, bad_files, command):
    garbage = str(bad_files / "garbage.onnx")
    extra = {"inspect": [], "train": ["--data", "iris", "-o", "x.onnx"],
             "export": ["-o", "x.onnx"], "grad": ["--of", "y", "--wrt", "w", "-o", "x.onnx"]}
    assert_one_line_error(cli(command, garbage, *extra[command]), "garbage.onnx",
                          "not a readable ONNX model")


@pytest.mark.parametrize("args", [
    ["train", "iris_mlp", "-o", "nodir/x.onnx"],
    ["train", "iris_mlp", "-o", "nodir/x.onnx", "--json"],
    ["build", "iris_mlp", "-o", "nodir/x.onnx"],
    ["export", "iris_mlp", "-o", "nodir/x.onnx"],
    ["export", "iris_mlp", "--training", "-o", "nodir/x.onnx"],
    ["export", "iris_mlp", "--step", "-o", "nodir/x.onnx"],
], ids=lambda v: " ".join(v))
def test_output_directory_missing(in_tmp, args):
    # fails at once, before training: no progress output, one line
    assert_one_line_error(cli(*args), "nodir", "does not exist")
    assert not (in_tmp / "nodir").exists()


def test_grad_bad_names_and_missing_directory(in_tmp, built_iris):
    model = str(built_iris)
    assert_one_line_error(cli("grad", model, "--of", "nope", "--wrt", "dense_1.W", "-o", "g.onnx"),
                          "nope")
    assert_one_line_error(cli("grad", model, "--of", "output", "--wrt", "nope", "-o", "g.onnx"),
                          "nope")
    assert_one_line_error(cli("grad", model, "--of", "output", "--wrt", "dense_1.W",
                              "-o", "nodir/g.onnx"), "nodir")


def test_errors_in_a_real_process(tmp_path, bad_files):
    for args in (["inspect", str(bad_files / "garbage.onnx")],
                 ["train", "iris_mlp", "--data", str(bad_files / "nan.csv"), "-o", "x.onnx"]):
        result = irkit_process(*args, cwd=tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("irkit: error:"), lines
    usage = irkit_process("train", "iris_mlp", "--epochs", "zero", "-o", "x.onnx", cwd=tmp_path)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@pytest.mark.parametrize("args", [
    ["train", "iris_mlp", "--data", "{bad}/nan.csv"],
    ["train", "iris_mlp", "--data", "{bad}/label5.csv"],
    ["train", "iris_mlp", "--loss", "mse"],
    ["train", "{bad}/unknown_layer.toml", "--data", "iris"],
    ["train", "{bad}/garbage.onnx", "--data", "iris"],
    ["build", "{bad}/bad_activation.toml"],
    ["export", "{bad}/bad_syntax.toml"],
], ids=lambda v: " ".join(os.path.basename(a) for a in v))
def test_failed_run_keeps_existing_output(in_tmp, bad_files, args):
    out = in_tmp / "precious.onnx"
    out.write_bytes(b"an earlier model")
    args = [a.replace("{bad}", str(bad_files)) for a in args]
    assert_one_line_error(cli(*args, "-o", str(out)))
    assert out.read_bytes() == b"an earlier model"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["precious.onnx"]  # no temp files


def test_unexpected_errors_are_one_line(in_tmp, monkeypatch):
    import irkit.cli.jobs as job

    def broken(*args, **kwargs):
        raise RuntimeError("Error in execution: something deep\nwith a second line")
    monkeypatch.setattr(job, "run_training", broken)
    line = assert_one_line_error(cli("train", "iris_mlp", "-o", "x.onnx"), "RuntimeError",
                                 "something deep")
    assert "second line" not in line
    monkeypatch.setenv("IRKIT_TRACEBACK", "1")  # and the way to see where it came from
    assert isinstance(cli("train", "iris_mlp", "-o", "x.onnx").exception, RuntimeError)
