"""Neural-network ops: MatMul, Gemm, Softmax, LogSoftmax, Dropout, ArgMax."""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, broadcast_shapes, define, fmt_shape, normalize_axis
from irkit.ops.elementwise import Exp, Mul, Sub
from irkit.ops.reduce import ReduceSum
from irkit.ops.shape import Squeeze, Transpose, Unsqueeze


@define
class MatMul(OpDef):
    op_type, since = "MatMul", 13

    def infer(self, node: Node):
        a, b = node.inputs
        if a.shape is None or b.shape is None:
            return [(a.dtype, None)]
        sa = (1,) + a.shape if len(a.shape) == 1 else a.shape
        sb = b.shape + (1,) if len(b.shape) == 1 else b.shape
        k_a, k_b = sa[-1], sb[-2]
        if isinstance(k_a, int) and isinstance(k_b, int) and k_a != k_b:
            raise ShapeError(f"MatMul node {node.name!r}: shapes {fmt_shape(a.shape)} and "
                             f"{fmt_shape(b.shape)} do not multiply ({k_a} != {k_b})")
        batch = broadcast_shapes(sa[:-2], sb[:-2], op=f"MatMul {node.name!r}")
        shape = batch + (sa[-2],) * (len(a.shape) > 1) + (sb[-1],) * (len(b.shape) > 1)
        return [(a.dtype, shape)]

    def vjp(self, node: Node, grads):
        a, b = node.inputs
        g = grads[0]
        if a.rank == 2 and b.rank == 2:  # transpose flags instead of Transpose nodes
            return [Gemm(g, b, transB=1), Gemm(a, g, transA=1)]
        a2 = Unsqueeze(a, np.array([0], np.int64)) if a.rank == 1 else a
        b2 = Unsqueeze(b, np.array([-1], np.int64)) if b.rank == 1 else b
        g2 = Unsqueeze(g, np.array([-2], np.int64)) if a.rank == 1 else g
        g2 = Unsqueeze(g2, np.array([-1], np.int64)) if b.rank == 1 else g2
        da = MatMul(g2, _swap_last(b2))
        db = MatMul(_swap_last(a2), g2)
        da = Squeeze(da, np.array([-2], np.int64)) if a.rank == 1 else da
        db = Squeeze(db, np.array([-1], np.int64)) if b.rank == 1 else db
        return [da, db]

    def compute(self, node: Node, inputs):
        return [np.matmul(*inputs)]


