"""LowerSmallConvsPass: 2-D convolutions with few output positions as one matrix product."""

from __future__ import annotations

import math

import numpy as np
from irkit.passes.manager import NodeRewritePass, replace_node

from irkit import ops
from irkit.ir import Graph, Node
from irkit.ops import conv_gemm


class LowerSmallConvsPass(NodeRewritePass):
    """Rewrite `Conv(x, W[, B])` as `conv_gemm.conv_as_gemm`: W (M, C * K) @ im2col(x), the
    batch among the columns, when

    1. the convolution is 2-D, float32 or float64, with group 1, static weight, input
       channels and output sizes,
       and has at most `conv_gemm.GEMM_POSITIONS` output positions per image;
    2. the same, depthwise (group = input channels = output channels): one batched MatMul by
       the channels' constant-placement matrices (`conv_gemm.depthwise_as_matmul`).

    The output keeps its name; other Convs are left as they are. onnxruntime's CPU Conv runs
    one product per image, with o1 * o2 columns: for a 64x64 ResNet-18's last stage (2x2) that
    is 3x slower than the one Gemm (conv_gemm's notes). In a train step the columns are the
    same nodes as the weight gradient's (conv_gemm.weight_grad), so once common
    subexpressions are merged they are computed once.
    """

    op_type = "Conv"

    @staticmethod
    def applies(node: Node) -> bool:
        """Whether `node` is a Conv this pass rewrites (cases 1 and 2)."""
        return node.op_type == "Conv" and node.domain == "" and _small(node)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        if not _small(node):
            return False
        x, w = node.inputs[:2]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        out = list(node.outputs[0].shape[2:])
        geo = ops.get_op("Conv").geometry(node)
        lower = conv_gemm.conv_as_gemm if ops.attr(node, "group") == 1 else \
            conv_gemm.depthwise_as_matmul
        with graph.name_scope(f"{node.name}/"):
            y = lower(x, w, b, geo, out)
        replace_node(graph, node, [y])
        return True


def _small(node: Node) -> bool:
    x, w = node.inputs[:2]
    y = node.outputs[0]
    if w.shape is None or len(w.shape) != 4 or x.shape is None or y.shape is None or \
            np.dtype(x.dtype) not in (np.float32, np.float64):  # MatMul kernels on every EP
        return False
    dims = (*w.shape, x.shape[1], *x.shape[2:], *y.shape[2:])
    group = ops.attr(node, "group")
    depthwise = group == w.shape[0] == x.shape[1] and w.shape[1] == 1
    return all(isinstance(d, int) for d in dims) and (group == 1 or depthwise) and \
        math.prod(y.shape[2:]) <= conv_gemm.GEMM_POSITIONS
