"""`OpDef`, the one description of an op, and the helpers op families share.

An OpDef gives an op's ONNX name and opset range, its attribute schema, shape/dtype
inference, its VJP rule (emitting IR ops, so gradients can be differentiated again) and a
numpy reference. Calling an OpDef on Values appends a node: `Exp(x)`, `Gemm(a, b, transB=1)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irkit.errors import ShapeError, UnsupportedOpError
from irkit.ir import Dim, Graph, Node, Shape, Value
from irkit.ops.registry import get_op, register


class Required:
    """Schema marker of an attribute that has no default."""

    def __init__(self, kind: type) -> None:
        self.kind = kind


# ONNX attribute types of the attributes whose default (None) does not show theirs; the same
# name has the same type in every ai.onnx op (tests/test_ops_attributes.py checks against onnx's
# schemas)
KIND_BY_NAME = {"kernel_shape": "ints", "pads": "ints", "strides": "ints", "dilations": "ints",
                "output_padding": "ints", "output_shape": "ints", "axes": "ints", "perm": "ints",
                "seed": "int", "ignore_index": "int", "end": "int", "value": "tensor"}


def _kind_of(example: Any) -> str | None:
    """The ONNX attribute type of a default value, or of a Required marker's Python type."""
    kind = example.kind if isinstance(example, Required) else type(example)
    if kind in (bool, int) or (isinstance(kind, type) and issubclass(kind, np.integer)):
        return "int"
    if kind is float:
        return "float"
    if kind is str:
        return "string"
    if kind is np.ndarray:
        return "tensor"
    if kind in (list, tuple) and not isinstance(example, Required) and example:
        return "ints" if all(isinstance(v, int) for v in example) else "floats"
    return None


