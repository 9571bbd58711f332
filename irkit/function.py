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
from irkit.trees import LEAF, count, flatten, paths, unflatten


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

    def build(self, graph: Graph, inputs: list[Value],
              trees: Sequence[tuple] | None = None) -> list[Value]:
        """Append this function's computation to `graph`; return its outputs. `inputs` are the
        leaves of the arguments, whose structures `trees` gives (None: each input is one).
        `fn` gets traced Tensors (they also work with `irkit.ops`, as Values do)."""
        import irkit.numpy  # noqa: F401  (Tensor's operators, for fn's traced arguments)
        args = _arguments(trees, [Tensor._traced(v) for v in inputs])
        with tracing(graph):
            out = self.fn(*args)
        return [unwrap_output(graph, o, self.name) for o in _flat(out)]

    def trace(self, *args: Any) -> Graph:
        """The graph of this function for inputs like `args` (arrays or `Input`s, or dicts,
        lists and tuples of them: one graph input per leaf, named `arg.key`)."""
        graph = Graph(self.name)
        flat = [flatten(a) for a in args]
        inputs = []
        for (leaves, tree), name in zip(flat, _arg_names(self.fn, len(args))):
            for leaf, path in zip(leaves, paths(tree, name)):
                s = _spec(leaf)
                inputs.append(graph.add_input(s.name or path, s.dtype, s.shape))
        outs = self.build(graph, inputs, [tree for _, tree in flat])
        for o in outs:  # each output its own value, even where fn returns one twice
            graph.outputs.append(ops.own_output(o, graph.outputs))
        from irkit.passes import simplify
        simplify(graph)
        return graph

    def __call__(self, *args: Any) -> Any:
        flat = [flatten(a) for a in args]
        trees = tuple(tree for _, tree in flat)
        leaves = [leaf for ls, _ in flat for leaf in ls]
        if any(is_traced(a) for a in leaves):  # called inside another trace: inline it
            graph = next(a.graph for a in leaves if is_traced(a))
            outs = self.build(graph, [to_value(graph, a) for a in leaves], trees)
            return self._shaped([Tensor._traced(v) for v in outs], trees)
        arrays = [np.asarray(a, dtype=_spec(a).dtype) for a in leaves]
        key = (trees, tuple((a.shape, a.dtype.str) for a in arrays))
        compiled = self._compiled.get(key)
        if compiled is None:
            from irkit.runtimes import get_runtime
            graph = self.trace(*_arguments(trees, arrays))
            compiled = get_runtime(self.runtime, self.device).compile(graph)
            self._compiled[key] = compiled
        results = compiled(dict(zip(compiled.input_names, arrays)))
        return self._shaped(list(results), trees)

    def _shaped(self, results: list[Any], trees: Sequence[tuple]) -> Any:
        """The results as the caller sees them: one, or a tuple of several."""
        return results[0] if len(results) == 1 else tuple(results)


def _arguments(trees: Sequence[tuple] | None, leaves: list[Any]) -> list[Any]:
    """The arguments rebuilt from their leaves (each leaf is one where `trees` is None)."""
    if trees is None:
        return list(leaves)
    args, start = [], 0
    for tree in trees:
        n = count(tree)
        args.append(unflatten(tree, leaves[start:start + n]))
        start += n
    return args


def _flat(out: Any) -> list[Any]:
    """A function's results in order, nested tuples and lists opened ((loss, (a, b)))."""
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in _flat(o)]
    return [out]


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
                 cotangent: bool, has_aux: bool = False) -> None:
        super().__init__(base.fn, base.runtime, base.device, name=f"grad_{base.name}")
        self.base, self.wrt, self.of = base, _wrt(wrt), of
        self.single = isinstance(wrt, int)  # one gradient, not a tuple of them (JAX argnums)
        self.with_value, self.cotangent, self.has_aux = with_value, cotangent, has_aux

    def _shaped(self, results: list[Any], trees: Sequence[tuple]) -> Any:
        """As JAX returns them: `grad` gives the gradient (wrt an int) or a tuple of them (wrt
        a sequence), each shaped like its argument (dicts, lists, tuples); `value_and_grad`
        (value, grads); with has_aux, (grads, aux) and ((value, aux), grads), aux one result
        or a tuple of several."""
        value, results = (results[0], results[1:]) if self.with_value else (None, results)
        n_aux = len(results) - sum(count(trees[i]) for i in self.wrt)
        aux, grads = results[:n_aux], _arguments([trees[i] for i in self.wrt],
                                                 results[n_aux:])
        grads = grads[0] if self.single else tuple(grads)
        aux = aux[0] if len(aux) == 1 else tuple(aux)
        if self.with_value:
            return ((value, aux), grads) if self.has_aux else (value, grads)
        return (grads, aux) if self.has_aux else grads

    def build(self, graph: Graph, inputs: list[Value],
              trees: Sequence[tuple] | None = None) -> list[Value]:
        from irkit.passes import gradients
        trees, seed = list(trees or [LEAF] * len(inputs)), None
        if self.cotangent:  # a vjp's last argument is the cotangent of the output
            if len(trees) < 2 or trees[-1] != LEAF:
                raise ShapeError(f"vjp of {self.base.name}: pass the inputs, then the cotangent "
                                 "(one array)")
            inputs, seed, trees = inputs[:-1], inputs[-1], trees[:-1]
        outs = self.base.build(graph, inputs, trees)
        if self.has_aux and len(outs) < 2:
            raise ShapeError(f"{self.base.name} returned one result; with has_aux=True return "
                             "(value, aux)")
        if not 0 <= self.of < len(outs):
            raise ShapeError(f"{self.base.name} has {len(outs)} outputs; `of={self.of}` is none")
        y = outs[self.of]
        for i in self.wrt:
            if not 0 <= i < len(trees):
                raise ShapeError(f"{self.base.name} has {len(trees)} inputs; wrt={i} is none")
        if seed is not None and _static(seed.shape) and _static(y.shape) \
                and seed.shape != y.shape:
            raise ShapeError(f"vjp of {self.base.name}: the cotangent has shape {seed.shape}, "
                             f"the output {y.shape}; pass one shaped like the output")
        starts = np.cumsum([0] + [count(t) for t in trees])
        grads = gradients(graph, y, [inputs[j] for i in self.wrt
                                     for j in range(starts[i], starts[i + 1])], seed)
        aux = outs[1:] if self.has_aux else []
        return ([y] if self.with_value else []) + aux + grads


