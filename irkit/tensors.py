"""`irkit.Tensor`: an array you compute with, eagerly or inside a trace, and the one dispatch
that runs an op either way.

A Tensor holds either data (a numpy array: *eager*) or a graph Value (*traced*, inside
`irkit.function`/`grad`). `apply(op, inputs)` appends the op to the trace when any input is
traced; otherwise it builds a one-node scratch graph (so shape and dtype inference and their
errors are the op's own) and runs the op's numpy reference, `OpDef.compute`: eager results
come from the same implementation the reference runtime interprets graphs with.

dtype promotion (`result_dtype`), the rule every namespace function follows:

1. Python scalars (bool, int, float) are *weak*: they take the dtype of the arrays they meet
   (`float64_data * 100.0` stays float64, `float32_data + 1` stays float32), unless their kind
   is higher: a float scalar with integer or bool arrays gives float32 (the default float), an
   int scalar with bool arrays gives int64. Alone, they are float32 / int64 / bool.
2. Arrays (Tensors, numpy arrays, numpy scalars) are strong. Within a kind the wider wins:
   float32 with float64 is float64, int32 with int64 is int64 (as numpy, torch and JAX do:
   widening loses nothing, and the float32 operand is cast up with a visible Cast node).
3. Across kinds the higher kind's dtype wins: int64 with float32 is float32, bool with int32
   is int32 (as torch and JAX do; numpy would give float64 for int64 with float32).

The operators, methods and functions on Tensors live in `irkit.numpy`, which installs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from irkit.errors import ShapeError, TraceError
from irkit.ir import Graph, Value
from irkit.ops.base import OpDef
from irkit.ops.dtypes import onnx_dtype
from irkit.ops.registry import get_op

DEFAULT_FLOAT = np.dtype(np.float32)
DEFAULT_INT = np.dtype(np.int64)

_ACTIVE: list[Graph] = []  # the graphs being traced now (innermost last)


@contextlib.contextmanager
def tracing(graph: Graph) -> Iterator[None]:
    """Mark `graph` as being traced: Tensors of it may be used until the block ends."""
    _ACTIVE.append(graph)
    try:
        yield
    finally:
        _ACTIVE.pop()


class Tensor:
    """An n-dimensional array: concrete data (eager) or a Value of a graph being traced.

    Make one with `irkit.tensor(data)` (or `Tensor(data)`); Python floats become float32,
    numpy arrays keep their dtype. The operators and methods (`+`, `@`, `[...]`, `.sum()`,
    `.T`, `.at[...]`) come from `irkit.numpy` and work the same in both modes.
    """

    __slots__ = ("_data", "_value")
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__
    __hash__ = None  # == is elementwise, as in numpy

    def __init__(self, data: Any, dtype: Any = None) -> None:
        if isinstance(data, Tensor):
            data = data.numpy()
        self._data: np.ndarray | None = as_array(data, dtype)
        self._value: Value | None = None

    @classmethod
    def _traced(cls, value: Value) -> Tensor:
        t = cls.__new__(cls)
        t._data, t._value = None, value
        return t

    @classmethod
    def _eager(cls, data: np.ndarray) -> Tensor:
        t = cls.__new__(cls)
        t._data, t._value = data, None
        return t

    # ---- what it is -----------------------------------------------------------------------
    @property
    def is_traced(self) -> bool:
        """True inside a trace (the Tensor stands for a graph Value, not data)."""
        return self._value is not None

    @property
    def value(self) -> Value:
        """The graph Value of a traced Tensor (TraceError for an eager one)."""
        if self._value is None:
            raise TraceError("this Tensor is concrete data, not a traced graph Value")
        return self._value

    @property
    def shape(self) -> tuple:
        return self._data.shape if self._value is None else self._value.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype if self._value is None else self._value.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        dims = self.shape
        if not all(isinstance(d, int) for d in dims):
            raise TraceError(f"{self._label()} has symbolic dims {dims}; its size is not known")
        return int(np.prod(dims, dtype=np.int64))

    def numpy(self) -> np.ndarray:
        """The data as a numpy array (TraceError inside a trace, where there is none yet)."""
        if self._value is not None:
            raise TraceError(f"{self._label()} has no data while tracing; return it from the "
                             "function to get its value, or use irkit.numpy functions on it")
        return self._data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self.numpy()
        return data if dtype is None else data.astype(dtype)

    def item(self) -> Any:
        return self.numpy().item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self._concrete("float()"))

    def __int__(self) -> int:
        return int(self._concrete("int()"))

    def __index__(self) -> int:
        return self._concrete("an index").__index__()

    def __bool__(self) -> bool:
        return bool(self._concrete("a Python `if`, `while`, `and`/`or` or bool()"))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def __getattr__(self, name: str) -> Any:
        # a traced Tensor answers as its Value does (graph, name, rank), so code written for
        # Values keeps working when a function's arguments arrive as Tensors
        value = object.__getattribute__(self, "_value")
        if value is not None and name in ("graph", "name", "rank", "producer", "uses"):
            return getattr(value, name)
        raise AttributeError(f"'Tensor' object has no attribute {name!r}")

    @classmethod
    def __irkit_apply__(cls, opdef: OpDef, inputs: Sequence[Any], attributes: dict[str, Any],
                        num_outputs: int | None) -> Any:
        """`irkit.ops.X(...)` called with Tensors: numbers and arrays among the inputs take
        the op's fixed input dtype or the first float Tensor's dtype, as ops' constants do."""
        tensors = [x for x in inputs if isinstance(x, Tensor)]
        ref = next((t for t in tensors if t.dtype.kind == "f"), tensors[0]).dtype
        converted = []
        for i, x in enumerate(inputs):
            if isinstance(x, Value):
                x = Tensor._traced(x)
            elif x is not None and not isinstance(x, Tensor):
                a = np.asarray(x)
                x = np.asarray(a, dtype=opdef.input_dtypes.get(
                    i, a.dtype if a.dtype == np.bool_ else ref))
            converted.append(x)
        return apply(opdef, converted, attributes, num_outputs=num_outputs)

    def __repr__(self) -> str:
        if self._value is not None:
            return f"Tensor(traced {self._value.name!r}, {self.dtype}, shape={self.shape})"
        body = np.array2string(self._data, separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype})"

    def _label(self) -> str:
        return f"traced value {self._value.name!r}" if self._value is not None else "Tensor"

    def _concrete(self, use: str) -> np.ndarray:
        if self._value is not None:
            raise TraceError(f"{use} on {self._label()} inside a traced function: its value is "
                             "not known while tracing; use inp.where(cond, a, b) (or "
                             "inp.maximum/minimum) instead of a Python branch")
        return self._data