class OpDef:
    """Base of every op. Subclasses set the class attributes and override what differs."""

    op_type: str = ""
    domain: str = ""
    since: int = 13                      # first ai.onnx opset with these semantics
    attributes: dict[str, Any] = {}      # name -> default (or Required(kind))
    num_outputs: int = 1
    input_dtypes: dict[int, Any] = {}    # inputs of fixed dtype (e.g. shapes: int64)
    differentiable: bool = True          # False: outputs are piecewise constant (no gradient)
    type_only_inputs: tuple[int, ...] = ()  # inputs read for their dtype/shape, not values:
    #                                         their gradient is 0 (autodiff asks nothing)

    # ---- schema -----------------------------------------------------------------------------
    def attribute_kind(self, name: str) -> str | None:
        """The attribute's ONNX type ("int", "float", "string", "ints", "floats", "tensor"),
        from its default or its name; None for an attribute this op does not declare."""
        if name not in self.attributes:
            return None
        default = self.attributes[name]
        return KIND_BY_NAME.get(name) if default is None else _kind_of(default)

    def attribute_default(self, name: str, node: Node | None = None) -> Any:
        where = f" of node {node.name!r}" if node is not None else ""
        if name not in self.attributes:
            raise UnsupportedOpError(f"{self.op_type} has no attribute {name!r}{where}")
        default = self.attributes[name]
        if isinstance(default, Required):
            raise ShapeError(f"{self.op_type}{where} needs the attribute {name!r}")
        return default

    def default_num_outputs(self, node: Node) -> int:
        return self.num_outputs

    @property
    def has_gradient(self) -> bool:
        return type(self).vjp is not OpDef.vjp or not self.differentiable

    # ---- behaviour ------------------------------------------------------------------------
    def infer(self, node: Node) -> list[tuple[Any, Shape]]:
        """dtype and shape of each output. Default: like the first input."""
        x = node.inputs[0]
        return [(x.dtype, x.shape)] * node_num_outputs(node, self)

    def vjp(self, node: Node, grads: list[Value | None]) -> list[Value | None]:
        """Gradients of the inputs given those of the outputs (None where there is none)."""
        if not self.differentiable:
            return [None] * len(node.inputs)
        raise UnsupportedOpError(f"op {self.op_type} (node {node.name!r}) has no gradient rule "
                                 "yet; differentiate with respect to inputs it does not read")

    def compute(self, node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
        """numpy reference of the op."""
        raise UnsupportedOpError(f"op {self.op_type} has no numpy reference")

    def compute_small(self, node: Node, inputs: list[np.ndarray | None],
                      max_elements: int) -> list[np.ndarray] | None:
        """`compute`, only when the node's outputs have static shapes of at most `max_elements`
        elements together (checked before anything is computed: a 1-element shape input of a
        ConstantOfShape must not allocate gigabytes); else None. For build-time evaluation
        (constant folding, shape values); an op that cannot be evaluated also gives None."""
        total = 0
        for out in node.outputs:
            if out.shape is None or not all(isinstance(d, int) for d in out.shape):
                return None
            total += int(np.prod(out.shape, dtype=object))
        if total > max_elements:
            return None
        try:
            return self.compute(node, inputs)
        except Exception:  # an op the reference cannot evaluate here (or not on these values)
            return None

    # ---- building -------------------------------------------------------------------------
    def __call__(self, *inputs: Any, **attributes: Any) -> Any:
        """Append this op to the graph of its first Value input; return its output(s)."""
        num_outputs = attributes.pop("_num_outputs", None)
        tensor = next((x for x in inputs if hasattr(type(x), "__irkit_apply__")), None)
        if tensor is not None:  # irkit.Tensor inputs: computed now, or traced, by irkit.tensors
            return type(tensor).__irkit_apply__(self, inputs, attributes, num_outputs)
        graph, ref = _graph_of(inputs, self.op_type)
        values = [_as_value(graph, x, self.input_dtypes.get(i), ref) for i, x in enumerate(inputs)]
        node = self.add_to(graph, values, attributes, num_outputs=num_outputs)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def add_to(self, graph: Graph, inputs: Sequence[Value | None],
               attributes: dict[str, Any] | None = None, *, num_outputs: int | None = None,
               name: str | None = None, output_names: Sequence[str] | None = None) -> Node:
        """Append a node of this op to `graph`, its outputs typed by this op's inference.

        Inference runs on a stand-in node outside the graph (same inputs and attributes, as many
        outputs), so a ShapeError leaves the graph as it was. Outputs that inference does not
        type stay float32 of unknown shape.
        """
        attributes = {k: v for k, v in (attributes or {}).items() if v is not None}
        probe = Node(graph, graph.unique_name(name or self.op_type), self.op_type, self.domain,
                     attributes)
        probe.inputs = list(inputs)
        while probe.inputs and probe.inputs[-1] is None:
            probe.inputs.pop()
        if num_outputs is None:
            num_outputs = len(output_names) if output_names else self.default_num_outputs(probe)
        probe.outputs = [Value(graph, f"{probe.name}.{i}", np.float32, None)
                         for i in range(num_outputs)]  # inference may count them
        types = list(self.infer(probe))[:num_outputs]
        types += [(np.float32, None)] * (num_outputs - len(types))
        return graph.add_node(self.op_type, probe.inputs, attributes, types, name=name,
                              output_names=output_names, domain=self.domain)


def apply(graph: Graph, op_type: str, inputs: Sequence[Value | None],
          attributes: dict[str, Any] | None = None, *, domain: str = "",
          num_outputs: int | None = None, name: str | None = None,
          output_names: Sequence[str] | None = None) -> Node:
    """Append a node of op `op_type` (by name) to `graph`, its outputs' types inferred:
    `OpDef.add_to` of the registered op; UnsupportedOpError if irkit has no such op."""
    return get_op(op_type, domain, node_name=name).add_to(
        graph, inputs, attributes, num_outputs=num_outputs, name=name,
        output_names=output_names)


def node_num_outputs(node: Node, opdef: OpDef) -> int:
    return len(node.outputs) or opdef.default_num_outputs(node)


def _graph_of(inputs: Sequence[Any], op_type: str) -> tuple[Graph, Value]:
    values = [x for x in inputs if isinstance(x, Value)]
    if not values:
        raise ShapeError(f"{op_type} needs at least one graph Value or irkit.Tensor among its "
                         "inputs (got only constants); to compute on arrays now, make one an "
                         "irkit.tensor(...) or use irkit.numpy")
    floats = [v for v in values if v.dtype.kind == "f"]
    return values[0].graph, (floats or values)[0]


def _as_value(graph: Graph, x: Any, dtype: Any, ref: Value) -> Value | None:
    """Constants given as numbers or arrays take the dtype of the op's (first float) Value."""
    if x is None or isinstance(x, Value):
        return x
    if dtype is None:
        arr = np.asarray(x)
        dtype = arr.dtype if arr.dtype == np.bool_ else ref.dtype
    return graph.constant(x, dtype=dtype)


def define(cls: type[OpDef]) -> OpDef:
    """Class decorator: instantiate and register an op; the name refers to the instance."""
    return register(cls())


# ---- shape helpers ----------------------------------------------------------------------------
def broadcast_shapes(*shapes: Shape, op: str = "op") -> Shape:
    """Numpy-style broadcast of shapes with symbolic dims; None if any rank is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        out.append(_broadcast_dim(dims, shapes, op))
    return tuple(out)


def _broadcast_dim(dims: list[Dim], shapes, op: str) -> Dim:
    ints = {d for d in dims if isinstance(d, int) and d != 1}
    if len(ints) > 1:
        raise ShapeError(f"{op}: shapes {', '.join(map(_fmt, shapes))} do not broadcast; "
                         "make the dims equal or 1")
    if ints:
        return ints.pop()
    named = [d for d in dims if isinstance(d, str)]
    if named:
        return named[0]  # symbolic dims that meet are taken to be equal
    return None if None in dims else 1


def _fmt(shape: Shape) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def normalize_axis(axis: int, rank: int | None, op: str = "op") -> int:
    if rank is None:
        return axis
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def const_array(value: Value | None, what: str) -> np.ndarray | None:
    """The data of a constant input (initializer or Constant node), or None if not constant."""
    if value is None:
        return None
    if value.const is not None:
        return value.const
    p = value.producer
    if p is not None and p.op_type == "Constant" and "value" in p.attributes:
        return np.asarray(p.attributes["value"])
    return None


def fmt_shape(shape: Shape) -> str:
    return _fmt(shape)


def same_as_input_of_rank(node: Node, min_rank: int, layout: str = "") -> list:
    """`infer` of an op whose output has its input's dtype and shape, the input of rank at
    least `min_rank` (an unknown rank passes); `layout` names the axes in the message."""
    x = node.inputs[0]
    if x.rank is not None and x.rank < min_rank:
        named = f" ({layout})" if layout else ""
        raise ShapeError(f"{node.op_type} node {node.name!r}: the input needs rank >= "
                         f"{min_rank}{named}, got {fmt_shape(x.shape)}")
    return [(x.dtype, x.shape)]
