"""Loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 13 semantics).

Both take inputs (N, C) or (N, C, d1, ...), labels (N) or (N, d1, ...), optional class weights
(C), `ignore_index` and `reduction` (none, sum, mean: the sum over the weights of the
samples that count). Their VJPs share one rule, so weights and ignore_index have gradients.
"""

from __future__ import annotations

import numpy as np

from irkit.ir import Node, Value
from irkit.ops.base import OpDef, define
from irkit.ops.elementwise import Add, Cast, Div, Equal, Exp, Mul, Neg, Not, Sub, Where
from irkit.ops.index import Gather
from irkit.ops.nn import LogSoftmax
from irkit.ops.reduce import ReduceSum
from irkit.ops.registry import attr
from irkit.ops.shape import OneHot, Shape, Size, Unsqueeze, onnx_dtype


class _ClassLoss(OpDef):
    since = 13
    attributes = {"reduction": "mean", "ignore_index": None}
    input_dtypes = {1: np.int64}

    def default_num_outputs(self, node: Node) -> int:
        return 1

    def infer(self, node: Node):
        scores, labels = node.inputs[:2]
        loss_shape = labels.shape if attr(node, "reduction") == "none" else ()
        return [(scores.dtype, loss_shape), (scores.dtype, scores.shape)]

    def nll_vjp(self, node: Node, logp: Value, g: Value) -> tuple[Value, Value | None]:
        """Gradients of the loss (cotangent g) for log-probabilities logp and the weights."""
        labels = node.inputs[1]
        weight = node.inputs[2] if len(node.inputs) > 2 else None
        to, ignore = onnx_dtype(logp.dtype), attr(node, "ignore_index")
        graph = node.graph
        valid = None if ignore is None else Not(Equal(labels, graph.constant(ignore, np.int64)))
        safe = labels if valid is None else Where(valid, labels, graph.constant(0, np.int64))
        # OneHot in int64, then Cast: onnxruntime has no OneHot kernel with float64 values
        off_on = graph.constant([0, 1], np.int64)
        onehot = Cast(OneHot(safe, _depth(logp), off_on, axis=1), to=to)
        coeff = None if weight is None else Gather(weight, safe)  # per-sample weight
        if valid is not None:
            coeff = Cast(valid, to=to) if coeff is None else Where(valid, coeff, 0.0)
        reduction = attr(node, "reduction")
        scale = g  # d loss / d loss_n; per sample for 'none', else a scalar
        if reduction == "mean":
            total = Cast(Size(labels), to=to) if coeff is None else ReduceSum(coeff, keepdims=0)
            scale = Div(g, total)
        per_sample = scale if coeff is None else Mul(scale, coeff)
        d_logp = Neg(Mul(onehot, _per_class(per_sample)))
        if weight is None:
            return d_logp, None
        # loss_n = -w[label_n] logp[n, label_n] (over the total weight, for 'mean')
        picked = ReduceSum(Mul(logp, onehot), np.array([1], np.int64), keepdims=0)
        h = Mul(scale, Neg(Add(picked, node.outputs[0]) if reduction == "mean" else picked))
        if valid is not None:
            h = Mul(h, Cast(valid, to=to))
        others = np.array([a for a in range(logp.rank) if a != 1], np.int64)
        return d_logp, ReduceSum(Mul(onehot, _per_class(h)), others, keepdims=0)

    def compute(self, node: Node, inputs):
        logp, labels = inputs[:2]
        weights = inputs[2] if len(inputs) > 2 else None
        lab = labels.astype(np.int64)
        ignore = attr(node, "ignore_index")
        valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        safe = np.where(valid, lab, 0)
        picked = np.take_along_axis(logp, np.expand_dims(safe, 1), axis=1).squeeze(1)
        w = np.where(valid, 1.0 if weights is None else weights[safe], 0.0).astype(logp.dtype)
        loss = -picked * w
        reduction = attr(node, "reduction")
        if reduction == "mean":
            loss = loss.sum() / w.sum()
        elif reduction == "sum":
            loss = loss.sum()
        return [np.asarray(loss, dtype=logp.dtype)]


def _depth(logp: Value) -> Value:
    classes = logp.shape[1] if logp.shape is not None else None
    if isinstance(classes, int):
        return logp.graph.constant([classes], np.int64)
    return Gather(Shape(logp), np.array([1], np.int64))


