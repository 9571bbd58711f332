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


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_verbose_shows_onnxruntime_log(failing, how):
    args = ["--verbose"] if how == "flag" else []
    done = _irkit(*args, "predict", "reshape.onnx", "--data", "x.csv", cwd=failing,
                  env_extra={"IRKIT_VERBOSE": "1"} if how == "environment" else None)
    assert done.returncode == 1
    assert "[E:onnxruntime" in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("irkit: error: reshape.onnx")
