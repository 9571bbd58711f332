"""How many bytes running a model will make, estimated from shapes before anything runs.

A 147-byte model whose ConstantOfShape makes 4e8 floats cost `irkit optimize` 90 s and 5 GB
(onnxruntime folds the constant at session set-up, then runs it twice) and `irkit predict`
1.7 GB. `check_run_sizes` refuses such a model in one line before onnxruntime sees it:

- every value computed from constants alone (what onnxruntime folds at set-up, whatever the
  data) must fit in the allowance, and all of them together: IRKIT_MAX_TENSOR_BYTES (bytes
  of one tensor irkit makes rather than reads, default 128 MiB), or 16 times the bytes of the
  model's own stored tensors when that is more (a large model may Cast or Transpose its own
  weights);
- every other value whose rank onnx's inference knows (a symbolic dim counted as 1, the
  least it can be) must fit in the same plus 256 times the bytes of one feed of the graph
  inputs: a convolutional net exported at a fixed batch makes activations many times its
  input (64 channels at the input's resolution are 21 times a 3-channel image), while a
  bomb fed a few bytes still meets the plain cap.

Inference runs on a skeleton of the model (its nodes and its small constants; a large
initializer becomes an input of the same type and shape), so a 1 GB model is not copied twice.
Values of unknown rank are not estimated, and symbolic dims only at their least: beyond that
their cost grows with the data, which has its own caps.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

from irkit.errors import ModelFileError, ShapeError, printable
from irkit.ops.dtypes import numpy_dtype
from irkit.safe_io import limit

STORED_GROWTH = 16  # a model may make this many times the bytes it stores (Cast int8->float64)
FEED_GROWTH = 256  # and this many times the bytes of one feed of its inputs (activations)
_SMALL = 64  # initializers up to this many elements stay in the skeleton (shape inputs)


def _itemsize(elem: int) -> int:
    """The bytes an element is counted at: numpy's (irkit's one dtype table; int4 and the
    other packed types at one byte, a stricter count than their storage), a string at 8."""
    if elem == TensorProto.STRING:
        return 8
    try:
        return numpy_dtype(elem).itemsize
    except ShapeError:  # a type irkit has no dtype for: counted as one byte an element
        return 1


def _tensor_bytes(t: onnx.TensorProto) -> int:
    return math.prod(t.dims) * _itemsize(t.data_type)


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model without its large initializers (graph inputs instead), and the bytes of
    every stored tensor (initializers and Constant values)."""
    g, skel = model.graph, onnx.ModelProto()
    skel.ir_version, skel.graph.name = model.ir_version, g.name
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    s = skel.graph
    s.node.extend(g.node)
    s.input.extend(g.input)
    s.output.extend(g.output)
    stored, inputs = 0, {vi.name for vi in g.input}
    for t in g.initializer:
        stored += _tensor_bytes(t)
        if math.prod(t.dims) <= _SMALL:
            s.initializer.append(t)
        elif t.name not in inputs:
            s.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    stored += sum(_tensor_bytes(a.t) for n in g.node for a in n.attribute if a.HasField("t"))
    return skel, stored


def _least_sizes(model: onnx.ModelProto) -> dict[str, tuple[int, list[int], int]]:
    """name -> (bytes, shape, element type) of each value of inferred rank, a symbolic or
    unknown dim counted as 1: the least it can hold, so (N, 10**9) is a bomb at any N."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a model inference rejects: check_schemas names that problem
        return {}
    sizes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        sizes[vi.name] = (math.prod(dims) * _itemsize(t.elem_type), dims, t.elem_type)
    return sizes


def _refuse(node: onnx.NodeProto, name: str, size: tuple, allowed: int, what: str) -> None:
    nbytes, dims, elem = size
    op = printable(node.op_type)
    label = f"node {printable(node.name)} ({op})" if node.name else f"an unnamed {op} node"
    raise ModelFileError(
        f"{what} {printable(name)} ({label}) would hold {nbytes} bytes ({dims} of "
        f"{TensorProto.DataType.Name(elem).lower()}) when run, over the limit of {allowed} for a "
        "model of this size; raise IRKIT_MAX_TENSOR_BYTES if you trust it")


def _input_bytes(model: onnx.ModelProto) -> int:
    """The bytes of one feed of the graph inputs (symbolic dims counted as 1)."""
    total = 0
    for vi in model.graph.input:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        total += math.prod(dims) * _itemsize(t.elem_type)
    return total


def check_run_sizes(model: onnx.ModelProto) -> None:
    """ModelFileError (one line, naming the value and its node) when running `model` would
    make a tensor, or constants together, beyond the allowance (module doc); call it after
    `validate_model`, before onnxruntime sees a model from a file."""
    skel, stored = _skeleton(model)
    cap = limit("tensor_bytes")
    from_stored = max(cap, STORED_GROWTH * stored)
    from_data = max(cap, STORED_GROWTH * stored + FEED_GROWTH * _input_bytes(model))
    sizes = _least_sizes(skel)
    constant = {t.name for t in model.graph.initializer} - {vi.name for vi in model.graph.input}
    folded = 0
    for n in model.graph.node:
        from_constants = all(not i or i in constant for i in n.input)
        allowed = from_stored if from_constants else from_data
        for out in n.output:
            if from_constants:
                constant.add(out)
            size = sizes.get(out)
            if size is None:
                continue
            if size[0] > allowed:
                _refuse(n, out, size, allowed, "value")
            if from_constants:
                folded += size[0]
                if folded > allowed:
                    _refuse(n, out, size, allowed, "the constants computed up to value")
