"""Neural-network ops: MatMul, Gemm, Einsum, Softmax, LogSoftmax, Dropout, ArgMax/ArgMin
(the normalizations are in irkit.ops.norm)."""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, Required, broadcast_shapes, define, fmt_shape, normalize_axis
from irkit.ops.elementwise import Exp, Mul, Sub
from irkit.ops.reduce import ReduceSum
from irkit.ops.registry import attr
from irkit.ops.shape import Reshape, Squeeze, Transpose, Unsqueeze

if TYPE_CHECKING:
    from irkit.ir import Shape


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
        if a.rank == 1 and b.rank == 1:  # a dot product: g is a scalar
            return [Mul(g, b), Mul(g, a)]
        if b.rank == 2 and a.rank > 2 and _static_last(a, g):  # x (..., K) @ W (K, N)
            return [MatMul(g, _swap_last(b)), _rows_gemm(a, g)]
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


def _static_last(*values: Value) -> bool:
    """Whether every value's last dim is a known int (a Reshape to (-1, dim) keeps it)."""
    return all(v.shape is not None and isinstance(v.shape[-1], int) for v in values)


def _rows_gemm(a: Value, g: Value) -> Value:
    """dW = sum over the batch of a^T @ g for y = a (..., K) @ W (K, N): one Gemm over the
    rows of a and g flattened, (K, rows) @ (rows, N), not a batched MatMul of (K, N)
    products and a ReduceSum over its batch axes (the same sums, in another order)."""
    rows_a = Reshape(a, np.array([-1, a.shape[-1]], np.int64))
    rows_g = Reshape(g, np.array([-1, g.shape[-1]], np.int64))
    return Gemm(rows_a, rows_g, transA=1)


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
        m, k = a.shape[::-1] if attr(node, "transA") else a.shape
        k2, n = b.shape[::-1] if attr(node, "transB") else b.shape
        if isinstance(k, int) and isinstance(k2, int) and k != k2:
            raise ShapeError(f"Gemm node {node.name!r}: A {fmt_shape(a.shape)} and B "
                             f"{fmt_shape(b.shape)} do not multiply ({k} != {k2}); check "
                             "transA/transB")
        return [(a.dtype, (m, n))]

    def vjp(self, node: Node, grads):
        # Y = alpha A' B' + beta C with A' = A or A^T, B' = B or B^T (see the flag table)
        a, b = node.inputs[:2]
        g, alpha = grads[0], attr(node, "alpha")
        ta, tb = attr(node, "transA"), attr(node, "transB")
        da = Gemm(b, g, alpha=alpha, transA=tb, transB=1) if ta else \
            Gemm(g, b, alpha=alpha, transB=1 - tb)
        db = Gemm(g, a, alpha=alpha, transA=1, transB=ta) if tb else \
            Gemm(a, g, alpha=alpha, transA=1 - ta)
        out = [da, db]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            beta = attr(node, "beta")
            out.append(g if beta == 1.0 else Mul(g, beta))
        return out

    def compute(self, node: Node, inputs):
        a, b = inputs[:2]
        a = a.T if attr(node, "transA") else a
        b = b.T if attr(node, "transB") else b
        y = attr(node, "alpha") * (a @ b)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + attr(node, "beta") * inputs[2]
        return [y]


# ---- Einsum -----------------------------------------------------------------------------------
_LETTERS = string.ascii_letters


@dataclass(frozen=True)
class EinsumSpec:
    """An Einsum equation in letters only: one term per input (an ellipsis expanded into fresh
    letters; a size-1 broadcast axis gets a letter of its own, summed away) and the output."""

    terms: tuple[str, ...]
    output: str

    @property
    def equation(self) -> str:
        return ",".join(self.terms) + "->" + self.output


