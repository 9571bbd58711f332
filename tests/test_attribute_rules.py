"""Issue 23: bad models that ended in "unexpected" errors, onnxruntime's own C++ messages or
raw schema text now end in one line naming the problem: the validator's one table of
attribute rules (Dropout ratio, axis/axes, perm), ranks <= 64, input counts; `predict`
validates the model as an import does."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from irkit.cli import main
from irkit.errors import ModelFileError
from irkit.onnx_io import from_onnx


def _model(nodes, inits=(), x_shape=("N", 4), opset=17, out="y") -> onnx.ModelProto:
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(x_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _scalar(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype), name)


CASES = {
    "dropout_ratio_input": (
        _model([helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")],
               [_scalar("r", 2.0), _scalar("t", True, np.bool_)]), "must be a ratio in [0, 1)"),
    "dropout_ratio_constant": (
        _model([helper.make_node("Constant", [], ["r"], value=_scalar("v", -0.5)),
                helper.make_node("Dropout", ["x", "r"], ["y"], name="drop")]),
        "must be a ratio in [0, 1)"),
    "dropout_ratio_attribute": (
        _model([helper.make_node("Dropout", ["x"], ["y"], ratio=1.5)], opset=10),
        "'ratio' must be in [0, 1)"),
    "axis": (_model([helper.make_node("Softmax", ["x"], ["y"], axis=1000)]), "within rank 64"),
    "axes_repeated": (_model([helper.make_node("ReduceMax", ["x"], ["y"], axes=[1, 1])]),
                      "distinct axes"),
    "perm": (_model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 0])]), "permutation"),
    "rank_200_initializer": (
        _model([helper.make_node("Add", ["x", "W"], ["y"])],
               [TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1] * 200,
                            raw_data=bytes(4))]), "200 dimensions; at most 64"),
    "rank_100_input": (_model([helper.make_node("Relu", ["x"], ["y"])], x_shape=[1] * 100),
                       "declares 100 dimensions"),
    "sub_1002_inputs": (_model([helper.make_node("Sub", ["x"] * 1002, ["y"], name="s")]),
                        "has 1002 inputs; Sub takes 2"),
    "pads": (_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], pads=[-1, 0])],
                    x_shape=[1, 1, 8]), "must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_attributes_are_one_line_in_every_command(case, tmp_path):
    model, words = CASES[case]
    with pytest.raises(ModelFileError, match=re.escape(words)):
        from_onnx(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    (tmp_path / "x.csv").write_text("a,b,c,d\n1,2,3,4\n")
    for args in (["inspect", path], ["export", path, "-o", tmp_path / "o.onnx"],
                 ["predict", path, "--data", tmp_path / "x.csv"]):
        result = CliRunner().invoke(main, [str(a) for a in args])
        lines = result.stderr.splitlines()
        assert result.exit_code == 1 and len(lines) == 1, (args[0], result.output)
        assert lines[0].startswith("irkit: error: ") and words in lines[0], lines[0]
        assert "onnxruntime" not in result.output and "unexpected" not in lines[0]
    assert not (tmp_path / "o.onnx").exists()


def test_good_values_pass_the_table():
    for nodes, inits in (
            ([helper.make_node("Dropout", ["x", "r"], ["y"])], [_scalar("r", 0.0)]),
            ([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], []),
            ([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [])):
        from_onnx(_model(nodes, inits))


def test_saved_state_of_the_wrong_size_is_a_one_line_error():
    from irkit.nn import Dense, Sequential
    from irkit.train import Adam, ModuleSource, build_step_graphs, get_loss
    model = ModuleSource(Sequential([Dense(3)]), input_shape=(4,), seed=0)
    steps = build_step_graphs(model, get_loss("mse"), Adam())
    slot = steps.slots[0]
    with pytest.raises(ModelFileError, match=re.escape(f"'{slot}' has 0 values")):
        steps.initial_state(model.weights(), 0.1, {slot: np.zeros(0, np.float32)})
