"""Loss ops: SoftmaxCrossEntropyLoss (opset 13 semantics)."""

from __future__ import annotations

import numpy as np

from irkit.errors import UnsupportedOpError
from irkit.ir import Node
from irkit.ops.base import OpDef, define
from irkit.ops.elementwise import Cast, Div, Exp, Mul, Sub
from irkit.ops.nn import LogSoftmax
from irkit.ops.shape import Gather, OneHot, Shape, Size, Unsqueeze, onnx_dtype


@define
class SoftmaxCrossEntropyLoss(OpDef):
    """loss = -log softmax(scores)[label], reduced by `reduction`; optional log_prob output."""

    op_type, since = "SoftmaxCrossEntropyLoss", 13
    attributes = {"reduction": "mean", "ignore_index": None}
    input_dtypes = {1: np.int64}

    def default_num_outputs(self, node: Node) -> int:
        return 1

    def infer(self, node: Node):
        scores, labels = node.inputs[:2]
        loss_shape = labels.shape if node.attr("reduction") == "none" else ()
        return [(scores.dtype, loss_shape), (scores.dtype, scores.shape)]

    def vjp(self, node: Node, grads):
        # d loss / d scores = (softmax - onehot(label)) scaled by the reduction
        scores, labels = node.inputs[:2]
        if len(node.inputs) > 2 or node.attr("ignore_index") is not None:
            raise UnsupportedOpError(f"SoftmaxCrossEntropyLoss node {node.name!r}: the gradient "
                                     "with weights or ignore_index is not supported yet")
        g = grads[0]
        logp = node.outputs[1] if len(node.outputs) > 1 else LogSoftmax(scores, axis=1)
        classes = scores.shape[1] if scores.shape is not None else None
        depth = node.graph.constant([classes], np.int64) if isinstance(classes, int) else Gather(
            Shape(scores), np.array([1], np.int64))
        off_on = node.graph.constant([0, 1], dtype=scores.dtype)
        onehot = OneHot(labels, depth, off_on, axis=1)
        diff = Sub(Exp(logp), onehot)
        reduction = node.attr("reduction")
        if reduction == "mean":
            scale = Div(g, Cast(Size(labels), to=onnx_dtype(scores.dtype)))
        elif reduction == "sum":
            scale = g
        else:
            scale = Unsqueeze(g, np.array([1], np.int64))
        return [Mul(diff, scale), None]

    def compute(self, node: Node, inputs):
        scores, labels = inputs[:2]
        weights = inputs[2] if len(inputs) > 2 else None
        x = scores - scores.max(axis=1, keepdims=True)
        logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        lab = labels.astype(np.int64)
        ignore = node.attr("ignore_index")
        valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        safe = np.where(valid, lab, 0)
        picked = np.take_along_axis(logp, np.expand_dims(safe, 1), axis=1).squeeze(1)
        w = np.where(valid, 1.0 if weights is None else weights[safe], 0.0).astype(scores.dtype)
        loss = -picked * w
        reduction = node.attr("reduction")
        if reduction == "mean":
            loss = loss.sum() / w.sum()
        elif reduction == "sum":
            loss = loss.sum()
        return [np.asarray(loss, dtype=scores.dtype), logp.astype(scores.dtype)]