def _static(shape: Shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _wrt(wrt: int | Sequence[int]) -> list[int]:
    return [wrt] if isinstance(wrt, int) else list(wrt)


def grad(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0, *,
         argnums: int | Sequence[int] | None = None, has_aux: bool = False) -> Function:
    """d fn(...)[of] / d args[wrt]; fn's output must be a scalar (use `vjp` otherwise). One
    gradient for `wrt` an int, a tuple of them for a sequence (`argnums` is JAX's name for
    `wrt`). With has_aux, fn returns (value, aux) and the call gives (grads, aux)."""
    wrt = wrt if argnums is None else argnums
    return _Transformed(function(fn), wrt, 0 if has_aux else of, with_value=False,
                        cotangent=False, has_aux=has_aux)


def value_and_grad(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0, *,
                   argnums: int | Sequence[int] | None = None,
                   has_aux: bool = False) -> Function:
    """`(value, grads)` in one graph, as `jax.value_and_grad` returns them: value is
    fn(...)[of]; grads is the gradient wrt one argument (`wrt` an int) or a tuple of them, one
    per entry of `wrt` (a sequence; `argnums` is JAX's name for it). With has_aux, fn returns
    (value, aux) and the call gives ((value, aux), grads)."""
    wrt = wrt if argnums is None else argnums
    return _Transformed(function(fn), wrt, 0 if has_aux else of, with_value=True,
                        cotangent=False, has_aux=has_aux)


def vjp(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0) -> Function:
    """Vector-Jacobian product: call it with the inputs and then the cotangent of the output."""
    return _Transformed(function(fn), wrt, of, with_value=False, cotangent=True)


MAX_JACOBIAN_ROWS = 4096  # output elements, one reverse pass each


class _Jacobian(_Transformed):
    """The full Jacobian of a small function: one reverse pass per output element, in one
    graph. Each result has shape output.shape + argument.shape (JAX's `jacrev` layout)."""

    def build(self, graph: Graph, inputs: list[Value],
              trees: Sequence[tuple] | None = None) -> list[Value]:
        from irkit.passes import gradients
        from irkit.tensor_shape import reshape, stack
        trees = list(trees or [LEAF] * len(inputs))
        outs = self.base.build(graph, inputs, trees)
        if not 0 <= self.of < len(outs):
            raise ShapeError(f"{self.base.name} has {len(outs)} outputs; `of={self.of}` is none")
        y = outs[self.of]
        if not _static(y.shape):
            raise ShapeError(f"jacobian of {self.base.name}: its output's shape {y.shape} is not "
                             "known when traced; pass arrays of fixed shape")
        rows = int(np.prod(y.shape, dtype=np.int64))
        if rows > MAX_JACOBIAN_ROWS:
            raise ShapeError(f"jacobian of {self.base.name}: the output has {rows} elements (one "
                             f"pass each, at most {MAX_JACOBIAN_ROWS}); use vjp for products")
        starts = np.cumsum([0] + [count(t) for t in trees])
        wrt = [inputs[j] for i in self.wrt for j in range(starts[i], starts[i + 1])]
        seeds = np.eye(rows, dtype=y.dtype).reshape((rows, *y.shape))  # row k: d out[k]
        per_row = [gradients(graph, y, wrt, graph.constant(seed)) for seed in seeds]
        with tracing(graph):
            return [to_value(graph, reshape(stack([Tensor._traced(g[i]) for g in per_row]),
                                            tuple(y.shape) + tuple(w.shape)))
                    for i, w in enumerate(wrt)]


def jacobian(fn: Callable[..., Any], wrt: int | Sequence[int] = 0, of: int = 0, *,
             argnums: int | Sequence[int] | None = None) -> Function:
    """d fn(...)[of] / d args[wrt] as a full matrix, shaped output.shape + argument.shape (one
    for `wrt` an int, a tuple for a sequence), for functions with up to MAX_JACOBIAN_ROWS
    output elements; JAX's `jacrev`."""
    wrt = wrt if argnums is None else argnums
    return _Jacobian(function(fn), wrt, of, with_value=False, cotangent=False)


def hessian(fn: Callable[..., Any], wrt: int = 0) -> Function:
    """The matrix of second derivatives of a scalar fn wrt one argument, shaped
    argument.shape * 2: the Jacobian of its gradient."""
    if not isinstance(wrt, int):
        raise ShapeError("hessian takes one argument index (wrt=0); for several, call it per "
                         "argument")
    return jacobian(grad(fn, wrt), wrt)
