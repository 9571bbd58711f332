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
    _constants_bomb(path, count=1, elements=elements)


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


def _constants_bomb(path, count: int = 12, elements: int = 25 * 10**6) -> None:
    """x + the sum of `count` ConstantOfShape results, each under the tensor cap, together
    1.2 GB: onnxruntime folds them all at set-up."""
    nodes, total = [], "x"
    for i in range(count):
        nodes += [helper.make_node("ConstantOfShape", ["bs"], [f"c{i}"]),
                  helper.make_node("ReduceSum", [f"c{i}"], [f"s{i}"], keepdims=1),
                  helper.make_node("Add", [total, f"s{i}"], [f"t{i}"])]
        total = f"t{i}"
    nodes.append(helper.make_node("Identity", [total], ["y"]))
    g = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([elements], np.int64), "bs")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize("command", [["optimize", "bomb.onnx", "-o", "out.onnx"],
                                     ["predict", "bomb.onnx", "--data", "x.csv", "-o",
                                      "out.csv"],
                                     ["train", "bomb.onnx", "--data", "x.csv", "-o", "out.onnx"]])
@pytest.mark.parametrize("bomb", [_constant_bomb, _constants_bomb])
def test_running_a_constant_bomb_is_one_line_before_onnxruntime(tmp_path, command, bomb):
    """optimize ran the 147-byte bomb in onnxruntime twice (90 s, 5 GB), predict and train
    once (1.7 GB): the sizes its shapes give are checked before anything runs."""
    bomb(tmp_path / "bomb.onnx")
    (tmp_path / "x.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n5,6,7,8,1\n")
    run = run_irkit(command, tmp_path, timeout=60)
    assert one_line_error(run), run.stderr
    assert "IRKIT_MAX_TENSOR_BYTES" in run.stderr and "ConstantOfShape" in run.stderr
    assert run.peak_mb < MEMORY_MB / 2, f"peaked at {run.peak_mb:.0f} MB"
    assert not (tmp_path / command[-1]).exists()


def test_a_model_whose_constants_are_its_own_weights_is_not_refused(tmp_path):
    """The allowance grows with the tensors a model stores: a Cast of its own 2 MB weight
    (bigger than a small allowance) runs."""
    w = numpy_helper.from_array(np.ones((4, 2**17), np.float32), "w")
    nodes = [helper.make_node("Cast", ["w"], ["w64"], to=TensorProto.DOUBLE),
             helper.make_node("ReduceSum", ["w64"], ["s"], keepdims=1),
             helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "s32"], ["y"])]
    g = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    run = run_irkit(["optimize", "m.onnx", "-o", "out.onnx"], tmp_path,
                    env={"IRKIT_MAX_TENSOR_BYTES": str(1 << 20)})
    assert run.rc == 0, run.stderr
    assert (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("layers, refused", [
    # units = 60,000,000 on Iris's 4 features: 2.4e8 elements, under IRKIT_MAX_ELEMENTS, were
    # drawn in float64 (about 3 GB)
    (['{ type = "dense", units = 60000000 }'], "dense_0"),
    # four layers of 100 MB each, every one under every cap, 400 MB together (and Adam's)
    (['{ type = "dense", units = 5000 }'] * 5, "dense_2")])
def test_a_recipe_s_weights_are_refused_by_their_bytes(tmp_path, layers, refused):
    stack = ", ".join([*layers, '{ type = "dense", units = 3 }'])
    (tmp_path / "big.toml").write_text(f'[model]\nlayers = [{stack}]\n[data]\ndataset = "iris"\n')
    run = run_irkit(["train", "big.toml", "-o", "out.onnx"], tmp_path, timeout=60)
    assert one_line_error(run), run.stderr
    assert f"layer {refused}: weight" in run.stderr and "IRKIT_MAX_TENSOR_BYTES" in run.stderr
    assert run.peak_mb < MEMORY_MB / 2, f"peaked at {run.peak_mb:.0f} MB"
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("kind", ["glorot_uniform", "he_normal", "he_uniform", "normal"])
def test_weights_are_drawn_without_a_float64_copy(kind):
    """A float64 draw cast to float32 held three times the weight's bytes at once."""
    import tracemalloc

    from irkit.nn import init
    shape = (1000, 8000)
    tracemalloc.start()
    try:
        weight = init.make(kind, shape, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weight.dtype == np.float32 and weight.shape == shape
    assert peak < 1.5 * weight.nbytes, f"drawing peaked at {peak / weight.nbytes:.1f}x"


def _tiled(source: str) -> onnx.ModelProto:
    """y = Tile(SRC, [1, 8]): SRC is the input x (1, 65536) or a constant of that shape."""
    inits = [numpy_helper.from_array(np.array([1, 8], np.int64), "reps")]
    if source == "c":
        inits.append(numpy_helper.from_array(np.ones((1, 1 << 16), np.float32), "c"))
    g = helper.make_graph([helper.make_node("Tile", [source, "reps"], ["t"]),
                           helper.make_node("ReduceSum", ["t"], ["s"], keepdims=1),
                           helper.make_node("Add", ["x", "s"], ["y"])], "h",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_static_values_may_grow_with_the_input_feed(monkeypatch):
    """With a 1 MiB tensor cap, a 2 MiB Tile of the 256 KiB input is allowed (within 256 times
    the feed), and a 2 MiB Tile of a 256 KiB constant too; with the input
    replaced by a 4-byte one, the same Tile of a broadcast input is refused."""
    from irkit.errors import ModelFileError
    from irkit.onnx_io import check_run_sizes
    monkeypatch.setenv("IRKIT_MAX_TENSOR_BYTES", str(1 << 20))
    check_run_sizes(_tiled("x"))
    check_run_sizes(_tiled("c"))
    tiny = _tiled("x")
    tiny.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]))
    tiny.graph.node[1].input[0] = "t"
    expand = helper.make_node("Expand", ["x", "shape"], ["t"])
    tiny.graph.node[0].CopyFrom(expand)
    tiny.graph.initializer.append(numpy_helper.from_array(np.array([1, 1 << 19], np.int64),
                                                          "shape"))
    with pytest.raises(ModelFileError, match="value 't' .*2097152 bytes.*IRKIT_MAX_TENSOR"):
        check_run_sizes(tiny)