def as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """Data as a numpy array: numpy inputs keep their dtype, Python floats become float32 and
    Python ints int64 (the default dtypes), unless `dtype` is given."""
    if dtype is not None:
        return np.asarray(data.numpy() if isinstance(data, Tensor) else data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        return np.asarray(data)
    a = np.asarray(data)
    if a.dtype.kind == "f":
        return a.astype(DEFAULT_FLOAT)
    if a.dtype.kind in "iu":
        return a.astype(DEFAULT_INT)
    return a


# ---- dtype promotion ------------------------------------------------------------------------
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _weak_kind(x: Any) -> str | None:
    """'b', 'i' or 'f' for a Python scalar (weakly typed), None for anything with a dtype."""
    if isinstance(x, (np.generic, np.ndarray)):
        return None
    if isinstance(x, bool):
        return "b"
    if isinstance(x, int):
        return "i"
    if isinstance(x, float):
        return "f"
    return None


def dtype_of(x: Any) -> np.dtype:
    """The dtype of a Tensor, Value or array-like (Python data by `as_array`'s defaults)."""
    if isinstance(x, (Tensor, Value)):
        return x.dtype
    return as_array(x).dtype


def _join(a: np.dtype, b: np.dtype) -> np.dtype:
    ra, rb = _KIND_RANK.get(a.kind, 9), _KIND_RANK.get(b.kind, 9)
    if ra != rb:
        return a if ra > rb else b  # int with float: the float's dtype (torch, JAX)
    return np.promote_types(a, b)


def result_dtype(*operands: Any) -> np.dtype:
    """The dtype `operands` compute in (the module docstring's rule)."""
    strong = [dtype_of(x) for x in operands if _weak_kind(x) is None]
    weak = [_weak_kind(x) for x in operands if _weak_kind(x) is not None]
    if not strong:
        kinds = set(weak)
        return DEFAULT_FLOAT if "f" in kinds else DEFAULT_INT if "i" in kinds else np.dtype(bool)
    result = strong[0]
    for d in strong[1:]:
        result = _join(result, d)
    rank = _KIND_RANK.get(result.kind, 9)
    if "f" in weak and rank < 2:
        return DEFAULT_FLOAT
    if "i" in weak and rank < 1:
        return DEFAULT_INT
    return result


def coerce(x: Any, dtype: Any) -> Any:
    """`x` in `dtype`: a Tensor or Value of another dtype gets a Cast; data is converted now."""
    dtype = np.dtype(dtype)
    if isinstance(x, (Tensor, Value)):
        return x if x.dtype == dtype else apply("Cast", [x], {"to": onnx_dtype(dtype)})
    return np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=dtype)


