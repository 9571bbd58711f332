"""irkit's own ONNX writer (irkit.onnx_io._wire) against onnx's: the same model, byte for byte.

The reference below builds each model with onnx.helper the way irkit exported before it had a
writer of its own; protobuf serializes fields in field-number order, so equal messages give
equal bytes and any difference in a field shows.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from irkit import ops
from irkit.errors import ModelFileError, UnsupportedOpError
from irkit.ir import Graph
from irkit.onnx_io import to_onnx
from irkit.onnx_io._wire import IR_VERSION, IRKIT_OPSET, attribute_kind, model_bytes, tensor_bytes
from irkit.version import __version__


def reference_bytes(graph: Graph) -> bytes:
    """The model as onnx.helper builds it."""
    def info(v):
        shape = None if v.shape is None else list(v.shape)
        return helper.make_tensor_value_info(v.name, helper.np_dtype_to_tensor_dtype(v.dtype),
                                             shape)

    def attr(node, name, value):
        kind = attribute_kind(node.op_type, node.domain, name)
        converted = {"float": float, "int": int, "floats": lambda v: [float(x) for x in v],
                     "ints": lambda v: [int(x) for x in v]}.get(kind)
        if converted is not None:
            return converted(value)
        if isinstance(value, np.ndarray) or kind == "tensor":
            return numpy_helper.from_array(np.asarray(value))
        return value

    nodes = [helper.make_node(n.op_type, [v.name if v is not None else "" for v in n.inputs],
                              [o.name for o in n.outputs], name=n.name,
                              domain=n.domain or None,
                              **{k: attr(n, k, a) for k, a in n.attributes.items()})
             for n in graph.nodes]
    g = helper.make_graph(nodes, graph.name, [info(v) for v in graph.inputs],
                          [info(v) for v in graph.outputs],
                          [numpy_helper.from_array(np.asarray(v.const), name)
                           for name, v in graph.initializers.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", IRKIT_OPSET)],
                              producer_name="irkit", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    for key, value in sorted(graph.metadata.items()):
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def _assert_same(graph: Graph) -> None:
    ours = model_bytes(graph)
    want = reference_bytes(graph)
    if ours != want:  # name the first field that differs
        assert onnx.ModelProto.FromString(ours) == onnx.ModelProto.FromString(want)
    assert ours == want
    onnx.checker.check_model(onnx.ModelProto.FromString(ours), full_check=True)


def test_ir_version_is_the_one_of_irkits_opset():
    assert IR_VERSION == helper.find_min_ir_version_for([helper.make_opsetid("", IRKIT_OPSET)])


@pytest.mark.parametrize("recipe", ["iris_mlp", "digits_cnn", "mnist_overfit"])
def test_recipe_graphs_are_written_as_onnx_helper_writes_them(recipe):
    """The train step (Adam, BatchNorm, Dropout, pooling), its eval graph and the inference
    model with its metadata."""
    from irkit.cli.jobs import prepare
    model, _, data = prepare(recipe, {})
    steps = model.prepare(data.x[:4])
    for graph in (steps.train, steps.eval, model.to_graph()):
        _assert_same(graph)


def test_every_attribute_kind_and_element_type():
    g = Graph("kinds")
    g.metadata.update({"b": "ünïcode ✓", "a": ""})
    x = g.add_input("x", np.float32, ("N", 3, 4, 4))
    n = g.add_input("n", np.int64, (2,))
    s = g.add_input("s", np.float64, ())                             # an empty shape
    m = g.add_input("m", np.float32, (None, 2))                      # an unnamed dim
    y = ops.LeakyRelu(ops.MaxPool(x, kernel_shape=(2, 2), strides=(2.0, 2.0),
                                  pads=(0, 0, 0, 0)), alpha=1)        # ints, int given as float
    y = ops.ReduceMean(y, axes=(-1, np.int64(-2)), keepdims=0)        # negative ints
    y = ops.Cast(y, to=11)                                            # int
    z = ops.Pad(x, g.constant([0, 0, 1, 1, 0, 0, 1, 1]), mode="reflect")  # string
    c = ops.ConstantOfShape(n, value=np.array([7], np.int8))          # tensor attribute

    def constant(array):
        return g.add_node("Constant", [], {"value": array},
                          [(array.dtype, array.shape)]).outputs[0]
    h = constant(np.array(2.5, np.float16))
    b = constant(np.array([True, False]))
    u = constant(np.zeros((0, 2), np.uint64))                         # no elements
    g.add_initializer("w", np.arange(6, dtype=np.int32).reshape(2, 3))
    g.outputs = [ops.Add(y, s), z, c, h, b, u, g.value("w"), ops.Relu(m)]
    _assert_same(g)


def test_tensor_bytes_equal_numpy_helper():
    for array in (np.float32(1.5), np.arange(5, dtype=np.uint16), np.array([1 + 2j]),
                  np.array(["a", "ü"]), np.ones((2, 0), np.float64), np.arange(6)[::2]):
        assert tensor_bytes(array, "t") == numpy_helper.from_array(array, "t") \
            .SerializeToString(), array.dtype
    big = np.arange(4, dtype=">i4")  # written little-endian, as ONNX stores raw data
    assert tensor_bytes(big) == tensor_bytes(big.astype("<i4"))


def test_to_onnx_parses_the_written_bytes():
    g = Graph()
    x = g.add_input("x", np.float32, (2,))
    g.outputs = [ops.Relu(x)]
    assert to_onnx(g).SerializeToString() == model_bytes(g)


def test_what_validation_would_refuse_is_refused_in_one_line():
    g = Graph("empty")
    g.add_input("x", np.float32, (2,))
    with pytest.raises(ModelFileError, match="no outputs"):
        model_bytes(g)
    g = Graph()
    x = g.add_input("bad\udc80name", np.float32, (2,))
    g.outputs = [ops.Relu(x)]
    with pytest.raises(ModelFileError, match="not UTF-8 text"):
        model_bytes(g)
    with pytest.raises(UnsupportedOpError, match="no type for"):
        tensor_bytes(np.array(["2026-11-30"], "datetime64[D]"), "t")


def test_weights_are_copied_once():
    """A model's bytes are joined once from pieces that view the weights: writing a 64 MiB
    model allocates 64 MiB (nested messages joined level by level would copy them 5 times)."""
    import tracemalloc

    from irkit.ir import set_verification
    g = Graph()
    x = g.add_input("x", np.float32, (1, 4096))
    g.outputs = [ops.MatMul(x, g.add_initializer("w", np.ones((4096, 4096), np.float32)))]
    was = set_verification(False)  # its checks would parse the model too
    tracemalloc.start()
    try:
        data = model_bytes(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        set_verification(was)
    assert len(data) > 64 * 2**20
    assert peak < 1.05 * len(data), peak / len(data)
