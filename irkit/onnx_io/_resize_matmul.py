"""A Resize opset 17 has no filter for (antialias=1, opset 18; coordinate_transformation_mode
half_pixel_symmetric, opset 19) as the linear map it is, for `downgrade_to_opset_17`.

Resize is separable and linear in X: along each resized axis the output is a fixed (out, in)
weight matrix applied to X, set by the sizes, the scale and the filter alone. With those
known at import, the matrices are measured by running the node itself (onnx.reference) on a
basis: along axis a, an input whose axis b (another axis) counts the basis vectors and whose
axis a holds them, with every other axis of scale 1. The node becomes MatMuls by constants:
MatMul(W, X) along the second-to-last axis, MatMul(X, W^T) along the last. Resizing other
axes, unknown sizes or a non-float input are a one-line UnsupportedOpError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper

from irkit.errors import UnsupportedOpError
from irkit.onnx_io._infer import MAX_IMPORT_FOLD_ELEMENTS, evaluate
from irkit.safe_io import limit


def resize_as_matmuls(rewrite: Any, n: onnx.NodeProto, label: str) -> list[onnx.NodeProto]:
    """The MatMul nodes (by constant weights) that replace Resize `n` (see the module)."""
    shape = rewrite.shapes.get(n.input[0])
    why = "a filter opset 17 lacks (antialias or half_pixel_symmetric)"
    given = [rewrite.fold(n.input[i]) if len(n.input) > i and n.input[i] else None
             for i in (1, 2, 3)]
    scales, sizes = (None if v is None or not np.size(v) else np.ravel(v) for v in given[1:])
    dtype = helper.tensor_dtype_to_np_dtype(rewrite.elem_type(n.input[0]))
    if shape is None or (scales is None and sizes is None) or dtype.kind != "f":
        raise UnsupportedOpError(f"{label}: {why} is written as matrix products, which need "
                                 "float data, constant scales or sizes and a known rank")
    rank = len(shape)
    out = [int(sizes[a]) if sizes is not None else math.floor(d * float(scales[a]))
           if isinstance(d, int) else d for a, d in enumerate(shape)]
    moved = [a for a in range(rank) if out[a] != shape[a] or (
        scales is not None and not math.isclose(float(scales[a]), 1.0))]
    if any(a < rank - 2 or not isinstance(shape[a], int) for a in moved) or rank < 2:
        raise UnsupportedOpError(f"{label}: {why} is written as matrix products along the last "
                                 f"two axes only, of known sizes; this one resizes axes {moved} "
                                 f"of {shape}")
    x, nodes = n.input[0], []
    for a in moved:
        weights = _measured(rewrite, n, a, shape[a], out[a], scales, dtype)
        w = rewrite.fresh(f"{n.output[0]}_axis{a}_weights")
        rewrite.add_const(w, weights.T.copy() if a == rank - 1 else weights)
        y = n.output[0] if a == moved[-1] else rewrite.fresh(f"{n.output[0]}_axis{a}")
        inputs = [x, w] if a == rank - 1 else [w, x]
        nodes.append(helper.make_node("MatMul", inputs, [y],
                                      name=rewrite.fresh(f"{n.name or 'Resize'}_axis{a}")))
        rewrite.producers[y] = nodes[-1]
        x = y
    return nodes or [helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name)]


def _measured(rewrite: Any, n: onnx.NodeProto, axis: int, size: int, target: int,
              scales: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """The (target, size) weights of `n` along `axis`, from one run on a basis (within the
    import folding cap: the basis holds size^2 elements, the result size * target)."""
    cap = min(MAX_IMPORT_FOLD_ELEMENTS, limit("elements"))
    if size * max(size, target) > cap:
        raise UnsupportedOpError(f"Resize node {n.name or n.output[0]!r}: measuring its weights "
                                 f"along axis {axis} ({size} -> {target}) would make "
                                 f"{size * max(size, target)} elements, over the import folding "
                                 f"limit of {cap}; give an opset-17 Resize")
    rank = len(rewrite.shapes[n.input[0]])
    basis_axis = 0 if axis else 1
    probe_shape = [1] * rank
    probe_shape[axis] = probe_shape[basis_axis] = size
    probe = np.zeros(probe_shape, dtype)
    index = [0] * rank
    for k in range(size):
        index[axis] = index[basis_axis] = k
        probe[tuple(index)] = 1
    inputs: list[Any] = [probe, None, None, None]
    if scales is not None:  # scale 1 on every axis but this one
        inputs[2] = np.ones(rank, np.float32)
        inputs[2][axis] = scales[axis]
    else:
        inputs[3] = np.array(probe_shape, np.int64)
        inputs[3][axis] = target
    copy = onnx.NodeProto()
    copy.CopyFrom(n)
    del copy.input[:]
    copy.input.extend(["x", "", "s" if scales is not None else "", "" if scales is not None
                       else "z"])
    result = evaluate(rewrite.model, copy, inputs).get(n.output[0])
    if result is None or result.shape[axis] != target:
        raise UnsupportedOpError(f"Resize node {n.name or n.output[0]!r}: its weights could not "
                                 "be measured at import; give an opset-17 Resize")
    moved = np.moveaxis(result, (basis_axis, axis), (0, 1)).reshape(size, target, -1)
    return moved[:, :, 0].T.astype(dtype)
