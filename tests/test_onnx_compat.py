"""Import of models newer than opset 17 (irkit/onnx_compat.py): each rewrite gives the outputs
onnxruntime gives on the original model, through the round trip and the reference runtime; what
has no opset-17 spelling is a one-line UnsupportedOpError."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from irkit.runtimes.reference import ReferenceRuntime

from irkit.errors import UnsupportedOpError
from irkit.onnx_io import from_onnx, to_onnx

RNG = np.random.default_rng(7)
X = RNG.uniform(0.1, 2.0, (2, 3, 5)).astype(np.float32)  # positive: ReduceLogSum has a log

# (id, opset, graph text); every graph reads `float[2,3,5] x`
CASES = [
    ("reduce_axes_input", 18, """
        (float[2,3,5] x) => (float[2,1,5] y) { a = Constant <value_ints = [1]> ()
        y = ReduceMean <keepdims = 1> (x, a) }"""),
    ("reduce_empty_axes_reduces_all", 18, """
        (float[2,3,5] x) => (float y) { y = ReduceMax <keepdims = 0> (x) }"""),
    ("split_num_outputs_uneven_of_a_computed_value", 18, """
        (float[2,3,5] x) => (float[2,3,2] a, float[2,3,2] b, float[2,3,1] c) {
        r = Relu (x)
        a, b, c = Split <axis = -1, num_outputs = 3> (r) }"""),
    ("pad_axes_constant_pads", 18, """
        (float[2,3,5] x) => (float[2,4,8] y) {
        p = Constant <value_ints = [0, 2, 1, 1]> ()
        a = Constant <value_ints = [-2, 2]> ()
        y = Pad (x, p, , a) }"""),
    ("pad_axes_computed_pads", 18, """
        (float[2,3,5] x) => (float[2,3,9] y) {
        s = Shape <start = 0, end = 1> (x)
        p = Concat <axis = 0> (s, s)
        a = Constant <value_ints = [2]> ()
        y = Pad (x, p, , a) }"""),
    ("cast_saturate_on_a_float_target", 19, """
        (float[2,3,5] x) => (double[2,3,5] y) { y = Cast <to = 11, saturate = 1> (x) }"""),
    ("averagepool_unit_dilations", 19, """
        (float[2,3,5] x) => (float[2,3,4] y) {
        y = AveragePool <kernel_shape = [2], dilations = [1]> (x) }"""),
    ("constant_value_float_and_ints", 17, """
        (float[2,3,5] x) => (float[2,3,5] y, int64[2] s) {
        c = Constant <value_float = 2.5> ()
        y = Mul (x, c)
        s = Constant <value_ints = [4, 5]> () }"""),
]
CASES += [  # AveragePool dilations (opset 19): a grouped Conv of ones over the counted taps
    ("averagepool_dilations", 19, """
        (float[2,3,5] x) => (float[2,3,3] y) {
        y = AveragePool <kernel_shape = [2], dilations = [2]> (x) }"""),
    ("averagepool_dilations_pads_ceil", 19, """
        (float[2,3,5] x) => (float[2,3,3] y) {
        y = AveragePool <kernel_shape = [2], dilations = [2], pads = [1, 1], strides = [2],
                         ceil_mode = 1> (x) }"""),
    ("averagepool_dilations_pads_counted", 19, """
        (float[2,3,5] x) => (float[2,3,4] y) {
        y = AveragePool <kernel_shape = [3], dilations = [2], pads = [2, 1],
                         count_include_pad = 1> (x) }"""),
]
CASES += [  # Resize's opset-18 attributes: full-rank inputs, or a policy resolved to scales
    ("resize_axes_constant_scales", 18, """
        (float[2,3,5] x) => (float[2,3,10] y) { s = Constant <value_floats = [2.0]> ()
        y = Resize <axes = [2], mode = "linear"> (x, , s) }"""),
    ("resize_axes_sizes_and_roi", 18, """
        (float[2,3,5] x) => (float[2,4,3] y) { r = Constant <value_floats = [0.1, 0.2, 0.9, 1.0]> ()
        z = Constant <value_ints = [3, 4]> ()
        y = Resize <axes = [-1, 1], mode = "linear",
                    coordinate_transformation_mode = "tf_crop_and_resize"> (x, r, , z) }"""),
    ("resize_policy_not_larger", 18, """
        (float[2,3,5] x) => (float[2,6,10] y) { z = Constant <value_ints = [6, 20]> ()
        y = Resize <axes = [1, 2], keep_aspect_ratio_policy = "not_larger"> (x, , , z) }"""),
    ("resize_antialias_as_matrices", 18, """
        (float[2,3,5] x) => (float[2,2,3] y) { z = Constant <value_ints = [2, 2, 3]> ()
        y = Resize <antialias = 1, mode = "linear"> (x, , , z) }"""),
    ("resize_half_pixel_symmetric_as_matrices", 19, """
        (float[2,3,5] x) => (float[2,4,7] y) { s = Constant <value_floats = [1.0, 1.5, 1.5]> ()
        y = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel_symmetric">
                   (x, , s) }"""),
    # a policy's rounded dims past the floored ones: edge-padded, resized, sliced
    ("resize_policy_rounding_up_nearest", 18, """
        (float[2,3,5] x) => (float[2,2,3] y) { z = Constant <value_ints = [1, 3]> ()
        y = Resize <axes = [1, 2], keep_aspect_ratio_policy = "not_smaller"> (x, , , z) }"""),
    ("resize_policy_rounding_up_linear", 18, """
        (float[2,3,5] x) => (float[2,2,3] y) { z = Constant <value_ints = [1, 3]> ()
        y = Resize <axes = [1, 2], keep_aspect_ratio_policy = "not_smaller",
                    mode = "linear"> (x, , , z) }"""),
    ("resize_policy_rounding_up_linear_pytorch_half_pixel", 18, """
        (float[2,3,5] x) => (float[2,2,3] y) { z = Constant <value_ints = [1, 3]> ()
        y = Resize <axes = [1, 2], keep_aspect_ratio_policy = "not_smaller", mode = "linear",
                    coordinate_transformation_mode = "pytorch_half_pixel"> (x, , , z) }"""),
    ("resize_antialias_zero", 18, """
        (float[2,3,5] x) => (float[2,3,10] y) { s = Constant <value_floats = [1.0, 1.0, 2.0]> ()
        y = Resize <antialias = 0, mode = "linear"> (x, , s) }"""),
]
CASES += [  # torch's unoptimized dynamo split: SplitToSequence + SequenceAt, rewritten as Split
    ("split_to_sequence_sizes", 18, """
        (float[2,3,5] x) => (float[2,3,2] a, float[2,3,3] b) {
        sizes = Constant <value_ints = [2, 3]> ()
        s = SplitToSequence <axis = 2> (x, sizes)
        i = Constant <value_int = 0> ()
        j = Constant <value_int = -1> ()
        a = SequenceAt (s, i)
        b = SequenceAt (s, j) }"""),
    ("split_to_sequence_scalar_of_a_computed_value", 20, """
        (float[2,3,5] x) => (float[2,3,2] a, float[2,3,1] c) {
        r = Relu (x)
        two = Constant <value_int = 2> ()
        s = SplitToSequence <axis = -1> (r, two)
        i = Constant <value_int = 0> ()
        k = Constant <value_int = 2> ()
        a = SequenceAt (s, i)
        c = SequenceAt (s, k) }"""),
    ("split_to_sequence_ones_without_keepdims", 18, """
        (float[2,3,5] x) => (float[2,5] a, float[2,5] c) {
        s = SplitToSequence <axis = 1, keepdims = 0> (x)
        i = Constant <value_int = 0> ()
        k = Constant <value_int = 2> ()
        a = SequenceAt (s, i)
        c = SequenceAt (s, k) }"""),
]
CASES += [  # noop_with_empty_axes: a reduction over no axes keeps its elementwise part
    (f"reduce_empty_axes_noop_{op}", 18, f"""
        (float[2,3,5] x) => (float[2,3,5] y) {{
        y = {op} <keepdims = 0, noop_with_empty_axes = 1> (x) }}""")
    for op in ("ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
               "ReduceLogSumExp")]

UNSUPPORTED = [
    ("float6_cast", 28, """
        (float[2,3,5] x) => (float6e2m3[2,3,5] y) { y = Cast <to = 27> (x) }""",
     "FLOAT6E2M3"),
    ("resize_policy_rounding_up_align_corners", 18, """
        (float[2,3,5] x) => (float[2,2,3] y) { z = Constant <value_ints = [1, 3]> ()
        y = Resize <axes = [1, 2], keep_aspect_ratio_policy = "not_smaller", mode = "linear",
                    coordinate_transformation_mode = "align_corners"> (x, , , z) }""",
     "gives dims [2, 3] (scale 0.6 rounded), which opset-17 scales (floored: [1, 3]) cannot "
     "reach in mode 'align_corners'"),
    ("resize_antialias_on_a_leading_axis", 18, """
        (float[2,3,5] x) => (float[1,3,5] y) { s = Constant <value_floats = [0.5, 1.0, 1.0]> ()
        y = Resize <antialias = 1, mode = "linear"> (x, , s) }""", "last two axes"),
    ("resize_antialias_too_large_to_measure", 18, """
        (float[1,1,2,2048] x) => (float[1,1,2,1024] y) {
        s = Constant <value_floats = [1.0, 1.0, 1.0, 0.5]> ()
        y = Resize <antialias = 1, mode = "linear"> (x, , s) }""", "import folding limit"),
    ("sequence_at_a_computed_index", 18, """
        (float[2,3,5] x) => (float[2,3,1] a) {
        s = SplitToSequence <axis = 2> (x)
        i = Size (x)
        a = SequenceAt (s, i) }""", "SequenceAt"),
    ("sequence_input", 17, """
        (seq(float[2]) s, float[2,3,5] x) => (float[2,3,5] y) { y = Identity (x) }""",
     "sequence"),
]


def _model(opset: int, text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(
        f'<ir_version: 8, opset_import: ["" : {opset}]>\nmodel {text}')
    onnx.checker.check_model(model, full_check=True)
    return model


def _ort(model: onnx.ModelProto) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})


@pytest.mark.parametrize("opset, text", [pytest.param(o, t, id=i) for i, o, t in CASES])
def test_newer_opset_imports_with_the_same_outputs(opset, text):
    model = _model(opset, text)
    want = _ort(model)
    graph = from_onnx(model)
    exported = to_onnx(graph)  # checked in full against opset 17
    assert {o.domain: o.version for o in exported.opset_import}[""] == 17
    for got in (_ort(exported), ReferenceRuntime().compile(graph)({"x": X})):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opset, text, named",
                         [pytest.param(o, t, n, id=i) for i, o, t, n in UNSUPPORTED])
def test_what_opset_17_cannot_say_is_a_one_line_error(opset, text, named):
    with pytest.raises(UnsupportedOpError) as err:
        from_onnx(_model(opset, text))
    message = str(err.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset_20_is_lowered_and_differentiable(approximate):
    from irkit.passes import gradients
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    g = from_onnx(model)
    got = ReferenceRuntime().compile(g)({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    (dx,) = gradients(g, g.outputs[0].sum(), [g.inputs[0]])
    g.outputs = [dx]
    grad = ReferenceRuntime().compile(g)({"x": x})[0]
    eps = 1e-3
    fd = (ReferenceEvaluator(model).run(None, {"x": x + eps})[0]
          - ReferenceEvaluator(model).run(None, {"x": x - eps})[0]) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-3)


def test_dilated_average_pool_gradient_is_its_adjoint():
    """The pool is linear in x: its VJP with cotangent w must satisfy <pool(x), w> =
    <x, VJP(w)> for any x and w."""
    from irkit.passes.autodiff import AutodiffPass

    graph = from_onnx(_model(19, """
        (float[2,3,5] x) => (float[2,3,3] y) {
        y = AveragePool <kernel_shape = [2], dilations = [2], pads = [1, 1], strides = [2],
                         ceil_mode = 1> (x) }"""))
    AutodiffPass("y", ["x"])(graph)
    w = RNG.standard_normal((2, 3, 3)).astype(np.float32)
    y, dx = ReferenceRuntime().compile(graph)({"x": X, "y_grad": w})
    np.testing.assert_allclose(np.sum(y * w), np.sum(X * dx), rtol=1e-5)
