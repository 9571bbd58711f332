"""Import-side compatibility: ONNX features newer than opset 17 rewritten to irkit's opset.

irkit's op semantics are those of ai.onnx opset 17. A model of a newer opset is imported by
rewriting the changes that have an opset-17 spelling (`downgrade_to_opset_17`) and relabeling
the rest, whose changes only widened type lists. `constant_value` reads every spelling of a
Constant node's value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irkit.errors import UnsupportedOpError, printable
from irkit.ir import fresh_name
from irkit.onnx_io._infer import (
    MAX_IMPORT_FOLD_ELEMENTS,
    evaluate,
    inferred_graph,
    inferred_shapes,
    output_sizes,
)
from irkit.onnx_io._pool19 import dilated_average_pool
from irkit.onnx_io._resize18 import resize_to_opset_17
from irkit.ops.dtypes import FLOAT8, FLOAT8E8M0, LAST_ELEMENT_TYPE, type_name
from irkit.safe_io import limit

OPSET_17 = 17
MAX_FOLD_ROUNDS = 4  # import folds shape-sized values; more is a bomb, skipped

_AXES_INPUT_SINCE_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                        "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
_REDUCE_OVER_NO_AXES = {"ReduceL1": ("Abs", 1), "ReduceL2": ("Abs", 1),  # (op, inputs)
                        "ReduceSumSquare": ("Mul", 2), "ReduceLogSum": ("Log", 1)}
_SATURATED = {*FLOAT8, FLOAT8E8M0}  # the targets Cast's saturate acts on


def downgrade_to_opset_17(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite the opset 18+ changes that have an opset-17 spelling, then relabel as 17.

    1. Reduce* `axes` input (18) -> attribute; empty axes reduce all, or with
       noop_with_empty_axes leave the elementwise part (Identity, Abs, Mul(x, x) or Log).
    2. Split `num_outputs` (18) -> equal parts, or explicit sizes when the last is smaller.
    3. Pad `axes` input (18) -> pads for every axis.
    4. Cast/CastLike `saturate` (19) and `round_mode` (24) only act on float8 targets: kept
       for those (irkit's Cast has them; export then declares the opset that has them),
       dropped otherwise.
    5. AveragePool `dilations` (19): dropped if all 1s, else a grouped Conv of ones divided
       by the taps counted (`irkit.onnx_io._pool19`).
    6. Resize `axes`, `keep_aspect_ratio_policy` and `antialias` (18), half_pixel_symmetric
       (19): full-rank inputs, scales, or MatMuls by constants (`irkit.onnx_io._resize18`).
    Element types newer than opset 17 (float8, int4, float4, e8m0, int2) stay as they are:
    irkit's IR holds them; types it does not know (FLOAT6) are an UnsupportedOpError.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _check_element_types(model.graph)
    rewrite = _OpsetRewriter(model)
    nodes = [m for n in model.graph.node for m in rewrite(n)]  # copied in once all are edited
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = OPSET_17
    return model


# inputs that irkit's ops need as constants to know shapes (and so to differentiate)
PARAMETER_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Pad": (1, 2),
    "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ReduceSum": (1,),
    "TopK": (1,), "OneHot": (1,), "Range": (0, 1, 2), "Resize": (1, 2, 3),
}


def fold_constant_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold the computed shape parameters of an opset <= 17 model into constants.

    Exporters that skip constant folding (torch.onnx.export(..., do_constant_folding=False))
    compute Pad pads, Slice starts and Reshape shapes from Constant, Shape, Gather, Unsqueeze
    and Concat nodes. Each input listed in PARAMETER_INPUTS that is computable at import
    (constants and static shapes, within the folding cap) becomes an initializer, so shapes
    stay static and gradients work; the nodes that only computed it are dropped. A Reshape
    shape that reads a symbolic batch becomes one too where it can (`reshape_shape`). A model
    with nothing to fold is returned as it is.
    """
    model_in = model
    for _ in range(MAX_FOLD_ROUNDS):  # folded shapes can make later Shape nodes static
        found = _parameters_to_fold(model)
        if not found:
            break
        if model is model_in:
            model = onnx.ModelProto.FromString(model.SerializeToString())
        rewrite = _OpsetRewriter(model)
        replaced = []
        for n, i in _parameters_to_fold(model):
            value = rewrite.fold(n.input[i])
            if value is None and n.op_type == "Reshape":
                value = rewrite.reshape_shape(n)
            if value is not None:
                replaced.append(n.input[i])
                rewrite.add_input(n, i, value)
        if not replaced:
            break
        _drop_unread(model.graph, replaced)
    return model


