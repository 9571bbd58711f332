"""Shape ops: Reshape, Flatten, Transpose, Squeeze/Unsqueeze, Expand, Concat, Split, Slice, Pad,
Tile, Shape, Size, Constant, ConstantOfShape, OneHot (Gather and the
scatters are in irkit.ops.index)."""

from __future__ import annotations

import math

import numpy as np

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Node, Value
from irkit.ops.base import OpDef, Required, const_array, define, normalize_axis
from irkit.ops.dtypes import onnx_dtype  # noqa: F401  (also offered here)
from irkit.ops.registry import attr, get_op


def _const_ints(node: Node, index: int, what: str) -> list[int] | None:
    v = node.inputs[index] if len(node.inputs) > index else None
    data = const_array(v, what)
    return None if data is None else [int(a) for a in np.ravel(data)]


def _shape_of_shape_op(v) -> tuple | None:
    """The dims a `Shape(x)` output holds (symbolic ones too), when x's rank is known."""
    p = v.producer if v is not None else None
    if p is None or p.op_type != "Shape" or p.inputs[0].shape is None:
        return None
    dims = p.inputs[0].shape
    return tuple(dims[slice(attr(p, "start"), attr(p, "end"))])


def _one_symbol(shape, rest: int | None):
    """The -1 of a Reshape whose input has one symbolic dim and as many other elements as the
    target's known dims (('N', 64) to (-1, 1, 8, 8) keeps 'N'); else unknown (None)."""
    if shape is None or not rest:
        return None
    symbols = [d for d in shape if not isinstance(d, int)]
    if len(symbols) != 1 or not isinstance(symbols[0], str):
        return None
    return symbols[0] if math.prod(d for d in shape if isinstance(d, int)) == rest else None


def _rest_of(shape, known: list):
    """The -1 of a Reshape of `shape` to the `known` dims and -1: symbols on both sides cancel
    (a batch copied by a 0), then the elements left over the known static ones, or the one
    symbol left (`_one_symbol`); else unknown (None)."""
    if shape is None or None in known:
        return None
    left, static = list(shape), []
    for d in known:
        if isinstance(d, int):
            static.append(d)
        elif d in left:
            left.remove(d)
        else:
            return None
    total, rest = _static_size(tuple(left)), _static_size(tuple(static))
    return total // rest if total is not None and rest else _one_symbol(tuple(left), rest)


def _flat_dim(dims) -> int | str | None:
    """The size of `dims` flattened into one: their product, or the one symbol among 1s
    (('N', 1) keeps 'N'); else unknown (None)."""
    size = _static_size(tuple(dims))
    return size if size is not None else _one_symbol(tuple(dims), 1)


@define
class Reshape(OpDef):
    op_type, since = "Reshape", 14
    attributes = {"allowzero": 0}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x = node.inputs[0]
        target = _const_ints(node, 1, "shape")
        if target is None:
            copied = _shape_of_shape_op(node.inputs[1])
            if copied is not None:
                return [(x.dtype, copied)]
            n = node.inputs[1].shape
            return [(x.dtype, None if n is None or n[0] is None else (None,) * int(n[0]))]
        if target.count(-1) > 1 or any(t < -1 for t in target):
            raise ShapeError(f"Reshape node {node.name!r}: target shape {target} may hold "
                             "one -1 and no other negative dims")
        dims = [x.shape[i] if t == 0 and x.shape is not None and i < len(x.shape)
                and not attr(node, "allowzero") else (None if t == 0 else t)
                for i, t in enumerate(target)]
        total, size = _static_size(x.shape), _static_size(tuple(dims))
        if total is not None and size is not None and -1 not in dims and size != total:
            raise ShapeError(f"Reshape node {node.name!r}: cannot reshape {total} elements "
                             f"{tuple(x.shape)} to {tuple(dims)}")
        if -1 in dims:
            dims[dims.index(-1)] = _rest_of(x.shape, [d for d in dims if d != -1])
        return [(x.dtype, tuple(dims))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], shape_of(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x, shape = inputs
        shape = [x.shape[i] if s == 0 and not attr(node, "allowzero") else s
                 for i, s in enumerate(shape.tolist())]
        return [x.reshape(shape)]


def _static_size(shape) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape)) if shape else 1