def einsum_spec(equation: str, shapes: Sequence[Shape], where: str) -> EinsumSpec:
    """Parse an Einsum equation for inputs of these shapes (explicit or implicit output)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(f"{where}: equation {equation!r} has {len(terms)} operands for "
                         f"{len(shapes)} inputs")
    for t in [*terms, rhs]:
        if not set(t.replace("...", "", 1)) <= set(_LETTERS):
            raise ShapeError(f"{where}: equation {equation!r}: a term may hold letters and one "
                             "ellipsis only")
    free = iter(c for c in _LETTERS if c not in eq)
    expanded, ellipsis = _expand_ellipsis(terms, shapes, free, equation, where)
    if not arrow:  # implicit: the broadcast axes, then the letters used once, sorted
        letters = "".join(terms).replace(".", "")
        rhs = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    elif "..." in rhs:
        rhs = rhs.replace("...", ellipsis)
    if len(set(rhs)) != len(rhs) or not set(rhs) <= set("".join(expanded)):
        raise ShapeError(f"{where}: equation {equation!r}: each output letter must appear once "
                         "in the output and in some input")
    return EinsumSpec(tuple(expanded), rhs)


def _expand_ellipsis(terms: list[str], shapes: Sequence[Shape], free: Iterator[str],
                     equation: str, where: str) -> tuple[list[str], str]:
    """Terms with "..." replaced by letters (right-aligned, numpy broadcasting), and the
    letters of the broadcast axes."""
    widths = []
    for t, s in zip(terms, shapes, strict=True):
        letters = len(t.replace("...", ""))
        if "..." in t and s is None:
            raise ShapeError(f"{where}: equation {equation!r}: an ellipsis needs the rank of "
                             "its input")
        if s is not None and (len(s) < letters or ("..." not in t and len(s) != letters)):
            raise ShapeError(f"{where}: equation {equation!r}: term {t!r} does not fit an "
                             f"input of shape {fmt_shape(s)}")
        widths.append(len(s) - letters if "..." in t else 0)
    try:
        ellipsis = "".join(next(free) for _ in range(max(widths, default=0)))
        expanded = []
        for t, s, w in zip(terms, shapes, widths, strict=True):
            letters = list(ellipsis[len(ellipsis) - w:]) if w else []
            for i, letter in enumerate(letters):  # size 1 against a larger size: own letter
                dim = s[t.index("...") + i]
                if dim == 1 and _broadcast_size(terms, shapes, widths, ellipsis, letter) != 1:
                    letters[i] = next(free)
            expanded.append(t.replace("...", "".join(letters)))
    except StopIteration:
        raise ShapeError(f"{where}: equation {equation!r} needs more than 52 letters") from None
    return expanded, ellipsis


def _broadcast_size(terms, shapes, widths, ellipsis: str, letter: str):
    """The largest static size of a broadcast (ellipsis) axis over the inputs (1 if none)."""
    at = ellipsis.index(letter) - len(ellipsis)  # counted from the end of the ellipsis
    sizes = [s[t.index("...") + w + at] for t, s, w in zip(terms, shapes, widths, strict=True)
             if w >= -at]
    return max([d for d in sizes if isinstance(d, int)], default=1)


def _letter_sizes(spec: EinsumSpec, shapes: Sequence[Shape], where: str) -> dict:
    """letter -> its dim (an int where any input knows it; a symbol or None otherwise)."""
    sizes: dict = {}
    for term, shape in zip(spec.terms, shapes, strict=True):
        for letter, dim in zip(term, shape or (None,) * len(term), strict=True):
            known = sizes.get(letter)
            if isinstance(known, int) and isinstance(dim, int) and known != dim:
                raise ShapeError(f"{where}: letter {letter!r} is {known} in one input and "
                                 f"{dim} in another")
            if not isinstance(known, int) and dim is not None:
                sizes[letter] = dim
            sizes.setdefault(letter, None)
    return sizes


@define
class Einsum(OpDef):
    """Sum of products over an index equation (`"ij,jk->ik"`; implicit output, repeated
    letters and an ellipsis too). The gradient of each input is an Einsum of g and the other
    inputs onto that input's letters: a diagonal through an identity, an axis summed in the
    input alone through ones."""

    op_type, since = "Einsum", 12
    attributes = {"equation": Required(str)}

    def spec(self, node: Node) -> EinsumSpec:
        return einsum_spec(attr(node, "equation"), [v.shape for v in node.inputs],
                           f"Einsum node {node.name!r}")

    def infer(self, node: Node):
        spec = self.spec(node)
        if len({v.dtype for v in node.inputs}) > 1:
            raise ShapeError(f"Einsum node {node.name!r}: the inputs must have one dtype")
        sizes = _letter_sizes(spec, [v.shape for v in node.inputs], f"Einsum node {node.name!r}")
        return [(node.inputs[0].dtype, tuple(sizes[c] for c in spec.output))]

    def vjp(self, node: Node, grads):
        spec = self.spec(node)
        sizes = _letter_sizes(spec, [v.shape for v in node.inputs], f"Einsum node {node.name!r}")
        used = set(spec.equation)
        free = iter(c for c in _LETTERS if c not in used)
        return [self._input_grad(node, spec, sizes, k, grads[0], free)
                if x.dtype.kind == "f" else None for k, x in enumerate(node.inputs)]

    @staticmethod
    def _input_grad(node: Node, spec: EinsumSpec, sizes: dict, k: int, g: Value,
                    free: Iterator[str]) -> Value:
        x = node.inputs[k]
        operands = [g] + [v for j, v in enumerate(node.inputs) if j != k]
        subs = [spec.output] + [t for j, t in enumerate(spec.terms) if j != k]
        target = ""
        for letter in spec.terms[k]:
            if letter not in target:
                target += letter
                continue
            # a repeated letter reads a diagonal: g goes back onto it through an identity
            n, fresh = sizes[letter], next(free, None)
            if not isinstance(n, int) or fresh is None:
                raise ShapeError(f"Einsum node {node.name!r}: the gradient of a repeated "
                                 f"letter {letter!r} needs its static size")
            operands.append(node.graph.constant(np.eye(n, dtype=x.dtype)))
            subs.append(letter + fresh)
            target += fresh
        reached = set("".join(subs))
        for pos, letter in enumerate(target):
            if letter not in reached:  # summed in x alone: d x is constant along it
                operands.append(_ones_along(x, pos))
                subs.append(letter)
        return Einsum(*operands, equation=",".join(subs) + "->" + target)

    def compute(self, node: Node, inputs):
        spec = einsum_spec(attr(node, "equation"), [a.shape for a in inputs],
                           f"Einsum node {node.name!r}")
        dtype = inputs[0].dtype
        if dtype.kind == "f" and dtype.itemsize < 4 or dtype.kind == "V":  # numpy lacks them
            inputs = [a.astype(np.float32) for a in inputs]
        return [np.asarray(np.einsum(spec.equation, *inputs)).astype(dtype)]


def _ones_along(x: Value, axis: int) -> Value:
    """A vector of ones as long as x's axis (a constant when the size is static)."""
    from irkit.ops.shape import ConstantOfShape, Shape

    dim = x.shape[axis] if x.shape is not None else None
    if isinstance(dim, int):
        return x.graph.constant(np.ones(dim, x.dtype))
    return ConstantOfShape(Shape(x, start=axis, end=axis + 1), value=np.ones(1, x.dtype))