# ---- the dispatch ---------------------------------------------------------------------------
def _traced_graph(inputs: Sequence[Any], what: str) -> Graph | None:
    """The graph being traced that traced inputs belong to; None when all are concrete."""
    graphs = [x.graph if isinstance(x, Value) else x._value.graph for x in inputs
              if isinstance(x, Value) or (isinstance(x, Tensor) and x._value is not None)]
    if not graphs:
        return None
    graph = graphs[0]
    for x in inputs:
        if isinstance(x, Tensor) and x._value is not None \
                and not any(x._value.graph is g for g in _ACTIVE):
            raise TraceError(f"{what} on {x._label()} after its trace ended: a traced value "
                             "lives only inside its function; return it from the function")
    if any(g is not graph for g in graphs):
        raise TraceError(f"{what} mixes values of two traces; pass values between traced "
                         "functions as arguments")
    return graph


def to_value(graph: Graph, x: Any) -> Value | None:
    """`x` as a Value of `graph`: a traced Tensor's Value, or its data as a constant."""
    if x is None or isinstance(x, Value):
        return x
    if isinstance(x, Tensor):
        return x._value if x._value is not None else graph.constant(x._data)
    return graph.constant(np.asarray(x))


def apply(op: str | OpDef, inputs: Sequence[Any], attributes: dict[str, Any] | None = None,
          *, num_outputs: int | None = None) -> Any:
    """Run op `op` on `inputs` (Tensors, Values, arrays or None): append it to the trace when
    an input is traced, else compute it now with its numpy reference. Returns a Tensor, or a
    tuple of them for several outputs. Data inputs are used in the dtype they have."""
    opdef = op if isinstance(op, OpDef) else get_op(op)
    graph = _traced_graph(inputs, opdef.op_type)
    if graph is not None:
        values = [to_value(graph, x) for x in inputs]
        node = opdef.add_to(graph, values, attributes, num_outputs=num_outputs)
        outs = [Tensor._traced(v) for v in node.outputs]
    else:
        outs = _eager(opdef, inputs, attributes, num_outputs)
    return outs[0] if len(outs) == 1 else tuple(outs)


_NODES: dict[tuple, Any] = {}  # signature -> the typed scratch node of an eager op
_NODES_KEPT = 4096


def _signature(opdef: OpDef, inputs: Sequence[Any], attributes: dict[str, Any] | None,
               num_outputs: int | None) -> tuple | None:
    """What an eager op's inference depends on: the op, its attributes, the dtype and shape
    of each data input and the bytes of each constant one; None if an attribute is not
    hashable (then nothing is cached)."""
    parts: list[Any] = [id(opdef), num_outputs]
    for k, v in sorted((attributes or {}).items()):
        v = tuple(v) if isinstance(v, list) else v.tobytes() if isinstance(v, np.ndarray) else v
        parts.append((k, v))
    for x in inputs:
        if isinstance(x, Tensor):
            parts.append((x._data.dtype.str, x._data.shape))
        elif x is None:
            parts.append(None)
        else:
            a = np.asarray(x)
            if a.size > 64:  # a large constant (gather indices): not worth a key
                return None
            parts.append((a.dtype.str, a.shape, a.tobytes()))
    try:
        key = tuple(parts)
        hash(key)
    except TypeError:
        return None
    return key


def _eager(opdef: OpDef, inputs: Sequence[Any], attributes: dict[str, Any] | None,
           num_outputs: int | None) -> list[Tensor]:
    """The op on a one-node scratch graph: its inference checks the inputs (and names the
    problem), then its numpy reference computes, each result in its inferred dtype. The typed
    node is kept per signature, so repeated eager calls skip inference."""
    arrays = [None if x is None else x._data if isinstance(x, Tensor) else np.asarray(x)
              for x in inputs]
    key = _signature(opdef, inputs, attributes, num_outputs)
    node = _NODES.get(key) if key is not None else None
    if node is None:
        scratch = Graph("eager")
        values = [None if a is None else scratch.add_input(f"x{i}", a.dtype, a.shape)
                  if isinstance(x, Tensor) else scratch.constant(a)
                  for i, (x, a) in enumerate(zip(inputs, arrays))]
        node = opdef.add_to(scratch, values, attributes, num_outputs=num_outputs)
        if key is not None:
            if len(_NODES) >= _NODES_KEPT:
                _NODES.pop(next(iter(_NODES)))
            _NODES[key] = node
    results = opdef.compute(node, arrays)
    return [Tensor._eager(np.asarray(r, dtype=out.dtype))
            for r, out in zip(results, node.outputs)]


def unwrap_output(graph: Graph, x: Any, where: str) -> Value:
    """A traced function's result as a Value of `graph`; ShapeError for anything else."""
    if isinstance(x, Tensor):
        if x._value is not None and x._value.graph is not graph:
            raise TraceError(f"{where} returned a value of another trace")
        return to_value(graph, x)
    if isinstance(x, Value):
        return x
    raise ShapeError(f"{where} returned {type(x).__name__}, not a graph Value; return "
                     "expressions of its inputs")


def is_traced(x: Any) -> bool:
    """True for a Value or a traced Tensor."""
    return isinstance(x, Value) or (isinstance(x, Tensor) and x._value is not None)
