"""The low-level Python API: trace a function of tensors into a graph, differentiate it, run it.

    f = irkit.function(lambda x: ((x - np.array([3.0, -2.0])) ** 2).sum())
    df = irkit.grad(f)            # d f / d x, itself a traced function
    df(np.zeros(2))               # -> array([-6.,  4.])
    df.trace(np.zeros(2))         # the gradient graph, to inspect or export

A function is traced once per input signature (shapes and dtypes) and compiled for a runtime
(onnxruntime by default, or the numpy `reference` interpreter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from irkit import ops
from irkit.errors import ShapeError
from irkit.ir import Graph, Shape, Value
from irkit.tensors import Tensor, is_traced, to_value, tracing, unwrap_output


@dataclass(frozen=True)
class Input:
    """A traced input's description: shape (ints, symbolic names or None) and dtype."""

    shape: Shape
    dtype: Any = np.float32
    name: str | None = None


def _spec(x: Any) -> Input:
    if isinstance(x, Input):
        return x
    a = np.asarray(x)
    numpy_typed = isinstance(x, (np.ndarray, np.generic, Tensor))  # Python floats: float32
    dtype = np.float32 if a.dtype == np.float64 and not numpy_typed else a.dtype
    return Input(a.shape, dtype)


class Function:
    """A Python function of Values, traced into a Graph per signature and run on a runtime."""

    def __init__(self, fn: Callable[..., Any], runtime: str = "onnxruntime",
                 device: str = "cpu", name: str | None = None) -> None:
        self.fn = fn
        self.runtime, self.device = runtime, device
        self.name = name or getattr(fn, "__name__", "function").strip("<>")
        self._compiled: dict[tuple, Any] = {}

    def build(self, graph: Graph, inputs: list[Value]) -> list[Value]:
        """Append this function's computation to `graph`; return its outputs. `fn` gets its
        arguments as traced Tensors (they also work with `irkit.ops`, as Values do)."""
        with tracing(graph):
            out = self.fn(*[Tensor._traced(v) for v in inputs])
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        return [unwrap_output(graph, o, self.name) for o in outs]

    def trace(self, *args: Any) -> Graph:
        """The graph of this function for inputs like `args` (arrays or `Input`s)."""
        graph = Graph(self.name)
        specs = [_spec(a) for a in args]
        names = _arg_names(self.fn, len(specs))
        inputs = [graph.add_input(s.name or n, s.dtype, s.shape) for s, n in zip(specs, names)]
        outs = self.build(graph, inputs)
        for o in outs:  # each output its own value, even where fn returns one twice
            graph.outputs.append(ops.own_output(o, graph.outputs))
        from irkit.passes import simplify
        simplify(graph)
        return graph

    def __call__(self, *args: Any) -> Any:
        if any(is_traced(a) for a in args):  # called inside another trace: inline it
            graph = next(a.graph for a in args if is_traced(a))
            outs = [Tensor._traced(v) for v in self.build(graph, [to_value(graph, a)
                                                                 for a in args])]
            return self._shaped(outs)
        arrays = [np.asarray(a, dtype=_spec(a).dtype) for a in args]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        compiled = self._compiled.get(key)
        if compiled is None:
            from irkit.runtimes import get_runtime
            graph = self.trace(*arrays)
            compiled = get_runtime(self.runtime, self.device).compile(graph)
            self._compiled[key] = compiled
        results = compiled(dict(zip(compiled.input_names, arrays)))
        return self._shaped(list(results))

    def _shaped(self, results: list[Any]) -> Any:
        """The results as the caller sees them: one, or a tuple of several."""
        return results[0] if len(results) == 1 else tuple(results)


def _arg_names(fn: Callable[..., Any], n: int) -> list[str]:
    import inspect
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]


def function(fn: Callable[..., Any] | None = None, *, runtime: str = "onnxruntime",
             device: str = "cpu") -> Any:
    """Make a traced, runnable Function of `fn` (usable as a decorator)."""
    if fn is None:
        return lambda f: function(f, runtime=runtime, device=device)
    return fn if isinstance(fn, Function) else Function(fn, runtime, device)


class _Transformed(Function):
    """A Function whose graph is another Function's graph plus gradient nodes."""

    def __init__(self, base: Function, wrt: int | Sequence[int], of: int, with_value: bool,
                 cotangent: bool) -> None:
        super().__init__(base.fn, base.runtime, base.device, name=f"grad_{base.name}")
        self.base, self.wrt, self.of = base, _wrt(wrt), of
        self.single = isinstance(wrt, int)  # one gradient, not a tuple of them (JAX argnums)
        self.with_value, self.cotangent = with_value, cotangent

    def _shaped(self, results: list[Any]) -> Any:
        """`grad`: the gradient (wrt an int) or a tuple of them (wrt a sequence);
        `value_and_grad`: (value, that), as JAX returns them."""
        value, grads = (results[0], results[1:]) if self.with_value else (None, results)
        grads = grads[0] if self.single else tuple(grads)
        return (value, grads) if self.with_value else grads

    def build(self, graph: Graph, inputs: list[Value]) -> list[Value]:
        from irkit.passes import gradients
        seed = None
        if self.cotangent:  # a vjp's last argument is the cotangent of the output
            if len(inputs) < 2:
                raise ShapeError(f"vjp of {self.base.name}: pass the inputs, then the cotangent")
            inputs, seed = inputs[:-1], inputs[-1]
        outs = self.base.build(graph, inputs)
        if not 0 <= self.of < len(outs):
            raise ShapeError(f"{self.base.name} has {len(outs)} outputs; `of={self.of}` is none")
        y = outs[self.of]
        for i in self.wrt:
            if not 0 <= i < len(inputs):
                raise ShapeError(f"{self.base.name} has {len(inputs)} inputs; wrt={i} is none")
        if seed is not None and _static(seed.shape) and _static(y.shape) \
                and seed.shape != y.shape:
            raise ShapeError(f"vjp of {self.base.name}: the cotangent has shape {seed.shape}, "
                             f"the output {y.shape}; pass one shaped like the output")
        grads = gradients(graph, y, [inputs[i] for i in self.wrt], seed)
        return ([y] if self.with_value else []) + grads


def _static(shape: Shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _wrt(wrt: int | Sequence[int]) -> list[int]:
    return [wrt] if isinstance(wrt, int) else list(wrt)


def grad(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0) -> Function:
    """d fn(...)[of] / d args[wrt]; fn's output must be a scalar (use `vjp` otherwise). One
    gradient for `wrt` an int, a tuple of them for a sequence (as JAX's argnums)."""
    return _Transformed(function(fn), wrt, of, with_value=False, cotangent=False)


def value_and_grad(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0) -> Function:
    """`(value, grads)` in one graph, as `jax.value_and_grad` returns them: value is
    fn(...)[of]; grads is the gradient wrt one argument (`wrt` an int) or a tuple of them, one
    per entry of `wrt` (a sequence)."""
    return _Transformed(function(fn), wrt, of, with_value=True, cotangent=False)


def vjp(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0) -> Function:
    """Vector-Jacobian product: call it with the inputs and then the cotangent of the output."""
    return _Transformed(function(fn), wrt, of, with_value=False, cotangent=True)
