"""Issue 9's findings on model files and the CLI, one test each: hostile or careless inputs end
in one line `irkit: error: ...` that names the problem, nothing is read that was not named,
nothing is written or destroyed that should not be. (The fold bomb, unfolded torch exports:
test_import_folding.py; grad fan-in: test_autodiff.py; safe_io itself: test_safe_io.py.)
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_checks import cli, one_line_error
from conftest import irkit_command, run_irkit
from onnx import TensorProto, helper, numpy_helper

from irkit.errors import IrkitError, ModelFileError
from irkit.ir import Graph
from irkit.onnx_io import from_onnx, load, to_onnx


# ---- helpers -------------------------------------------------------------------------------
def irkit_process(*args, cwd, limit_memory: bool = True, timeout: float = 60, **kwargs):
    """The installed `irkit` CLI in a subprocess, under a 1 GiB address-space limit."""
    return run_irkit(*args, cwd=cwd, timeout=timeout,
                     memory_limit=(1 << 30) if limit_memory else None, **kwargs)


def mlp(name: str = "y", **edits) -> onnx.ModelProto:
    """x[N,4] -> Gemm(W[3,4], b[3]) -> Relu -> y[N,3]: a small valid model to damage."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="gemm", transB=1),
             helper.make_node("Relu", ["h"], [name], name="relu")]
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3])],
                              [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv(**attrs) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", **attrs)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), str(path))
    return path


def grad_args(model, out):
    return ["grad", model, "--of", "y", "--wrt", "W", "-o", out]


# ---- safe outputs (item 1) -------------------------------------------------------------------
def test_o_fifo_and_directory_are_refused_and_stay_what_they_were(tmp_path, model_file):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "dir"
    folder.mkdir()
    one_line_error(cli(*grad_args(model_file, fifo)), "not a regular file")
    one_line_error(cli(*grad_args(model_file, folder)), "a directory")
    assert fifo.is_fifo() and folder.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["dir", "fifo", "m.onnx"]  # no DIR.tmp


def test_o_dev_null_is_refused_before_any_work(tmp_path):
    # the model does not even exist: the output is checked first
    one_line_error(cli(*grad_args(tmp_path / "missing.onnx", "/dev/null")), "/dev/null")
    one_line_error(cli("export", "iris_mlp", "-o", "/dev/null"), "not a regular file")
    assert not os.path.isfile("/dev/null")


def test_o_empty_name_leaves_no_dot_tmp(tmp_path, model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(cli(*grad_args(model_file, "")), "empty path")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_symlink_at_out_tmp_and_users_out_tmp_are_untouched(tmp_path, model_file):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "g.onnx"
    (tmp_path / "g.onnx.tmp").symlink_to(victim)
    mine = tmp_path / "g.onnx.tmp2"
    mine.write_text("mine")
    assert cli(*grad_args(model_file, out)).exit_code == 0
    assert victim.read_text() == "precious" and mine.read_text() == "mine"
    assert (tmp_path / "g.onnx.tmp").is_symlink()
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_symlink_as_output_is_refused(tmp_path, model_file):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "g.onnx").symlink_to(victim)
    one_line_error(cli(*grad_args(model_file, tmp_path / "g.onnx")), "symbolic link")
    assert victim.read_text() == "precious"


def test_output_equal_to_the_input_is_refused(tmp_path, model_file):
    before = model_file.read_bytes()
    one_line_error(cli(*grad_args(model_file, model_file)), "is the input")
    one_line_error(cli("export", model_file, "-o", tmp_path / "." / "m.onnx"), "is the input")
    assert model_file.read_bytes() == before


def test_missing_output_folder_is_found_before_work(tmp_path, model_file):
    one_line_error(cli(*grad_args(model_file, tmp_path / "no" / "g.onnx")), "does not exist")


def test_full_disk_names_the_file_and_leaves_no_partial_temp_file(tmp_path, model_file):
    """Issue 9: `irkit: error: : File too large` and a partial .tmp left behind."""
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = subprocess.run([*irkit_command(), *grad_args(model_file, out_dir / "g.onnx")],
                          capture_output=True, text=True, timeout=60, preexec_fn=small_files)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert str(out_dir / "g.onnx") in lines[0] and "File too large" in lines[0]
    assert os.listdir(out_dir) == []


# ---- limits on what is read (item 3) -----------------------------------------------------------
@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_device_or_fifo_as_model_is_refused_at_once(tmp_path, source):
    if source == "fifo":
        source = tmp_path / "fifo"
        os.mkfifo(source)
    done = irkit_process("inspect", source, cwd=tmp_path, timeout=30)  # a hang times out
    assert done.returncode == 1
    assert done.stderr.startswith("irkit: error: ") and "not a regular file" in done.stderr


def test_model_over_the_size_cap_is_refused_before_reading(tmp_path, model_file, monkeypatch):
    monkeypatch.setenv("IRKIT_MAX_MODEL_BYTES", "100")
    one_line_error(cli("inspect", model_file), "IRKIT_MAX_MODEL_BYTES")


def test_initializer_over_the_element_cap_is_refused_before_allocating(monkeypatch):
    model = mlp()
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])
    model.graph.initializer.append(big)
    with pytest.raises(IrkitError, match="initializer 'big' would have 1099511627776 elements"):
        from_onnx(model)