@define
class Flatten(OpDef):
    op_type, since = "Flatten", 13
    attributes = {"axis": 1}

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, (None, None))]
        axis = self.axis(node, len(x.shape))
        return [(x.dtype, (_flat_dim(x.shape[:axis]), _flat_dim(x.shape[axis:])))]

    @staticmethod
    def axis(node: Node, rank: int) -> int:
        """The axis in [0, rank]; ONNX accepts [-rank, rank], negative counting from the back."""
        axis = attr(node, "axis")
        if not -rank <= axis <= rank:
            raise ShapeError(f"Flatten node {node.name!r}: axis {axis} is out of range for "
                             f"rank {rank}; use -{rank}..{rank}")
        return axis + rank if axis < 0 else axis

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], shape_of(node.inputs[0]))]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axis = self.axis(node, x.ndim)
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@define
class Transpose(OpDef):
    op_type, since = "Transpose", 13
    attributes = {"perm": None}

    def perm(self, node: Node, rank: int) -> list[int]:
        perm = node.attributes.get("perm")
        return list(perm) if perm is not None else list(range(rank))[::-1]

    def infer(self, node: Node):
        x = node.inputs[0]
        if x.shape is None:
            return [(x.dtype, None)]
        return [(x.dtype, tuple(x.shape[p] for p in self.perm(node, len(x.shape))))]

    def vjp(self, node: Node, grads):
        perm = self.perm(node, node.inputs[0].rank)
        return [Transpose(grads[0], perm=[int(i) for i in np.argsort(perm)])]

    def compute(self, node: Node, inputs):
        return [np.transpose(inputs[0], self.perm(node, inputs[0].ndim))]


@define
class Shape(OpDef):
    op_type, since, differentiable = "Shape", 15, False
    attributes = {"start": 0, "end": None}

    def infer(self, node: Node):
        rank = node.inputs[0].rank
        return [(np.int64, (None if rank is None else len(self._span(node, rank)),))]

    def _span(self, node: Node, rank: int) -> range:
        start, end = attr(node, "start"), attr(node, "end")
        return range(rank)[slice(start, end)]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        return [np.array([x.shape[i] for i in self._span(node, x.ndim)], dtype=np.int64)]


@define
class Size(OpDef):
    op_type, since, differentiable = "Size", 13, False

    def infer(self, node: Node):
        return [(np.int64, ())]

    def compute(self, node: Node, inputs):
        return [np.array(inputs[0].size, dtype=np.int64)]