def _plain_softmax_ce_grad(node: Node, logp: Value, g: Value) -> Value:
    """d scores = (softmax - onehot(labels)) * g (over the label count for 'mean').

    The general rule's log-softmax chain, folded (each one-hot row sums to 1): the train step's
    usual case in the fewest nodes. No class weights, log_prob unused; with ignore_index the
    ignored samples' rows are scaled by 0 (4 kernels over the scores instead of the general
    rule's 8: GPT-2's per-token loss over (16, 1000, 128)).
    """
    labels, to, graph = node.inputs[1], onnx_dtype(logp.dtype), node.graph
    ignore = attr(node, "ignore_index")
    valid = None if ignore is None else Not(Equal(labels, graph.constant(ignore, np.int64)))
    if valid is not None:
        labels = Where(valid, labels, graph.constant(0, np.int64))
    if logp.dtype == np.float32:  # onnxruntime's OneHot writes float32, not float64
        onehot = OneHot(labels, _depth(logp), graph.constant([0, 1], np.float32), axis=1)
    else:
        onehot = Cast(OneHot(labels, _depth(logp), graph.constant([0, 1], np.int64),
                             axis=1), to=to)
    diff = Sub(Exp(logp), onehot)
    if valid is not None:  # d loss_n = g (over the valid count for 'mean') where n counts
        mask = Cast(valid, to=to)
        scale = Div(g, ReduceSum(mask, keepdims=0)) if attr(node, "reduction") == "mean" else g
        return Mul(diff, _per_class(Mul(scale, mask)))
    if attr(node, "reduction") != "mean":
        return Mul(diff, _per_class(g))
    count = Cast(Size(labels), to=to)
    if g.const is not None and g.const.size == 1 and g.const.item() == 1:  # the train step's
        return Div(diff, count)                                             # seed: one node less
    return Mul(diff, Div(g, count))


def _per_class(v: Value) -> Value:
    """A per-sample value (N, d...) lined up with (N, C, d...); scalars broadcast as they are."""
    return v if v.rank == 0 else Unsqueeze(v, np.array([1], np.int64))


def _is_zero(v: Value) -> bool:
    """A zero constant, or a zero of dynamic shape (ops.shape.zeros_like's ConstantOfShape)."""
    p = v.producer
    if p is not None and p.op_type == "ConstantOfShape":
        fill = p.attributes.get("value")
        return fill is None or not np.any(fill)
    return v.const is not None and not np.any(v.const)


@define
class NegativeLogLikelihoodLoss(_ClassLoss):
    """loss = -input[label] (times the class weight), reduced by `reduction`."""

    op_type = "NegativeLogLikelihoodLoss"

    def vjp(self, node: Node, grads):
        d_input, d_weight = self.nll_vjp(node, node.inputs[0], grads[0])
        return [d_input, None] + ([d_weight] if len(node.inputs) > 2 else [])


@define
class SoftmaxCrossEntropyLoss(_ClassLoss):
    """loss = -log softmax(scores)[label], reduced by `reduction`; optional log_prob output."""

    op_type = "SoftmaxCrossEntropyLoss"

    def vjp(self, node: Node, grads):
        scores = node.inputs[0]
        logp = node.outputs[1] if len(node.outputs) > 1 else LogSoftmax(scores, axis=1)
        log_prob_used = len(grads) > 1 and grads[1] is not None and not _is_zero(grads[1])
        if not log_prob_used and len(node.inputs) < 3:
            return [_plain_softmax_ce_grad(node, logp, grads[0]), None]
        d_logp, d_weight = self.nll_vjp(node, logp, grads[0])
        if log_prob_used:
            d_logp = Add(d_logp, grads[1])  # the log_prob output is used too
        # through log_softmax: d scores = d_logp - softmax * sum_classes(d_logp)
        total = ReduceSum(d_logp, np.array([1], np.int64), keepdims=1)
        d_scores = Sub(d_logp, Mul(Exp(logp), total))
        return [d_scores, None] + ([d_weight] if len(node.inputs) > 2 else [])

    def compute(self, node: Node, inputs):
        scores = inputs[0]
        x = scores - scores.max(axis=1, keepdims=True)
        logp = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(scores.dtype)
        return super().compute(node, [logp, *inputs[1:]]) + [logp]