# ---- external data (item 4) ----------------------------------------------------------------------
def _external(folder: Path, location: str) -> Path:
    """m.onnx in `folder` whose W is stored externally at `location`."""
    model = mlp()
    w = model.graph.initializer[0]
    data = numpy_helper.to_array(w).tobytes()
    w.ClearField("raw_data")
    del w.float_data[:]
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        w.external_data.add(key=key, value=value)
    path = folder / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_external_data_inside_the_folder_is_read(tmp_path):
    path = _external(tmp_path, "weights.bin")
    want = numpy_helper.to_array(mlp().graph.initializer[0])
    (tmp_path / "weights.bin").write_bytes(want.tobytes())
    np.testing.assert_array_equal(load(path).initializers["W"].const, want)


@pytest.mark.parametrize("how", ["symlink", "dotdot", "absolute"])
def test_external_data_outside_the_folder_is_refused(tmp_path, how):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"symlink": "w.bin", "dotdot": "../secret.bin", "absolute": str(secret)}[how]
    if how == "symlink":
        (folder / "w.bin").symlink_to(secret)
    path = _external(folder, location)
    with pytest.raises(ModelFileError, match="model's folder"):
        load(path)
    one_line_error(cli("export", path, "-o", tmp_path / "out.onnx"), "model's folder")
    assert not (tmp_path / "out.onnx").exists()


def test_external_data_length_must_match_the_dims(tmp_path):
    path = _external(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)  # too short for 3x4 floats
    with pytest.raises(ModelFileError, match="too few"):
        load(path)


# ---- names printed to a terminal (item 4) -------------------------------------------------------
def test_inspect_and_errors_escape_control_characters(tmp_path):
    name = "y\r\x1b]0;owned\x07\x1b[2J"
    path = tmp_path / "m.onnx"
    onnx.save(mlp(name), str(path))
    result = cli("inspect", path)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned\\x07" in result.stdout
    error = one_line_error(cli("grad", path, "--of", "nope", "--wrt", "W", "-o",
                               tmp_path / "g.onnx"), "no graph output")
    assert "\x1b" not in error and "\r" not in error


# ---- damaged models: one line, never "unexpected" (item 5) --------------------------------------
def _raw_data_mismatch():
    model = mlp()
    model.graph.initializer[0].raw_data = b"\0" * 7
    return model


def _unknown_element_type():
    model = mlp()
    model.graph.initializer[1].data_type = 99
    return model


def _negative_dim():
    model = mlp()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -4
    return model


def _huge_opset():
    model = mlp()
    model.opset_import[0].version = 10**9
    return model


def _no_outputs():
    model = mlp()
    del model.graph.output[:]
    return model


def _duplicate_initializer():
    model = mlp()
    model.graph.initializer.append(model.graph.initializer[1])
    return model


def _not_utf8():
    model = mlp()
    model.metadata_props.add(key="k", value="v")
    data = model.SerializeToString().replace(b"\x12\x01v", b"\x12\x01\xe4")
    return onnx.ModelProto.FromString(data)