def _swap_last(x: Value) -> Value:
    perm = list(range(x.rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return Transpose(x, perm=perm)


@define
class Gemm(OpDef):
    op_type, since = "Gemm", 13
    attributes = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}

    def infer(self, node: Node):
        a, b = node.inputs[:2]
        if a.shape is None or b.shape is None:
            return [(a.dtype, (None, None))]
        m, k = a.shape[::-1] if node.attr("transA") else a.shape
        k2, n = b.shape[::-1] if node.attr("transB") else b.shape
        if isinstance(k, int) and isinstance(k2, int) and k != k2:
            raise ShapeError(f"Gemm node {node.name!r}: A {fmt_shape(a.shape)} and B "
                             f"{fmt_shape(b.shape)} do not multiply ({k} != {k2}); check "
                             "transA/transB")
        return [(a.dtype, (m, n))]

    def vjp(self, node: Node, grads):
        # Y = alpha A' B' + beta C with A' = A or A^T, B' = B or B^T (see the flag table)
        a, b = node.inputs[:2]
        g, alpha = grads[0], node.attr("alpha")
        ta, tb = node.attr("transA"), node.attr("transB")
        da = Gemm(b, g, alpha=alpha, transA=tb, transB=1) if ta else \
            Gemm(g, b, alpha=alpha, transB=1 - tb)
        db = Gemm(g, a, alpha=alpha, transA=1, transB=ta) if tb else \
            Gemm(a, g, alpha=alpha, transA=1 - ta)
        out = [da, db]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            beta = node.attr("beta")
            out.append(g if beta == 1.0 else Mul(g, beta))
        return out

    def compute(self, node: Node, inputs):
        a, b = inputs[:2]
        a = a.T if node.attr("transA") else a
        b = b.T if node.attr("transB") else b
        y = node.attr("alpha") * (a @ b)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + node.attr("beta") * inputs[2]
        return [y]


class _SoftmaxBase(OpDef):
    since = 13
    attributes = {"axis": -1}

    def _axis(self, node: Node) -> int:
        return normalize_axis(node.attr("axis"), node.inputs[0].rank, self.op_type)

    def _axes_const(self, node: Node) -> Value:
        return node.graph.constant(np.array([self._axis(node)], dtype=np.int64))


@define
class Softmax(_SoftmaxBase):
    op_type = "Softmax"

    def vjp(self, node: Node, grads):
        # dx = y * (g - sum(g * y, axis))
        y, g = node.outputs[0], grads[0]
        s = ReduceSum(Mul(g, y), self._axes_const(node), keepdims=1)
        return [Mul(y, Sub(g, s))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        e = np.exp(x - x.max(axis=node.attr("axis"), keepdims=True))
        return [e / e.sum(axis=node.attr("axis"), keepdims=True)]


@define
class LogSoftmax(_SoftmaxBase):
    op_type = "LogSoftmax"

    def vjp(self, node: Node, grads):
        # dx = g - softmax(x) * sum(g, axis)
        y, g = node.outputs[0], grads[0]
        s = ReduceSum(g, self._axes_const(node), keepdims=1)
        return [Sub(g, Mul(Exp(y), s))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axis = node.attr("axis")
        m = x.max(axis=axis, keepdims=True)
        return [x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))]


@define
class Dropout(OpDef):
    """Dropout(data, ratio, training_mode) -> (output, mask). Inactive unless training_mode."""

    op_type, since = "Dropout", 13
    attributes = {"seed": None}

    def default_num_outputs(self, node: Node) -> int:
        return 1

    def infer(self, node: Node):
        x = node.inputs[0]
        return [(x.dtype, x.shape), (np.bool_, x.shape)]

    def vjp(self, node: Node, grads):
        from irkit.ops.elementwise import Cast, Div, Sub as SubOp
        from irkit.ops.shape import onnx_dtype
        g = grads[0]
        if len(node.outputs) < 2:
            if _training(node):
                raise ShapeError(f"Dropout node {node.name!r} in training mode needs its mask "
                                 "output for a gradient; build it with two outputs")
            return [g] + [None] * (len(node.inputs) - 1)
        ratio = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] is not None else 0.5
        mask = Cast(node.outputs[1], to=onnx_dtype(g.dtype))
        keep = SubOp(node.graph.constant(1.0, dtype=g.dtype), ratio) if isinstance(
            ratio, Value) else 1.0 - ratio
        return [Div(Mul(g, mask), keep)] + [None] * (len(node.inputs) - 1)

    def compute(self, node: Node, inputs):
        x = inputs[0]
        ratio = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0.5
        training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2])
        if not training or ratio == 0:
            return [x, np.ones(x.shape, dtype=bool)]
        rng = np.random.default_rng(node.attributes.get("seed"))
        mask = rng.random(x.shape) >= ratio
        return [(x * mask / (1 - ratio)).astype(x.dtype), mask]


def _training(node: Node) -> bool:
    from irkit.ops.base import const_array
    t = node.inputs[2] if len(node.inputs) > 2 else None
    data = const_array(t, "training_mode")
    return t is not None and (data is None or bool(data))


@define
class ArgMax(OpDef):
    op_type, since, differentiable = "ArgMax", 13, False
    attributes = {"axis": 0, "keepdims": 1, "select_last_index": 0}

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(np.int64, None)]
        axis = normalize_axis(node.attr("axis"), len(x.shape), "ArgMax")
        keep = node.attr("keepdims")
        return [(np.int64, tuple(1 if i == axis else d for i, d in enumerate(x.shape)
                                 if keep or i != axis))]

    def compute(self, node: Node, inputs):
        return [np.argmax(inputs[0], axis=node.attr("axis"),
                          keepdims=bool(node.attr("keepdims"))).astype(np.int64)]
