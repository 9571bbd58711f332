"""Export-side lowering: opset-17 nodes that an older target opset cannot spell, rewritten.

onnx.version_converter has no down-adapter for LayerNormalization (opset 17),
BatchNormalization 15 -> 14 or Reshape's `allowzero` (14), so `irkit export --opset 13`
rewrites these forms first, into ops every opset since 13 reads the same way; the converter
(or a relabel checked against the older schemas) does the rest.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from irkit.errors import UnsupportedOpError, printable
from irkit.ir import fresh_name
from irkit.onnx_io._compat import OPSET_17, _attr, _drop_attrs, _OpsetRewriter
from irkit.onnx_io._infer import inferred_shapes

_LOW_PRECISION = {TensorProto.FLOAT16, TensorProto.BFLOAT16}


def lower_below_17(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """A copy of an opset-17 `model` whose nodes also mean the same at `opset` (13..16):

    1. LayerNormalization (17), for opset < 17: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
       Div, Mul, Add (computed in float32 for a float16/bfloat16 input under stash_type=1;
       its Mean and InvStdDev outputs, when read, from the same nodes).
    2. BatchNormalization: `training_mode=1` (14), for opset < 14, unfused into the batch
       statistics (biased variance, as ONNX defines them) and the running-statistic updates
       `running * momentum + batch * (1 - momentum)`; scale, bias, mean and var of another
       type than X (15), for opset < 15, cast to X's type; `training_mode=0` dropped (< 14).
    3. Reshape `allowzero` (14), for opset < 14: dropped when 0 (the older meaning) or when
       the shape is a constant without a 0; refused otherwise, naming the node.
    4. Shape `start`/`end` (15), for opset < 15: the whole shape, then a Slice of it.
    """
    if opset >= OPSET_17:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    lower = _Lowering(model)
    nodes = []
    for n in model.graph.node:
        nodes += lower(n, opset) if n.domain in ("", "ai.onnx") else [n]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


class _Lowering:
    """The per-node rewrites of `lower_below_17`; names and constants by `_OpsetRewriter`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.names = _OpsetRewriter(model)
        self.shapes: dict[str, tuple | None] | None = None
        self.out: list[onnx.NodeProto] = []
        self.node_names = {n.name for n in model.graph.node}

    def __call__(self, n: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
        """The nodes that replace `n` at `opset` ([n] when it is valid there as it is)."""
        self.out = []
        if n.op_type == "LayerNormalization":
            self.layer_norm(n)
        elif n.op_type == "BatchNormalization" and _attr(n, "training_mode", 0) and opset < 14:
            self.batch_norm_training(n)
        else:
            if n.op_type == "BatchNormalization":
                if opset < 14:
                    _drop_attrs(n, "training_mode")
                if opset < 15:
                    self.cast_inputs(n, n.input[0], range(1, 5))
            elif n.op_type == "Reshape" and opset < 14:
                self.reshape(n)
            elif n.op_type == "Shape" and opset < 15 and len(n.attribute):
                return self.shape_span(n)
            self.out.append(n)
        return self.out

    # ---- building blocks -----------------------------------------------------------------
    def node(self, op: str, *inputs: str, base: str, output: str | None = None,
             **attrs) -> str:
        """Append `op(inputs)` and return its output's name (a fresh one unless given)."""
        name = output or self.names.fresh(f"{base}_{op.lower()}")
        node_name = fresh_name(f"{base}/{op}", self.node_names)
        self.out.append(helper.make_node(op, list(inputs), [name], name=node_name, **attrs))
        self.names.producers[name] = self.out[-1]
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        """A new initializer holding `value`."""
        name = self.names.fresh(f"{base}_const")
        self.names.add_const(name, np.asarray(value))
        return name

    def rank(self, n: onnx.NodeProto, value: str) -> int:
        """The rank of `value` by shape inference, or a one-line refusal naming `n`."""
        if self.shapes is None:
            self.shapes = inferred_shapes(self.names.model)
        shape = self.shapes.get(value)
        if shape is None:
            raise UnsupportedOpError(
                f"{n.op_type} node {printable(n.name or n.output[0])}: lowering it below opset "
                f"17 needs the rank of its input {printable(value)}, which is unknown; give the "
                f"model's input shapes or export at --opset 17")
        return len(shape)

    def cast_inputs(self, n: onnx.NodeProto, like: str, indices) -> None:
        """Cast `n`'s inputs at `indices` to the element type of `like` where they differ."""
        to = self.names.elem_type(like)
        for i in indices:
            if i < len(n.input) and n.input[i] and self.names.elem_type(n.input[i]) != to:
                n.input[i] = self.node("Cast", n.input[i], base=n.input[i], to=to)

    # ---- the rewrites ----------------------------------------------------------------------
    def layer_norm(self, n: onnx.NodeProto) -> None:
        """Case 1: Y = (X - mean) / sqrt(var + epsilon) * Scale + B over axes axis..rank-1."""
        x, base = n.input[0], n.name or n.output[0]
        axis = _attr(n, "axis", -1)
        axes = list(range(axis, 0)) if axis < 0 else list(range(axis, self.rank(n, x)))
        dtype = self.names.elem_type(x)
        stash = TensorProto.FLOAT if _attr(n, "stash_type", 1) == 1 \
            and dtype in _LOW_PRECISION else dtype
        np_stash = helper.tensor_dtype_to_np_dtype(stash)
        if stash != dtype:
            x = self.node("Cast", x, base=base, to=stash)
        mean = self.node("ReduceMean", x, base=base, axes=axes, keepdims=1)
        centered = self.node("Sub", x, mean, base=base)
        square = self.node("Pow", centered, self.const(np.array(2, np_stash), base), base=base)
        var = self.node("ReduceMean", square, base=base, axes=axes, keepdims=1)
        epsilon = self.const(np.array(_attr(n, "epsilon", 1e-5), np_stash), base)
        std = self.node("Sqrt", self.node("Add", var, epsilon, base=base), base=base)
        normalized = self.node("Div", centered, std, base=base)
        if stash != dtype:
            normalized = self.node("Cast", normalized, base=base, to=dtype)
        bias = len(n.input) > 2 and n.input[2]
        scaled = self.node("Mul", normalized, n.input[1], base=base,
                           output=None if bias else n.output[0])
        if bias:
            self.node("Add", scaled, n.input[2], base=base, output=n.output[0])
        if len(n.output) > 1 and n.output[1]:
            self.node("Identity", mean, base=base, output=n.output[1])
        if len(n.output) > 2 and n.output[2]:
            self.node("Reciprocal", std, base=base, output=n.output[2])

    def batch_norm_training(self, n: onnx.NodeProto) -> None:
        """Case 2, training mode: batch statistics over every axis but 1, then Y and the
        running statistics, in X's type (the others cast to it, and the outputs back)."""
        x, base = n.input[0], n.name or n.output[0]
        rank = self.rank(n, x)
        stats_type = self.names.elem_type(n.input[3])
        self.cast_inputs(n, x, range(1, 5))
        np_type = helper.tensor_dtype_to_np_dtype(self.names.elem_type(x))
        axes = [0, *range(2, rank)]
        per_channel = self.const(np.array([-1] + [1] * (rank - 2), np.int64), base)

        def channels(value: str) -> str:  # (C,) -> (C, 1, ..., 1), beside X's axis 1
            return self.node("Reshape", value, per_channel, base=base)
        mean = self.node("ReduceMean", x, base=base, axes=axes, keepdims=1)
        centered = self.node("Sub", x, mean, base=base)
        var = self.node("ReduceMean", self.node("Mul", centered, centered, base=base),
                        base=base, axes=axes, keepdims=1)
        epsilon = self.const(np.array(_attr(n, "epsilon", 1e-5), np_type), base)
        std = self.node("Sqrt", self.node("Add", var, epsilon, base=base), base=base)
        scaled = self.node("Mul", self.node("Div", centered, std, base=base),
                           channels(n.input[1]), base=base)
        self.node("Add", scaled, channels(n.input[2]), base=base, output=n.output[0])
        momentum = _attr(n, "momentum", 0.9)
        flat = self.const(np.array([-1], np.int64), base)
        for batch, running, out in ((mean, n.input[3], 1), (var, n.input[4], 2)):
            if len(n.output) <= out or not n.output[out]:
                continue
            kept = self.node("Mul", running, self.const(np.array(momentum, np_type), base),
                             base=base)
            new = self.node("Mul", self.node("Reshape", batch, flat, base=base),
                            self.const(np.array(1 - momentum, np_type), base), base=base)
            cast = stats_type != self.names.elem_type(x)
            total = self.node("Add", kept, new, base=base,
                              output=None if cast else n.output[out])
            if cast:
                self.node("Cast", total, base=base, output=n.output[out], to=stats_type)

    def reshape(self, n: onnx.NodeProto) -> None:
        """Case 3: Reshape-13 reads a 0 in the shape as 'copy the input's dim'."""
        if _attr(n, "allowzero", 0):
            shape = self.names.consts.get(n.input[1])
            if shape is None or not np.all(np.asarray(shape) != 0):
                why = "computed at run time" if shape is None else f"{shape.tolist()}"
                raise UnsupportedOpError(
                    f"Reshape node {printable(n.name or n.output[0])}: allowzero=1 with a shape "
                    f"{why} cannot be written below opset 14 (a 0 there means 'keep the input's "
                    f"dim'); export at --opset 14 or newer")
        _drop_attrs(n, "allowzero")

    def shape_span(self, n: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Case 4: Shape(x)[start:end] as Shape then Slice (whose bounds clamp the same way)."""
        base = n.name or n.output[0]
        start, end = _attr(n, "start", 0), _attr(n, "end", None)
        whole = self.node("Shape", n.input[0], base=base)
        bounds = [self.const(np.array([v], np.int64), base)
                  for v in (start, np.iinfo(np.int64).max if end is None else end)]
        self.node("Slice", whole, *bounds, base=base, output=n.output[0])
        return self.out
