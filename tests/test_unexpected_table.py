"""Issue 23's "unexpected" list, one row each: bad input that used to end in `unexpected
...` (or onnxruntime's own message) is one `irkit: error:` line naming the problem, through
the real CLI in a subprocess; a name holding a NUL byte is simply carried."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from tests.measured import MEMORY_MB, one_line_error, run_irkit


def _model(nodes, inits=(), inputs=None, out="y") -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", T.FLOAT, ["N", 4])]
    g = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info(out, T.FLOAT, None)],
                          list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _dropout_2():
    return _model([helper.make_node("Dropout", ["x", "r", "t"], ["y"])],
                  [numpy_helper.from_array(np.array(2.0, np.float32), "r"),
                   numpy_helper.from_array(np.array(True), "t")])


def _dims_200():
    w = T(name="W", data_type=T.FLOAT, dims=[1] * 200, raw_data=bytes(4))
    return _model([helper.make_node("Add", ["x", "W"], ["y"])], [w])


def _size0_as_3():
    w = numpy_helper.from_array(np.zeros((0,), np.float32), "W")
    w.dims[:] = [3]
    return _model([helper.make_node("Add", ["x", "W"], ["y"])], [w])


def _sub_1002():
    return _model([helper.make_node("Sub", ["x"] * 1002, ["y"])])


MODELS = {"dropout_ratio_2": (_dropout_2, "ratio in [0, 1)"),
          "dims_200": (_dims_200, "at most 64"),
          "size0_reshaped_to_3": (_size0_as_3, "need 3"),
          "sub_1002_inputs": (_sub_1002, "Sub takes 2")}


@pytest.mark.parametrize("case", list(MODELS))
@pytest.mark.parametrize("command", ["inspect", "predict"])
def test_bad_models_are_one_line(tmp_path, case, command):
    build, words = MODELS[case]
    onnx.save(build(), str(tmp_path / "m.onnx"))
    args = ["inspect", "m.onnx"] if command == "inspect" else \
        ["predict", "m.onnx", "--data", "iris", "-o", "p.csv"]
    run = run_irkit(args, tmp_path)
    assert one_line_error(run) and words in run.stderr, run.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_nul_byte_in_a_name_is_carried(tmp_path):
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y\0z"])], out="y\0z"),
              str(tmp_path / "m.onnx"))
    for args in (["inspect", "m.onnx"], ["export", "m.onnx", "-o", "e.onnx"]):
        run = run_irkit(args, tmp_path)
        assert run.rc == 0 and not run.lines, run.stderr


DATA = {"label_without_features.csv": (lambda p: p.write_text("label\n0\n1\n"), "feature"),
        "tiny_rows.csv": (lambda p: p.write_text("a,label\n" + "1,0\n" * 500_000), None),
        "y_2d.npz": (lambda p: np.savez(p, x=np.zeros((6, 4), np.float32),
                                        y=np.zeros((6, 2), np.int64)), "y")}


@pytest.mark.parametrize("name", list(DATA))
def test_bad_datasets_are_one_line_or_train(tmp_path, name):
    make, words = DATA[name]
    make(tmp_path / name)
    run = run_irkit(["train", "iris_mlp", "--data", name, "--epochs", "1", "-o", "t.onnx"],
                    tmp_path, timeout=60)
    assert run.peak_mb < MEMORY_MB, f"peaked at {run.peak_mb:.0f} MB"
    if words is None:  # 500k rows of one feature and one class: trains (was ZeroDivisionError)
        assert run.rc == 0 or one_line_error(run), run.stderr
        assert "unexpected" not in run.stderr and "Traceback" not in run.stderr
        return
    assert one_line_error(run) and words in run.stderr, run.stderr
    assert not (tmp_path / "t.onnx").exists()
