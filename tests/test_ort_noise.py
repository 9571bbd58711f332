"""Issue 23: nothing of onnxruntime's own log (its colored `[E:onnxruntime:...]` lines) reaches
the user beside irkit's one line, unless asked for with `irkit --verbose`. onnxruntime writes
its log to the process's stderr from C++, so these run `irkit` in a subprocess. The quiet
tests failed on the code before issue 23.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save


@pytest.fixture(scope="module")
def failing(tmp_path_factory) -> Path:
    """A valid model that onnxruntime fails to run: Reshape of (N, 4) rows to (7, 3)."""
    folder = tmp_path_factory.mktemp("noise")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([7, 3], np.int64), "s")])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
         str(folder / "reshape.onnx"))
    (folder / "x.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n5,6,7,8,1\n")
    return folder


def _irkit(*args, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IRKIT_VERBOSE"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "irkit.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_onnxruntime_failures_are_one_line_and_no_log(failing, command):
    done = _irkit(command, "reshape.onnx", "--data", "x.csv", cwd=failing)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: reshape.onnx: onnxruntime "
                                                   "could not run the model"), lines
    assert "\x1b[" not in done.stderr and "[E:onnxruntime" not in done.stderr
    # onnxruntime's internals stay out of the line: status prefix, source path, C++ names
    for internal in ("[ONNXRuntimeError]", "onnxruntime_src", "onnxruntime::", "was false"):
        assert internal not in lines[0], lines[0]
    assert "(Reshape): The input tensor cannot be reshaped" in lines[0], lines[0]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_verbose_shows_onnxruntime_log(failing, how):
    args = ["--verbose"] if how == "flag" else []
    done = _irkit(*args, "predict", "reshape.onnx", "--data", "x.csv", cwd=failing,
                  env_extra={"IRKIT_VERBOSE": "1"} if how == "environment" else None)
    assert done.returncode == 1
    assert "[E:onnxruntime" in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("irkit: error: reshape.onnx")


def test_onnxruntime_messages_lose_their_internals():
    """The one translation of onnxruntime's errors (irkit.errors.ort_message), on texts
    onnxruntime 1.31 gives: a templated kernel with its return type, a plain status."""
    from irkit.errors import ort_message
    dropout = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running "
               "Dropout node. Name:'d' Status Message: /onnxruntime_src/onnxruntime/core/"
               "providers/cpu/nn/dropout_op.h:42 onnxruntime::common::Status onnxruntime::"
               "Dropout<T1, T2>::Compute(onnxruntime::OpKernelContext*) const [with T1 = float; "
               "T2 = float] ratio must be in the range [0, 1)\nmore")
    assert ort_message(RuntimeError(dropout)) == "node 'd' (Dropout): ratio must be in the " \
                                                "range [0, 1)"
    gather = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while "
              "running Gather node. Name:'g' Status Message: indices element out of data "
              "bounds, idx=7 must be within the inclusive range [-4,3]")
    assert ort_message(RuntimeError(gather)) == ("node 'g' (Gather): indices element out of "
                                                 "data bounds, idx=7 must be within the "
                                                 "inclusive range [-4,3]")
    assert ort_message(RuntimeError("")) == "RuntimeError"
