"""Issue 23: tiny inputs must not cost gigabytes. A 147-byte model whose constant
ConstantOfShape makes 4e8 elements took `irkit inspect` to 1.6 GB (build-time shape values
and constant folding computed before looking at the size); a recipe with `units = 100000000`
reached 5.4 GB. Each run is measured in its own subprocess."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.measured import MEMORY_MB, one_line_error, run_irkit


def _constant_bomb(path, elements: int = 4 * 10**8) -> None:
    """x + ReduceSum(ConstantOfShape([elements])): every input constant, the output tiny."""
    nodes = [helper.make_node("ConstantOfShape", ["bs"], ["cz"]),
             helper.make_node("ReduceSum", ["cz"], ["s"], keepdims=1),
             helper.make_node("Add", ["x", "s"], ["y"])]
    g = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([elements], np.int64), "bs")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize("extra", [[], ["--json", "--nodes"]])
def test_inspect_of_a_constant_bomb_stays_small(tmp_path, extra):
    _constant_bomb(tmp_path / "bomb.onnx")
    assert (tmp_path / "bomb.onnx").stat().st_size < 200
    run = run_irkit(["inspect", "bomb.onnx", *extra], tmp_path)
    assert run.rc == 0, run.stderr
    assert "ConstantOfShape" in run.stdout
    assert run.peak_mb < MEMORY_MB / 2, f"inspect peaked at {run.peak_mb:.0f} MB"


def test_folding_leaves_a_large_constant_alone_without_computing_it(monkeypatch):
    from irkit.passes.fold_constants import FoldConstantsPass

    from irkit.ir import Graph
    from irkit.ops import get_op

    calls = []  # computing it to see its size took 1.6 GB (an error raised here is swallowed)
    monkeypatch.setattr(type(get_op("ConstantOfShape")), "compute", lambda *a: calls.append(a))
    g = Graph("g")
    shape = g.constant(np.array([4 * 10**8], np.int64))
    big = get_op("ConstantOfShape")(shape)
    g.outputs.append(big)
    FoldConstantsPass()(g)
    assert not calls
    assert [n.op_type for n in g.nodes] == ["ConstantOfShape"]


def test_a_recipe_with_huge_units_is_one_line_before_allocating(tmp_path):
    (tmp_path / "big.toml").write_text(
        '[model]\nlayers = [{ type = "dense", units = 100000000, activation = "relu" }, '
        '{ type = "dense", units = 3 }]\n[data]\ndataset = "iris"\n')
    run = run_irkit(["train", "big.toml", "-o", "out.onnx"], tmp_path)
    assert one_line_error(run), run.stderr
    assert "dense_0" in run.stderr and "IRKIT_MAX_ELEMENTS" in run.stderr
    assert run.peak_mb < MEMORY_MB / 2, f"peaked at {run.peak_mb:.0f} MB"
    assert not (tmp_path / "out.onnx").exists()
