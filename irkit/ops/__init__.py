"""irkit's ops, named as in ONNX. Call one on Values to append a node: `ops.Exp(x)`,
`ops.Gemm(a, b, transB=1)`. Numbers and numpy arrays become constants of the Values' dtype.

Every op is one `OpDef` in a family module (elementwise, reduce, shape, index, nn, norm, loss,
conv, resize); the registry (`get_op`, `all_ops`) is how the rest of irkit finds them. The IR knows
no op: `apply` appends a node by op name with its outputs' types inferred, `attr(node, name)`
reads an attribute with the op's default, `opdef_of(node)` finds a node's op, and `verify`
checks a graph fully (the IR's invariants, and every op known).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irkit.ir import Value
from irkit.ops import elementwise as _ew
from irkit.ops import nn as _nn
from irkit.ops import reduce as _red
from irkit.ops import shape as _shape
from irkit.ops.base import OpDef, apply
from irkit.ops.conv import *  # noqa: F403
from irkit.ops.elementwise import *  # noqa: F403
from irkit.ops.index import *  # noqa: F403
from irkit.ops.loss import *  # noqa: F403
from irkit.ops.nn import *  # noqa: F403
from irkit.ops.norm import *  # noqa: F403
from irkit.ops.reduce import *  # noqa: F403
from irkit.ops.registry import all_ops, attr, debug_verify, get_op, has_op, opdef_of, verify
from irkit.ops.resize import *  # noqa: F403
from irkit.ops.shape import *  # noqa: F403


def own_output(value: Value, outputs: list[Value]) -> Value:
    """`value`, or an Identity of it where it cannot be renamed into a graph output of its own:
    a graph input or initializer (its name is taken), or a value already among `outputs`."""
    if value.producer is None or value in outputs:  # by identity; a graph's outputs: O(1)
        return _ew.Identity(value)
    return value


def _axes(value: Value, axis: Any) -> Any:
    if axis is None:
        return None
    return np.array([axis] if np.isscalar(axis) else list(axis), dtype=np.int64)


def _sum(self: Value, axis: Any = None, keepdims: bool = False) -> Value:
    """Sum over `axis` (all axes when None)."""
    return _red.ReduceSum(self, _axes(self, axis), keepdims=int(keepdims))


def _mean(self: Value, axis: Any = None, keepdims: bool = False) -> Value:
    """Mean over `axis` (all axes when None)."""
    axes = None if axis is None else [int(a) for a in np.atleast_1d(axis)]
    return _red.ReduceMean(self, axes=axes, keepdims=int(keepdims))


def _reshape(self: Value, *shape: Any) -> Value:
    """Reshape (0 copies a dim, -1 infers one)."""
    dims = shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape
    return _shape.Reshape(self, np.array(dims, dtype=np.int64))


def _install_value_operators() -> None:
    """Give Value the arithmetic operators, so `x * 2 + b` builds IR (ops sit above the IR)."""
    ops = {
        "__add__": lambda a, b: _ew.Add(a, b), "__radd__": lambda a, b: _ew.Add(b, a),
        "__sub__": lambda a, b: _ew.Sub(a, b), "__rsub__": lambda a, b: _ew.Sub(b, a),
        "__mul__": lambda a, b: _ew.Mul(a, b), "__rmul__": lambda a, b: _ew.Mul(b, a),
        "__truediv__": lambda a, b: _ew.Div(a, b), "__rtruediv__": lambda a, b: _ew.Div(b, a),
        "__pow__": lambda a, b: _ew.Pow(a, b), "__rpow__": lambda a, b: _ew.Pow(b, a),
        "__matmul__": lambda a, b: _nn.MatMul(a, b), "__rmatmul__": lambda a, b: _nn.MatMul(b, a),
        "__neg__": lambda a: _ew.Neg(a),
        "sum": _sum, "mean": _mean, "reshape": _reshape,
        "T": property(lambda a: _shape.Transpose(a)),
    }
    for name, fn in ops.items():
        setattr(Value, name, fn)


_install_value_operators()

__all__ = ["OpDef", "all_ops", "apply", "attr", "debug_verify", "get_op", "has_op", "opdef_of",
           "own_output", "verify"] + [
    name for name, v in list(globals().items()) if isinstance(v, OpDef)]