def test_a_fixed_batch_conv_net_s_activations_are_not_refused():
    """torch.onnx.export writes a fixed batch unless told otherwise: a 3 -> 64 channel Conv of
    a (16, 3, 512, 512) image makes 1 GiB (21 times the feed, from 7 KB of weights); it is a
    model's own activations, not a bomb, and must not be refused."""
    from irkit.onnx_io import check_run_sizes
    w = numpy_helper.from_array(np.ones((64, 3, 3, 3), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 3, 512, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    check_run_sizes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_bomb_with_a_symbolic_batch_is_sized_at_its_least():
    """x (N, 4) expanded to (N, 4, 2**28): 4 GiB at N = 1 already, so refused whatever N."""
    from irkit.errors import ModelFileError
    from irkit.onnx_io import check_run_sizes
    shape = numpy_helper.from_array(np.array([1, 4, 1 << 28], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
         helper.make_node("Expand", ["u", "shape"], ["e"]),
         helper.make_node("ReduceSum", ["e", "ax"], ["y"], keepdims=0)], "h",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [shape, numpy_helper.from_array(np.array([2], np.int64), "ax")])
    with pytest.raises(ModelFileError, match="value 'e' .*4294967296 bytes.*IRKIT_MAX_TENSOR"):
        check_run_sizes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_the_weight_budget_is_a_recipe_s_not_python_code_s(monkeypatch):
    """A model built in Python is the user's own code: only the element cap applies to it;
    the same layers from a recipe (a budget) are refused before the weight is drawn."""
    from irkit import nn
    from irkit.errors import SpecError
    from irkit.train.sources import ModuleSource
    monkeypatch.setenv("IRKIT_MAX_TENSOR_BYTES", str(1 << 20))
    layers = lambda: nn.Sequential([nn.Dense(1 << 17), nn.Dense(3)])  # noqa: E731
    ModuleSource(layers(), (4,)).build()  # a 2 MiB kernel
    with pytest.raises(SpecError, match="dense_0: weight 'W' .*IRKIT_MAX_TENSOR_BYTES"):
        ModuleSource(layers(), (4,), weight_budget=1 << 20).build()


def _folded_bomb(nodes: list, inits: dict) -> onnx.ModelProto:
    """x + ReduceSum(big), `big` made by `nodes` from the constants `inits` alone."""
    nodes = [*nodes, helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    g = helper.make_graph(nodes, "v", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


ONES = numpy_helper.from_array(np.array([1.0], np.float32))
BOMBS = {  # each makes 4e8 floats from a few constants; onnx's inference sizes every one
    "concat": ([helper.make_node("Concat", ["a", "b"], ["shape"], axis=0),
                helper.make_node("ConstantOfShape", ["shape"], ["big"], value=ONES)],
               {"a": np.array([20000]), "b": np.array([20000])}),
    "mul": ([helper.make_node("Mul", ["a", "b"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["big"], value=ONES)],
            {"a": np.array([20000]), "b": np.array([20000])}),
    "expand": ([helper.make_node("Expand", ["c", "shape"], ["big"])],
               {"c": np.float32(1), "shape": np.array([4 * 10**8])}),
    "tile": ([helper.make_node("Tile", ["c", "r"], ["big"])],
             {"c": np.ones(1, np.float32), "r": np.array([4 * 10**8])}),
    "range": ([helper.make_node("Range", ["a", "b", "d"], ["big"])],
              {"a": np.float32(0), "b": np.float32(4e8), "d": np.float32(1)}),
    "pad": ([helper.make_node("Pad", ["c", "p"], ["big"])],
            {"c": np.ones(1, np.float32), "p": np.array([0, 4 * 10**8])}),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_bombs_of_every_shape_op_are_sized_before_running(kind):
    from irkit.errors import ModelFileError
    from irkit.onnx_io import check_run_sizes
    with pytest.raises(ModelFileError, match=r"value 'big' \(an unnamed '\w+' node\) would "
                                             r"hold 1600000\d\d\d bytes"):
        check_run_sizes(_folded_bomb(*BOMBS[kind]))
