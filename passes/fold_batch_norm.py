"""FoldBatchNormPass: fold inference BatchNormalization into the Conv or Gemm before it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from irkit.passes.manager import NodeRewritePass

from irkit.ir import Graph, Node, Value
from irkit.ops.base import apply
from irkit.ops.registry import attr


def constant(v: Value | None, variables: set[str]) -> np.ndarray | None:
    """The data of `v` if it is an initializer that is not a parameter being trained."""
    if v is None or not v.is_initializer or v.name in variables:
        return None
    return np.asarray(v.const)


class FoldBatchNormPass(NodeRewritePass):
    """Fold `y = (x - mean) / sqrt(var + eps) * scale + B` into the op that made x. Cases:

    1. x = Conv(data, W[, b]) with W (and b) constants: W' = W * s per output channel and
       b' = (b - mean) * s + B, with s = scale / sqrt(var + eps);
    2. x = Gemm(A, W[, C]) with W (and C) constants, x of rank 2 (features on axis 1): the
       columns of op(W) scale by s, C' = (beta C - mean) * s + B, beta = 1;
    3. only inference BatchNormalization (training_mode 0, one output) with constant
       statistics, and only when the BatchNormalization is x's one reader; the arithmetic is
       done in float64 and stored in the weights' dtype.
    """

    op_type, sorts = "BatchNormalization", False  # folds into the producer, in place

    def __init__(self, variables: Iterable[str] = ()) -> None:
        self.variables = set(variables)

    def rewrite(self, graph: Graph, bn: Node) -> bool:
        x = bn.inputs[0]
        producer = x.producer
        if (attr(bn, "training_mode") or len(bn.outputs) != 1 or producer is None
                or producer.op_type not in ("Conv", "Gemm") or producer.domain != ""
                or len(x.uses) != 1 or x in graph.outputs):
            return False
        stats = [constant(v, self.variables) for v in bn.inputs[1:5]]
        weight = constant(producer.inputs[1], self.variables)
        bias_in = producer.inputs[2] if len(producer.inputs) > 2 else None
        bias = constant(bias_in, self.variables)
        if any(s is None for s in stats) or weight is None or (bias_in is not None
                                                               and bias is None):
            return False
        scale, shift, mean, var = (s.astype(np.float64) for s in stats)
        s = scale / np.sqrt(var + attr(bn, "epsilon"))
        channels = s.shape[0]
        if producer.op_type == "Conv":
            new_w = weight * s.reshape((channels,) + (1,) * (weight.ndim - 1))
            b = np.zeros(channels) if bias is None else bias.astype(np.float64)
            attrs = dict(producer.attributes)
        else:
            if x.rank != 2:
                return False
            new_w = weight * (s[:, None] if attr(producer, "transB") else s[None, :])
            beta = attr(producer, "beta")
            b = np.zeros(channels) if bias is None else beta * np.broadcast_to(
                bias.astype(np.float64), (channels,))
            attrs = dict(producer.attributes, beta=1.0)
        new_b = (b - mean) * s + shift
        return self._replace(graph, bn, producer, attrs, new_w.astype(weight.dtype),
                             new_b.astype(weight.dtype))

    @staticmethod
    def _replace(graph: Graph, bn: Node, producer: Node, attrs: dict, w: np.ndarray,
                 b: np.ndarray) -> bool:
        w_value = graph.add_initializer(graph.unique_name(f"{producer.inputs[1].name}_bn"), w)
        b_value = graph.add_initializer(graph.unique_name(f"{producer.name}_bias_bn"), b)
        out = bn.outputs[0]
        fused = apply(graph, producer.op_type, [producer.inputs[0], w_value, b_value], attrs,
                      name=producer.name)
        graph.replace_all_uses_with(out, fused.outputs[0])
        graph.remove_node(bn)
        graph.remove_node(producer)
        graph.rename_value(fused.outputs[0], out.name)  # free again: keeps interface names
        graph.toposort()
        return True