class _SoftmaxBase(OpDef):
    since = 13
    attributes = {"axis": -1}

    def _axis(self, node: Node) -> int:
        return normalize_axis(attr(node, "axis"), node.inputs[0].rank, self.op_type)

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
        e = np.exp(x - x.max(axis=attr(node, "axis"), keepdims=True))
        return [e / e.sum(axis=attr(node, "axis"), keepdims=True)]


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
        axis = attr(node, "axis")
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
        from irkit.ops.elementwise import Cast, Div
        from irkit.ops.elementwise import Sub as SubOp
        from irkit.ops.shape import onnx_dtype, zeros_like
        g, rest = grads[0], [None] * (len(node.inputs) - 1)
        if not _training(node):  # inactive: output = data, whatever the ratio
            if len(node.inputs) > 1 and node.inputs[1] is not None:
                rest[0] = zeros_like(node.inputs[1])
            return [g] + rest
        if len(node.outputs) < 2:
            raise ShapeError(f"Dropout node {node.name!r} in training mode needs its mask "
                             "output for a gradient; build it with two outputs")
        # training: the mask is drawn with the ratio, so the ratio has no gradient (None)
        ratio = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] is not None else 0.5
        mask = Cast(node.outputs[1], to=onnx_dtype(g.dtype))
        keep = SubOp(node.graph.constant(1.0, dtype=g.dtype), ratio) if isinstance(
            ratio, Value) else 1.0 - ratio
        return [Div(Mul(g, mask), keep)] + rest

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


class _ArgExtremum(OpDef):
    """ArgMax and ArgMin: int64 indices along `axis` (the last of ties with
    select_last_index); piecewise constant, so no gradient."""

    since, differentiable = 13, False
    attributes = {"axis": 0, "keepdims": 1, "select_last_index": 0}
    np_fn = staticmethod(np.argmax)

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(np.int64, None)]
        axis = normalize_axis(attr(node, "axis"), len(x.shape), self.op_type)
        keep = attr(node, "keepdims")
        return [(np.int64, tuple(1 if i == axis else d for i, d in enumerate(x.shape)
                                 if keep or i != axis))]

    def compute(self, node: Node, inputs):
        x, axis = inputs[0], attr(node, "axis") % inputs[0].ndim
        keep = bool(attr(node, "keepdims"))
        if attr(node, "select_last_index"):  # the last of tied values: search the flipped axis
            found = self.np_fn(np.flip(x, axis), axis=axis, keepdims=keep)
            return [(x.shape[axis] - 1 - found).astype(np.int64)]
        return [self.np_fn(x, axis=axis, keepdims=keep).astype(np.int64)]


@define
class ArgMax(_ArgExtremum):
    op_type = "ArgMax"


@define
class ArgMin(_ArgExtremum):
    op_type = "ArgMin"
    np_fn = staticmethod(np.argmin)