@define
class Unsqueeze(OpDef):
    op_type, since = "Unsqueeze", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, axes = node.inputs[0], _const_ints(node, 1, "axes")
        if x.shape is None or axes is None:
            return [(x.dtype, None)]
        rank = len(x.shape) + len(axes)
        axes = sorted(normalize_axis(a, rank, "Unsqueeze") for a in axes)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"Unsqueeze node {node.name!r}: axes {axes} repeat an axis")
        dims = iter(x.shape)
        return [(x.dtype, tuple(1 if i in axes else next(dims) for i in range(rank)))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], shape_of(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x, axes = inputs
        rank = x.ndim + len(axes)
        return [np.expand_dims(x, tuple(sorted(int(a) % rank for a in axes)))]


@define
class Squeeze(OpDef):
    op_type, since = "Squeeze", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, axes = node.inputs[0], _const_ints(node, 1, "axes")
        if x.shape is None:
            return [(x.dtype, None)]
        if axes is None:
            if len(node.inputs) > 1:
                return [(x.dtype, None)]
            return [(x.dtype, tuple(d for d in x.shape if d != 1))]
        axes = {normalize_axis(a, len(x.shape), "Squeeze") for a in axes}
        return [(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]

    def vjp(self, node: Node, grads):
        return [Reshape(grads[0], shape_of(node.inputs[0])), None]

    def compute(self, node: Node, inputs):
        x = inputs[0]
        axes = None if len(inputs) < 2 or inputs[1] is None else tuple(
            int(a) % x.ndim for a in inputs[1])
        return [np.squeeze(x, axis=axes)]


@define
class Expand(OpDef):
    op_type, since = "Expand", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        from irkit.ops.base import broadcast_shapes
        x, target = node.inputs[0], _const_ints(node, 1, "shape")
        target = target if target is not None else _shape_of_shape_op(node.inputs[1])
        if target is None:
            n = node.inputs[1].shape
            if x.shape is None or n is None or n[0] is None:
                return [(x.dtype, None)]
            return [(x.dtype, broadcast_shapes(x.shape, (None,) * int(n[0]), op="Expand"))]
        return [(x.dtype, broadcast_shapes(x.shape, tuple(target), op=f"Expand {node.name!r}"))]

    def vjp(self, node: Node, grads):
        return [grads[0], None]  # autodiff sums the broadcast axes back (un-broadcast)

    def compute(self, node: Node, inputs):
        x, shape = inputs
        return [x * np.ones(shape.astype(np.int64), dtype=x.dtype)]


@define
class Concat(OpDef):
    op_type, since = "Concat", 13
    attributes = {"axis": Required(int)}

    def infer(self, node: Node):
        xs = node.inputs
        if any(x.shape is None for x in xs):
            return [(xs[0].dtype, None)]
        axis = normalize_axis(attr(node, "axis"), len(xs[0].shape), "Concat")
        dims = [x.shape[axis] for x in xs]
        total = sum(dims) if all(isinstance(d, int) for d in dims) else None
        shape = list(xs[0].shape)
        shape[axis] = total
        return [(xs[0].dtype, tuple(shape))]

    def vjp(self, node: Node, grads):
        # the gradient is cut back into the inputs' pieces: Split, whose VJP is Concat again
        xs = node.inputs
        axis = normalize_axis(attr(node, "axis"), xs[0].rank, "Concat")
        dims = [x.shape[axis] if x.shape is not None else None for x in xs]
        sizes = node.graph.constant(np.array(dims, np.int64)) if all(
            isinstance(d, int) for d in dims) else Concat(
            *[Shape(x, start=axis, end=axis + 1 or None) for x in xs], axis=0)
        parts = Split(grads[0], sizes, axis=axis, _num_outputs=len(xs))
        return list(parts) if len(xs) > 1 else [parts]

    def compute(self, node: Node, inputs):
        return [np.concatenate(inputs, axis=attr(node, "axis"))]


@define
class Split(OpDef):
    """Split along `axis` into the sizes of the `split` input, or into equal parts."""

    op_type, since = "Split", 13
    attributes = {"axis": 0}
    input_dtypes = {1: np.int64}

    def default_num_outputs(self, node: Node) -> int:
        sizes = _const_ints(node, 1, "split")
        if sizes is None:
            raise ShapeError(f"Split node {node.name!r}: give the split sizes as a constant, or "
                             "the number of outputs (_num_outputs=n)")
        return len(sizes)

    def infer(self, node: Node):
        x, n = node.inputs[0], len(node.outputs) or self.default_num_outputs(node)
        if x.shape is None:
            return [(x.dtype, None)] * n
        axis = normalize_axis(attr(node, "axis"), len(x.shape), "Split")
        dim, sizes = x.shape[axis], _const_ints(node, 1, "split")
        if sizes is None:  # equal parts without a split input; unknown with a computed one
            equal = len(node.inputs) < 2 or node.inputs[1] is None
            sizes = [dim // n if equal and isinstance(dim, int) else None] * n
        return [(x.dtype, x.shape[:axis] + (d,) + x.shape[axis + 1:]) for d in sizes]

    def vjp(self, node: Node, grads):
        return [Concat(*grads, axis=attr(node, "axis")), None]

    def compute(self, node: Node, inputs):
        x, axis = inputs[0], attr(node, "axis")
        n = len(node.outputs)
        sizes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else \
            [x.shape[axis] // n] * n
        return np.split(x, np.cumsum(sizes)[:-1].astype(np.int64), axis=axis)


@define
class Slice(OpDef):
    op_type, since = "Slice", 13
    input_dtypes = {1: np.int64, 2: np.int64, 3: np.int64, 4: np.int64}

    def spec(self, node: Node) -> list[tuple[int, int | None, slice]] | None:
        """(axis, its size, python slice) per sliced axis; None unless all are constant."""
        x = node.inputs[0]
        starts, ends = _const_ints(node, 1, "starts"), _const_ints(node, 2, "ends")
        given = [node.inputs[i] if len(node.inputs) > i else None for i in (3, 4)]
        axes, steps = _const_ints(node, 3, "axes"), _const_ints(node, 4, "steps")
        if starts is None or ends is None or x.rank is None or \
                (given[0] is not None and axes is None) or (given[1] is not None and steps is None):
            return None
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        return [(normalize_axis(a, x.rank, "Slice"), x.shape[normalize_axis(a, x.rank)],
                 slice(s, e, st)) for a, s, e, st in zip(axes, starts, ends, steps, strict=False)]

    def infer(self, node: Node):
        x, spec = node.inputs[0], self.spec(node)
        if x.shape is None:
            return [(x.dtype, None)]
        if spec is None:  # computed bounds: only the sliced axes lose their size
            return [(x.dtype, self._unknown_on_sliced_axes(node))]
        dims = list(x.shape)
        for axis, dim, sl in spec:
            dims[axis] = len(range(dim)[sl]) if isinstance(dim, int) else None
        return [(x.dtype, tuple(dims))]

    @staticmethod
    def _unknown_on_sliced_axes(node: Node) -> tuple:
        x = node.inputs[0]
        axes = _const_ints(node, 3, "axes")
        given = len(node.inputs) > 3 and node.inputs[3] is not None
        count = node.inputs[1].shape[0] if node.inputs[1].shape else None
        if given and axes is None or not given and not isinstance(count, int):
            return (None,) * len(x.shape)
        sliced = {normalize_axis(a, x.rank, "Slice") for a in (axes or range(count))}
        return tuple(None if i in sliced else d for i, d in enumerate(x.shape))

    def vjp(self, node: Node, grads):
        # put g back where the slice came from: a Pad for unit steps; for other steps a Gather
        # from g with one zero appended, whose index is the slice's inverse (n: the zero)
        x, g, spec = node.inputs[0], grads[0], self.spec(node)
        if spec is None or any(not isinstance(dim, int) for _, dim, _ in spec):
            return [_pad_back(node, g)] + [None] * (len(node.inputs) - 1)
        pads = np.zeros(2 * x.rank, np.int64)
        for axis, dim, sl in spec:
            index = list(range(dim)[sl])
            if sl.step in (None, 1) or len(index) < 2:
                pads[axis] = index[0] if index else dim
                pads[x.rank + axis] = dim - 1 - index[-1] if index else 0
                continue
            one = np.zeros(2 * x.rank, np.int64)
            one[x.rank + axis] = 1
            inverse = [index.index(j) if j in index else len(index) for j in range(dim)]
            g = get_op("Gather")(Pad(g, one), np.array(inverse, np.int64), axis=axis)
        return [Pad(g, pads) if pads.any() else g] + [None] * (len(node.inputs) - 1)

    def compute(self, node: Node, inputs):
        x, starts, ends = inputs[:3]
        axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for a, s, e, st in zip(axes, starts, ends, steps, strict=False):
            index[int(a)] = slice(int(s), int(e), int(st))
        return [x[tuple(index)]]


def _pad_back(node: Node, g: Value) -> Value:
    """The VJP of a unit-step Slice whose bounds or sliced sizes are known only at run time:
    g padded with zeros before (the clamped start) and after (what the slice left) each axis,
    the pads computed in-graph from Shape(x) and Shape(g)."""
    x = node.inputs[0]
    starts = node.inputs[1]
    axes, steps = _const_ints(node, 3, "axes"), _const_ints(node, 4, "steps")
    given = [node.inputs[i] if len(node.inputs) > i else None for i in (3, 4)]
    count = starts.shape[0] if starts.shape and isinstance(starts.shape[0], int) else None
    if x.rank is None or count is None or (given[0] is not None and axes is None) or \
            (given[1] is not None and (steps is None or any(st != 1 for st in steps))):
        raise ShapeError(f"Slice node {node.name!r}: its gradient needs constant axes and unit "
                         "steps (or constant bounds and steps on axes of static size)")
    axes = [normalize_axis(a, x.rank, "Slice") for a in (axes or range(count))]
    op = {name: get_op(name) for name in ("Add", "Sub", "Less", "Where", "Max", "Min",
                                          "Gather")}
    graph, index = x.graph, x.graph.constant(np.array(axes, np.int64))
    dims = op["Gather"](Shape(x), index, axis=0)
    zero = graph.constant(np.zeros(count, np.int64))
    begin = op["Where"](op["Less"](starts, zero), op["Add"](starts, dims), starts)
    begin = op["Min"](op["Max"](begin, zero), dims)  # as Slice clamps a start
    end = op["Sub"](op["Sub"](dims, begin), op["Gather"](Shape(g), index, axis=0))
    pieces = []
    for part in (begin, end):
        for a in range(x.rank):
            pieces.append(Slice(part, np.array([axes.index(a)], np.int64),
                                np.array([axes.index(a) + 1], np.int64)) if a in axes
                          else graph.constant(np.zeros(1, np.int64)))
    return Pad(g, Concat(*pieces, axis=0))


@define
class Pad(OpDef):
    """Pad (opset 13: pads and constant_value are inputs). Negative pads crop."""

    op_type, since = "Pad", 13
    attributes = {"mode": "constant"}
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, pads = node.inputs[0], _const_ints(node, 1, "pads")
        if x.shape is None:
            return [(x.dtype, None)]
        if pads is None:
            return [(x.dtype, (None,) * len(x.shape))]
        r = len(x.shape)
        if len(pads) != 2 * r:
            raise ShapeError(f"Pad node {node.name!r}: {len(pads)} pads for a rank-{r} input; "
                             f"give 2 x rank = {2 * r}")
        return [(x.dtype, tuple(d + pads[i] + pads[r + i] if isinstance(d, int) else
                                (d if pads[i] == pads[r + i] == 0 else None)
                                for i, d in enumerate(x.shape)))]

    def vjp(self, node: Node, grads):
        # constant mode: padding and cropping undo each other, so dx = Pad(g, -pads); the
        # padding value receives the sum of g over the padded positions
        from irkit.ops.elementwise import Neg, Sub
        ReduceSum = get_op("ReduceSum")  # noqa: N806  (the reduce family sits above this one)
        if attr(node, "mode") != "constant":
            raise UnsupportedOpError(f"Pad node {node.name!r}: the gradient of mode "
                                     f"{attr(node, 'mode')!r} is not supported; use 'constant'")
        g, pads = grads[0], _const_ints(node, 1, "pads")
        dx = Pad(g, np.negative(pads) if pads is not None else Neg(node.inputs[1]))
        result = [dx, None]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            result.append(Sub(ReduceSum(g, keepdims=0), ReduceSum(dx, keepdims=0)))
        return result

    def compute(self, node: Node, inputs):
        x, pads = inputs[0], [int(p) for p in inputs[1]]
        value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else 0
        r, mode = x.ndim, attr(node, "mode")
        grow = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
        kw = {"constant_values": np.asarray(value).item()} if mode == "constant" else {}
        out = np.pad(x, grow, mode=mode, **kw)
        crop = tuple(slice(max(-pads[i], 0), out.shape[i] - max(-pads[r + i], 0))
                     for i in range(r))
        return [out[crop]]


@define
class Tile(OpDef):
    """x repeated `repeats[i]` times along each axis i."""

    op_type, since = "Tile", 13
    input_dtypes = {1: np.int64}

    def infer(self, node: Node):
        x, reps = node.inputs[0], _const_ints(node, 1, "repeats")
        if x.shape is None or reps is None:
            return [(x.dtype, None if x.shape is None else (None,) * len(x.shape))]
        return [(x.dtype, tuple(d * r if isinstance(d, int) else (d if r == 1 else None)
                                for d, r in zip(x.shape, reps, strict=False)))]

    def vjp(self, node: Node, grads):
        # view g as (r0, d0, r1, d1, ...) and sum the repeat axes away
        ReduceSum = get_op("ReduceSum")  # noqa: N806  (the reduce family sits above this one)
        x, reps = node.inputs[0], _const_ints(node, 1, "repeats")
        if reps is None or x.rank is None:
            raise ShapeError(f"Tile node {node.name!r}: its gradient needs constant repeats")
        if x.shape is not None and all(isinstance(d, int) for d in x.shape):
            target = node.graph.constant(np.array([v for r, d in zip(reps, x.shape, strict=False)
                                                   for v in (r, d)], np.int64))
        else:
            target = Concat(*[v for i, r in enumerate(reps) for v in (
                node.graph.constant(np.array([r], np.int64)), Shape(x, start=i, end=i + 1))],
                axis=0)
        sums = np.arange(0, 2 * x.rank, 2, dtype=np.int64)
        return [ReduceSum(Reshape(grads[0], target), sums, keepdims=0), None]

    def compute(self, node: Node, inputs):
        return [np.tile(inputs[0], [int(r) for r in inputs[1]])]


def shape_of(x: Value) -> Value:
    """x's shape as an int64 Value: a constant when static (keeps gradient shapes static)."""
    if x.shape is not None and all(isinstance(d, int) for d in x.shape):
        return x.graph.constant(np.array(x.shape, np.int64))
    return Shape(x)


SMALL_CONSTANT = 1 << 16  # zeros up to this many elements are stored; more are computed


def zeros_like(x: Value) -> Value:
    """A zero tensor of x's shape and dtype: a constant when the shape is static and small,
    else ConstantOfShape (a file's huge declared shape must not allocate at build time)."""
    if x.shape is not None and all(isinstance(d, int) for d in x.shape) \
            and int(np.prod(x.shape, dtype=object)) <= SMALL_CONSTANT:
        return x.graph.constant(np.zeros(x.shape, x.dtype))
    return ConstantOfShape(shape_of(x), value=np.zeros(1, x.dtype))


@define
class Constant(OpDef):
    op_type, since, differentiable = "Constant", 13, False
    attributes = {"value": Required(np.ndarray)}

    def infer(self, node: Node):
        value = np.asarray(attr(node, "value"))
        return [(value.dtype, value.shape)]

    def compute(self, node: Node, inputs):
        return [np.asarray(attr(node, "value"))]


@define
class ConstantOfShape(OpDef):
    op_type, since, differentiable = "ConstantOfShape", 9, False
    attributes = {"value": None}

    def _fill(self, node: Node) -> np.ndarray:
        value = node.attributes.get("value")
        return np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1)

    def infer(self, node: Node):
        dims = _const_ints(node, 0, "shape")
        n = node.inputs[0].shape
        shape = tuple(dims) if dims is not None else (
            None if n is None or n[0] is None else (None,) * int(n[0]))
        return [(self._fill(node).dtype, shape)]

    def compute(self, node: Node, inputs):
        return [np.full(inputs[0].astype(np.int64), self._fill(node)[0])]


@define
class OneHot(OpDef):
    op_type, since, differentiable = "OneHot", 11, False
    attributes = {"axis": -1}

    def infer(self, node: Node):
        idx, depth, values = node.inputs
        depth_v = _const_ints(node, 1, "depth")
        if idx.shape is None:
            return [(values.dtype, None)]
        rank = len(idx.shape) + 1
        axis = normalize_axis(attr(node, "axis"), rank, "OneHot")
        shape = list(idx.shape)
        shape.insert(axis, depth_v[0] if depth_v else None)
        return [(values.dtype, tuple(shape))]

    def compute(self, node: Node, inputs):
        idx, depth, values = inputs
        depth = int(np.ravel(depth)[0])
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + depth, idx)
        hot = idx[..., None] == np.arange(depth)
        out = np.where(hot, values[1], values[0]).astype(values.dtype)
        axis = attr(node, "axis") % (idx.ndim + 1)
        return [np.moveaxis(out, -1, axis)]

