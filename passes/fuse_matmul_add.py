"""FuseMatMulAddPass: MatMul followed by a bias Add becomes one Gemm."""

from __future__ import annotations

from irkit.passes.manager import NodeRewritePass

from irkit.ir import Graph, Node
from irkit.ops.base import apply


class FuseMatMulAddPass(NodeRewritePass):
    """Rewrite `Add(MatMul(A, B), C)` as `Gemm(A, B, C)`. Cases handled:

    1. A and B of rank 2 (Gemm's domain), C of shape (N,), (1, N) or (M, N) / scalar, i.e.
       unidirectionally broadcastable to the (M, N) product, either side of the Add;
    2. only when the Add is the MatMul's one reader and the MatMul's output is no graph
       output; the Add's output name is kept;
    3. floating-point only (onnxruntime's CPU Gemm has no integer kernels).
    """

    op_type = "Add"

    def rewrite(self, graph: Graph, add: Node) -> bool:
        for side in (0, 1):
            product, bias = add.inputs[side], add.inputs[1 - side]
            mm = product.producer
            if (mm is None or mm.op_type != "MatMul" or mm.domain != "" or len(product.uses) != 1
                    or product in graph.outputs):
                continue
            a, b = mm.inputs
            out = add.outputs[0]
            if a.rank != 2 or b.rank != 2 or bias.shape is None or len(bias.shape) > 2:
                continue
            if (out.shape is None or len(out.shape) != 2 or out.dtype != bias.dtype
                    or out.dtype.kind != "f"):  # onnxruntime's CPU Gemm: floats only
                continue
            if tuple(bias.shape[-2:]) not in _broadcastable(out.shape):
                continue
            gemm = apply(graph, "Gemm", [a, b, bias], {}, name=mm.name)
            name = out.name
            graph.replace_all_uses_with(out, gemm.outputs[0])
            graph.remove_node(add)
            graph.remove_node(mm)
            graph.rename_value(gemm.outputs[0], name)
            return True
        return False


def _broadcastable(shape: tuple) -> set[tuple]:
    m, n = shape
    return {(), (1,), (n,), (1, n), (m, 1), (m, n), (1, 1)}