def _unsqueeze_repeated_axes():
    model = mlp()
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 0], np.int64), "ax"))
    model.graph.node[1].output[0] = "r"
    model.graph.node.append(helper.make_node("Unsqueeze", ["r", "ax"], ["u"], name="unsq"))
    model.graph.node.append(helper.make_node("Flatten", ["u"], ["y"], name="flat"))
    return model


DAMAGED = {
    "not UTF-8": (_not_utf8, "not UTF-8 text"),
    "Unsqueeze repeated axes": (_unsqueeze_repeated_axes, "unsq"),
    "raw_data length": (_raw_data_mismatch, "raw_data has 7 bytes"),
    "unknown element type": (_unknown_element_type, "unknown element type number 99"),
    "strides=0": (lambda: conv(strides=[0, 1]), "must be > 0"),
    "dilations=0": (lambda: conv(dilations=[1, 0]), "must be > 0"),
    "kernel_shape=-3": (lambda: conv(kernel_shape=[-3, 3]), "must be > 0"),
    "negative pads": (lambda: conv(pads=[0, -1, 0, 0]), "must be >= 0"),
    "group=0": (lambda: conv(group=0), "must be > 0"),
    "negative dim": (_negative_dim, "negative dimension"),
    "opset 10**9": (_huge_opset, "opset 1000000000 is outside"),
    "empty graph": (_no_outputs, "has no outputs"),
    "duplicate initializer": (_duplicate_initializer, "declared twice"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_model_is_one_line_and_nothing_is_written(tmp_path, case):
    make, words = DAMAGED[case]
    path = tmp_path / "bad.onnx"
    path.write_bytes(make().SerializeToString())
    for args in (["inspect", path], ["export", path, "-o", tmp_path / "out.onnx"],
                 grad_args(path, tmp_path / "g.onnx")):
        one_line_error(cli(*args), words)
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_export_refuses_graphs_irkit_would_not_read():
    graph = Graph("empty")
    graph.add_input("x", np.float32, (2,))
    with pytest.raises(ModelFileError, match="no outputs"):
        to_onnx(graph)
    with pytest.raises(IrkitError, match="opset"):
        to_onnx(load_mlp_graph(), opset=10**9)


def load_mlp_graph() -> Graph:
    return from_onnx(mlp())


# ---- one-line errors from click, numpy and onnxruntime (item 6) ----------------------------------
@pytest.mark.parametrize("args", [["train", "iris_mlp", "-o", "x.onnx", "--val-split", "1"],
                                  ["train", "iris_mlp", "-o", "x.onnx", "--epochs", "0"],
                                  ["export", "iris_mlp", "-o", "x.onnx", "--opset", "12"],
                                  ["export", "iris_mlp"]])
def test_click_usage_errors_are_one_line(tmp_path, args):
    done = irkit_process(*args, cwd=tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("irkit: error: ")


def test_numpy_warnings_do_not_reach_stderr(tmp_path):
    """Issue 9: a value that overflows float32 printed two RuntimeWarnings before the error."""
    rows = ["a,b,c,d,label"] + [f"{i % 7},1e308,{i % 3},{i % 5},{i % 3}" for i in range(60)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    done = irkit_process("train", "iris_mlp", "--data", "data.csv", "-o", "o.onnx",
                         "--epochs", "1", cwd=tmp_path, limit_memory=False, timeout=120)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("epoch")]
    assert "Warning" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("irkit: error: "), lines


def test_onnxruntime_log_lines_are_silenced_inside_commands(tmp_path):
    """A session that makes onnxruntime warn (an initializer also listed as an input), created
    after a CLI command ran in the same process, prints nothing of onnxruntime's own."""
    model = mlp()
    model.graph.input.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [3]))
    path = tmp_path / "warns.onnx"
    onnx.save(model, str(path))
    code = ("import sys, onnxruntime as ort\n"
            "from irkit.cli import main\n"
            "if sys.argv[2] == 'cli':\n"
            "    try:\n        main(['ops'])\n    except SystemExit:\n        pass\n"
            "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n")
    runs = {how: subprocess.run([sys.executable, "-c", code, str(path), how],
                                capture_output=True, text=True, timeout=60)
            for how in ("plain", "cli")}
    assert "onnxruntime" in runs["plain"].stderr  # the warning this test is about exists
    assert "onnxruntime" not in runs["cli"].stderr, runs["cli"].stderr