def _parameters_to_fold(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int]]:
    """(node, input index) of the PARAMETER_INPUTS not given as constants."""
    g = model.graph
    known = {t.name for t in g.initializer} | {n.output[0] for n in g.node
                                               if n.op_type == "Constant" and n.output}
    return [(n, i) for n in g.node if n.domain in ("", "ai.onnx")
            for i in PARAMETER_INPUTS.get(n.op_type, ())
            if i < len(n.input) and n.input[i] and n.input[i] not in known]


def _drop_unread(g: onnx.GraphProto, names: list[str]) -> None:
    """Remove the producers of `names`, and theirs in turn, that nothing reads any more."""
    readers: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    for vi in g.output:
        readers[vi.name] = readers.get(vi.name, 0) + 1
    producers = {o: n for n in g.node for o in n.output}
    dead: set[int] = set()
    work = list(names)
    while work:
        node = producers.get(work.pop())
        if node is None or id(node) in dead or any(readers.get(o, 0) for o in node.output):
            continue
        dead.add(id(node))
        for name in node.input:
            readers[name] -= 1
            work.append(name)
    keep = [n for n in g.node if id(n) not in dead]
    del g.node[:]
    g.node.extend(keep)


class _OpsetRewriter:
    """The per-node rewrites of `downgrade_to_opset_17`, with the model's constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in model.graph.node:
            value = constant_value(n)
            if value is not None:
                self.consts[n.output[0]] = value
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.unfoldable: set[str] = set()
        self.skipped: list[str] = []  # why folds were not attempted (too large, unknown size)
        # Split and Pad rewrites need shapes: inferred before any node changes
        self.shapes: dict[str, tuple | None] = {}
        self._symbols: dict[str, tuple | None] | None = None
        self._inferred: onnx.GraphProto | None = None
        if any(n.op_type in ("Split", "Pad", "Resize", "AveragePool") for n in model.graph.node):
            self.shapes = self.static_shapes()
            self.shapes.update({k: v.shape for k, v in self.consts.items()})

    def __call__(self, n: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The node rewritten in place, after any nodes it now reads."""
        if n.domain not in ("", "ai.onnx"):
            return [n]
        if n.op_type == "Pad" and len(n.input) > 3 and n.input[3]:
            return [*self.pad_axes(n), n]
        if n.op_type == "Gelu":
            return self.gelu(n)
        if n.op_type == "Resize":
            return resize_to_opset_17(self, n)
        if n.op_type in _AXES_INPUT_SINCE_18:
            self.reduce_axes(n)
        elif n.op_type == "Split":
            self.split(n)
        elif n.op_type in ("Cast", "CastLike"):
            to = _attr(n, "to", 0) if n.op_type == "Cast" else self.elem_type(n.input[1])
            _drop_attrs(n, *[k for k, used_by in (("saturate", _SATURATED),
                                                  ("round_mode", {FLOAT8E8M0}))
                             if to not in used_by])
        elif n.op_type == "AveragePool" and "dilations" in (a.name for a in n.attribute):
            if any(d != 1 for d in _attr(n, "dilations", [])):
                return dilated_average_pool(self, n)
            _drop_attrs(n, "dilations")
        return [n]

    def const(self, n: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        value = self.fold(n.input[index])
        if value is None:
            why = f" (not folded at import: {self.skipped[-1]})" if self.skipped else ""
            raise UnsupportedOpError(f"node {n.name or n.output[0]!r} ({n.op_type}): {what} "
                                     f"must be constant (an initializer or Constant) for irkit"
                                     f"{why}")
        return value

    def fold(self, name: str, depth: int = 0) -> np.ndarray | None:
        """A value computable at import time: a constant, the Shape of a statically shaped
        value, or a node of such inputs (evaluated with onnx.reference, only when its output
        sizes, found first by shape inference, are within the folding cap); else None."""
        if name in self.consts:
            return self.consts[name]
        producer = self.producers.get(name)
        if producer is None or depth > 64 or producer.domain not in ("", "ai.onnx") \
                or name in self.unfoldable:
            return None
        if producer.op_type == "Shape":
            shape = self.dims_of(producer)
            value = np.array(shape, np.int64) if shape is not None and None not in shape \
                else None
        elif producer.op_type in ("Gather", "Slice") \
                and self.producers.get(producer.input[0]) is not None \
                and self.producers[producer.input[0]].op_type == "Shape":
            value = self.static_dims(producer, depth)
        else:
            inputs = [self.fold(i, depth + 1) if i else None for i in producer.input]
            value = None
            if all(v is not None for v, i in zip(inputs, producer.input) if i) \
                    and self.small_enough(producer, inputs):
                value = evaluate(self.model, producer, inputs).get(name)
        if value is None:
            self.unfoldable.add(name)  # a DAG of unfoldable values is visited once, not per path
        else:
            self.consts[name] = value
        return value

    def symbolic_shapes(self) -> dict[str, tuple | None]:
        """Shapes by onnx shape inference with data propagation, a symbolic dim as its name:
        inferred once per rewriter (one folding round), the first time a fold needs them.
        A round only turns computed parameters into the constants inference propagated, so
        the shapes hold for the whole round."""
        if self._symbols is None:
            self._symbols = inferred_shapes(self.model, True, self.inferred())
        return self._symbols

    def inferred(self) -> onnx.GraphProto:
        """The model's graph as onnx shape inference fills it, once per rewriter."""
        if self._inferred is None:
            self._inferred = inferred_graph(self.model)
        return self._inferred

    def static_shapes(self) -> dict[str, tuple | None]:
        """`symbolic_shapes` with every symbolic dim None (unknown)."""
        return {k: None if v is None else tuple(d if isinstance(d, int) else None for d in v)
                for k, v in self.symbolic_shapes().items()}

    def dims_of(self, shape_node: onnx.NodeProto) -> list | None:
        """What a Shape node gives, a dim None where shape inference does not know it."""
        if not self.shapes:
            self.shapes = self.static_shapes()
        shape = self.shapes.get(shape_node.input[0])
        if shape is None:
            return None
        return list(shape[slice(_attr(shape_node, "start", 0), _attr(shape_node, "end", None))])

    def static_dims(self, node: onnx.NodeProto, depth: int) -> np.ndarray | None:
        """A Gather (axis 0) or Slice (axis 0) of a Shape, with constant indices or bounds,
        whose chosen dims are static though others are not (the legacy exporter's
        `x.view(-1, x.shape[-1])` under a dynamic batch)."""
        dims = self.dims_of(self.producers[node.input[0]])
        args = [self.fold(i, depth + 1) if i else None for i in node.input[1:]]
        if dims is None or any(a is None for a, i in zip(args, node.input[1:]) if i):
            return None
        if node.op_type == "Gather":
            index = args[0]
            if _attr(node, "axis", 0) != 0 or index.dtype.kind not in "iu" \
                    or np.any(index < -len(dims)) or np.any(index >= len(dims)):
                return None
            picked = [dims[int(i)] for i in np.ravel(index)]
            shape = index.shape
        else:
            start, end, *rest = (int(np.ravel(a)[0]) if a is not None else None for a in args)
            axes, step = (rest + [None, None])[:2]
            if axes not in (None, 0, -1) or step == 0:
                return None
            picked = dims[start:end:step]
            shape = (len(picked),)
        if any(d is None for d in picked):
            return None
        return np.array(picked, np.int64).reshape(shape)

    def reshape_shape(self, n: onnx.NodeProto) -> np.ndarray | None:
        """A computed Reshape shape as a constant, from the output shape onnx infers with data
        propagation: a static dim as it is, a symbolic dim equal to the input's at the same
        axis as 0 (allowzero=0 copies it), and at most one other dim as -1; else None (and
        always under allowzero=1, or for a static 0, which 0 cannot spell)."""
        if _attr(n, "allowzero", 0):
            return None
        symbols = self.symbolic_shapes()
        out, given = symbols.get(n.output[0]), symbols.get(n.input[0])
        if out is None or given is None:
            return None
        shape = [d if isinstance(d, int) else 0 if d is not None and i < len(given)
                 and given[i] == d else -1 for i, d in enumerate(out)]
        if shape.count(-1) > 1 or 0 in [d for d in out if isinstance(d, int)]:
            return None
        return np.array(shape, np.int64)

    def small_enough(self, node: onnx.NodeProto, inputs: list) -> bool:
        """Whether `node`'s outputs (sized by shape inference, before anything is evaluated)
        stay within the import-folding cap; the reason is kept for the error message."""
        cap = min(MAX_IMPORT_FOLD_ELEMENTS, limit("elements"))
        sizes = output_sizes(self.model, node, inputs)
        label = f"node {printable(node.name or node.output[0])} ({node.op_type})"
        if sizes is None:
            self.skipped.append(f"{label} has outputs of unknown size")
            return False
        if sum(sizes) > cap:
            self.skipped.append(f"{label} would make {sum(sizes)} elements, over the import "
                                f"folding limit of {cap}")
            return False
        return True

    def reduce_axes(self, n: onnx.NodeProto) -> None:
        given = len(n.input) > 1 and n.input[1]
        axes = [int(a) for a in np.ravel(self.const(n, 1, "axes"))] if given else []
        noop = _attr(n, "noop_with_empty_axes", 0)
        _drop_attrs(n, "noop_with_empty_axes")
        del n.input[1:]
        if axes:
            n.attribute.append(helper.make_attribute("axes", axes))
        elif noop:  # a reduction over no axes: only its elementwise part is left
            n.op_type, inputs = _REDUCE_OVER_NO_AXES.get(n.op_type, ("Identity", 1))
            n.input.extend([n.input[0]] * (inputs - 1))
            del n.attribute[:]

    def split(self, n: onnx.NodeProto) -> None:
        parts = _attr(n, "num_outputs", None)
        if parts is None:
            return
        _drop_attrs(n, "num_outputs")
        shape = self.shapes.get(n.input[0])
        axis = _attr(n, "axis", 0)
        dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
        if isinstance(dim, int) and dim % parts:
            size = -(-dim // parts)
            self.add_input(n, 1, np.array([size] * (parts - 1) + [dim - size * (parts - 1)],
                                          np.int64))

    def pad_axes(self, n: onnx.NodeProto) -> list[onnx.NodeProto]:
        shape = self.shapes.get(n.input[0])
        if shape is None:
            raise UnsupportedOpError(f"Pad node {n.name or n.output[0]!r}: an axes input needs "
                                     "the rank of the padded tensor; give its shape")
        rank = len(shape)
        axes = [int(a) % rank for a in np.ravel(self.const(n, 3, "axes"))]
        where = np.array(axes + [a + rank for a in axes], np.int64)
        del n.input[3:]
        if n.input[1] in self.consts:
            pads = np.zeros(2 * rank, np.int64)
            pads[where] = np.ravel(self.consts[n.input[1]])
            self.add_input(n, 1, pads)
            return []
        # dynamic pads: scatter them into zeros of every axis
        name = self.fresh(f"{n.input[1]}_all_axes")
        zeros = self.fresh(f"{name}_zeros")
        index = self.fresh(f"{name}_index")
        self.add_const(zeros, np.zeros(2 * rank, np.int64))
        self.add_const(index, where)
        scatter = helper.make_node("ScatterElements", [zeros, index, n.input[1]], [name],
                                   name=self.fresh(f"{n.name or 'Pad'}_pads"))
        n.input[1] = name
        return [scatter]

    def add_input(self, n: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        name = self.fresh(f"{n.name or n.op_type}_{n.output[0]}_input{index}")
        self.add_const(name, value)
        while len(n.input) <= index:
            n.input.append("")
        n.input[index] = name

    def add_const(self, name: str, value: np.ndarray) -> None:
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value

    def gelu(self, n: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Gelu (opset 20) as opset-17 ops: x/2 (1 + erf(x/sqrt 2)), or with approximate="tanh"
        x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        x, y = n.input[0], n.output[0]
        dtype = helper.tensor_dtype_to_np_dtype(self.elem_type(x))
        out: list[onnx.NodeProto] = []

        def const(value: float) -> str:
            name = self.fresh(f"{y}_c")
            self.consts[name] = np.array(value, dtype)
            out.append(helper.make_node("Constant", [], [name],
                                        value=numpy_helper.from_array(self.consts[name])))
            return name

        def node(op: str, *inputs: str) -> str:
            name = self.fresh(f"{y}_{op.lower()}")
            out.append(helper.make_node(op, list(inputs), [name]))
            self.producers[name] = out[-1]
            return name
        if _attr(n, "approximate", b"none") in (b"tanh", "tanh"):
            cubic = node("Mul", const(0.044715), node("Mul", x, node("Mul", x, x)))
            inner = node("Tanh", node("Mul", const(float(np.sqrt(2 / np.pi))),
                                      node("Add", x, cubic)))
        else:
            inner = node("Erf", node("Mul", x, const(float(1 / np.sqrt(2)))))
        half_x = node("Mul", x, const(0.5))
        out.append(helper.make_node("Mul", [half_x, node("Add", inner, const(1.0))], [y],
                                    name=n.name))
        return out

    def elem_type(self, name: str) -> int:
        """The element type of a value (by onnx type inference); float when unknown."""
        if not hasattr(self, "_types"):  # inferred anew: the rewrites so far have changed nodes
            try:
                g = onnx.shape_inference.infer_shapes(self.model).graph
            except Exception:
                g = self.model.graph
            self._types = {vi.name: vi.type.tensor_type.elem_type
                           for vi in [*g.input, *g.value_info, *g.output]}
            self._types.update({t.name: t.data_type for t in self.model.graph.initializer})
        return self._types.get(name) or onnx.TensorProto.FLOAT

    def fresh(self, base: str) -> str:
        taken = self.consts.keys() | self.producers.keys() | {
            vi.name for vi in self.model.graph.input}
        return fresh_name(base, taken)


def _attr(n: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _drop_attrs(n: onnx.NodeProto, *names: str) -> None:
    keep = [a for a in n.attribute if a.name not in names]
    del n.attribute[:]
    n.attribute.extend(keep)


def _check_element_types(g: onnx.GraphProto) -> None:
    """UnsupportedOpError for element types irkit does not know (FLOAT6 and later)."""
    found = [(vi.name, vi.type.tensor_type.elem_type) for vi in [*g.input, *g.output]]
    found += [(t.name, t.data_type) for t in g.initializer]
    for n in g.node:
        if n.op_type == "Cast" and n.domain in ("", "ai.onnx"):
            found.append((n.output[0], _attr(n, "to", 0)))
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            found += [(n.output[0], a.t.data_type) for a in n.attribute if a.name == "value"]
    for name, elem in found:
        if elem > LAST_ELEMENT_TYPE:
            raise UnsupportedOpError(
                f"{name!r} has element type {type_name(elem)}, which irkit does not support "
                f"(it reads types up to {type_name(LAST_ELEMENT_TYPE)}); cast it in the "
                "exporter")


def constant_value(n: onnx.NodeProto) -> np.ndarray | None:
    """The data of a Constant node (any of its value attributes but sparse), else None."""
    if n.op_type != "Constant" or n.domain not in ("", "ai.onnx") or len(n.attribute) != 1:
        return None
    a = n.attribute[0]
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}
    if a.name == "value":
        if a.t.data_type > LAST_ELEMENT_TYPE:
            return None
        return numpy_helper.to_array(a.t)
    if a.name in kinds:
        return np.array(helper.get_attribute_value(a), dtype=kinds[a.name])
    if a.name in ("value_string", "value_strings"):
        value = helper.get_attribute_value(a)
        strings = [v.decode() for v in value] if isinstance(value, list) else value.decode()
        return np.array(strings, dtype=object)
    return None
