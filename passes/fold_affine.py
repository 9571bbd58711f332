"""FoldAffinePass: a per-feature scale or shift before a Gemm moves into its weights."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from irkit.passes.fold_batch_norm import constant
from irkit.passes.manager import NodeRewritePass

from irkit.ir import Graph, Node
from irkit.ops.registry import attr


class FoldAffinePass(NodeRewritePass):
    """Fold `x * s` and `x + c` / `x - c` into the Gemm that reads them. Cases handled:

    1. Gemm(Mul(x, s), W, C), s a constant of shape (), (K,) or (1, K) (one factor per
       input feature): the rows of op(W) scale by s;
    2. Gemm(Add(x, c), W, C) or Gemm(Sub(x, c), W, C), c constant shaped like s:
       C' = alpha * c @ op(W) + beta * C (beta becomes 1; a missing C is zero);
    3. only for transA = 0, rank-2 x, constant W (and C), the elementwise node's output read
       by this Gemm alone; the arithmetic is done in float64 and stored in W's dtype.
    """

    op_type = "Gemm"

    def __init__(self, variables: Iterable[str] = ()) -> None:
        self.variables = set(variables)

    def rewrite(self, graph: Graph, gemm: Node) -> bool:
        a = gemm.inputs[0]
        pre = a.producer
        if (pre is None or pre.op_type not in ("Mul", "Add", "Sub") or pre.domain != ""
                or attr(gemm, "transA") or len(a.uses) != 1 or a in graph.outputs):
            return False
        x, factor = pre.inputs
        if pre.op_type != "Sub" and constant(x, self.variables) is not None:
            x, factor = factor, x  # Mul and Add commute
        k = constant(factor, self.variables)
        w = constant(gemm.inputs[1], self.variables)
        c_in = gemm.inputs[2] if len(gemm.inputs) > 2 else None
        c = constant(c_in, self.variables)
        if (k is None or w is None or (c_in is not None and c is None) or x.rank != 2
                or k.ndim > 2 or (k.ndim == 2 and k.shape[0] != 1)):
            return False
        op_w = (w.T if attr(gemm, "transB") else w).astype(np.float64)
        features, units = op_w.shape
        k = np.broadcast_to(k.astype(np.float64).reshape(-1), (features,))
        alpha, beta = attr(gemm, "alpha"), attr(gemm, "beta")
        bias = np.zeros(units) if c is None else beta * np.broadcast_to(
            c.astype(np.float64), np.broadcast_shapes(c.shape, (units,)))
        if pre.op_type == "Mul":
            op_w = op_w * k[:, None]
        else:
            bias = bias + alpha * ((k if pre.op_type == "Add" else -k) @ op_w)
        new_w = (op_w.T if attr(gemm, "transB") else op_w).astype(w.dtype)
        w_value = graph.add_initializer(graph.unique_name(f"{gemm.inputs[1].name}_folded"), new_w)
        c_value = graph.add_initializer(graph.unique_name(f"{gemm.name}_bias_folded"),
                                        bias.astype(w.dtype))
        graph.set_input(gemm, 0, x)
        graph.set_input(gemm, 1, w_value)
        if c_in is None:
            gemm.inputs.append(None)
        graph.set_input(gemm, 2, c_value)
        gemm.attributes["beta"] = 1.0
        if not a.uses and a not in graph.outputs:
            graph.remove_node(pre)
        return True
