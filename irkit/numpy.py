"""irkit's numpy-like namespace: `import irkit.numpy as inp` (the same functions are on
`irkit`: `irkit.tensor`, `irkit.softmax`, ...).

    x = inp.tensor([[1.0, 2.0], [3.0, 4.0]])
    (x @ x.T).sum(axis=1), inp.softmax(x), x[:, 0], x.at[0, 1].set(5.0)   # computed now

    @irkit.grad                       # the same calls, traced into a graph
    def loss(w):
        return inp.cross_entropy(x @ w, labels)

Outside a trace a function computes at once, through the op's numpy reference (`OpDef.compute`,
the one implementation the reference runtime also runs); inside `irkit.function`/`grad` it
appends the op to the graph, as `jax.numpy` does under `jit`. dtypes follow
`irkit.tensors.result_dtype` (Python scalars are weak; float32 with float64 is float64; int
with float is the float). numpy's own functions on a Tensor call these where irkit has the
function (`np.exp(t)`, `np.sum(t, axis=0)`); others compute with numpy on eager Tensors (a
numpy result) and fail in one line inside a trace.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from irkit.errors import TraceError
from irkit.tensor_math import (
    absolute,
    add,
    arccos,
    arcsin,
    arctan,
    argmax,
    argmin,
    astype,
    binary_cross_entropy,
    ceil,
    clip,
    cos,
    cosh,
    cross_entropy,
    divide,
    dot,
    equal,
    exp,
    floor,
    floor_divide,
    greater,
    greater_equal,
    less,
    less_equal,
    log,
    log1p,
    log_softmax,
    logical_and,
    logical_not,
    logical_or,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    multiply,
    negative,
    not_equal,
    power,
    prod,
    reciprocal,
    relu,
    sigmoid,
    sign,
    sin,
    sinh,
    softmax,
    softplus,
    sqrt,
    square,
    std,
    subtract,
    sum,
    tan,
    tanh,
    var,
    where,
)
from irkit.tensor_shape import (
    At,
    broadcast_to,
    concatenate,
    expand_dims,
    getitem,
    ravel,
    reshape,
    squeeze,
    stack,
    swapaxes,
    transpose,
)
from irkit.tensors import DEFAULT_FLOAT, Tensor, as_array, is_traced

abs = absolute  # noqa: A001


# ---- creation -----------------------------------------------------------------------------------
def tensor(data: Any, dtype: Any = None) -> Tensor:
    """A Tensor of `data`: numpy arrays keep their dtype, Python floats become float32 and
    Python ints int64 (torch's and JAX's defaults), unless `dtype` is given."""
    return Tensor(data, dtype)


asarray = array = tensor


def zeros(shape: Any, dtype: Any = DEFAULT_FLOAT) -> Tensor:
    """A Tensor of zeros (float32 unless `dtype` says otherwise)."""
    return Tensor(np.zeros(shape, dtype))


def ones(shape: Any, dtype: Any = DEFAULT_FLOAT) -> Tensor:
    """A Tensor of ones (float32 unless `dtype` says otherwise)."""
    return Tensor(np.ones(shape, dtype))


def full(shape: Any, value: Any, dtype: Any = None) -> Tensor:
    """A Tensor of `value` everywhere (its dtype by `tensor`'s defaults unless given)."""
    return Tensor(np.full(shape, as_array(value, dtype)))


def _like(x: Any, fill: Any, dtype: Any) -> Tensor:
    shape, dt = np.shape(x) if not isinstance(x, Tensor) else x.shape, dtype or _dtype(x)
    return Tensor(np.full(shape, fill, dt))


def _dtype(x: Any) -> np.dtype:
    return x.dtype if isinstance(x, Tensor) else as_array(x).dtype


def zeros_like(x: Any, dtype: Any = None) -> Tensor:
    """Zeros of x's shape and dtype."""
    return _like(x, 0, dtype)


def ones_like(x: Any, dtype: Any = None) -> Tensor:
    """Ones of x's shape and dtype."""
    return _like(x, 1, dtype)


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    """start, start + step, ... below stop (int64 for ints, float32 for floats)."""
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return Tensor(values.tolist() if dtype is None else values, dtype)


def linspace(start: float, stop: float, num: int = 50, dtype: Any = DEFAULT_FLOAT) -> Tensor:
    """`num` evenly spaced numbers from start to stop (both included)."""
    return Tensor(np.linspace(start, stop, num), dtype)


def eye(n: int, m: int | None = None, dtype: Any = DEFAULT_FLOAT) -> Tensor:
    """The identity matrix (n x m)."""
    return Tensor(np.eye(n, m), dtype)


class _Random:
    """Random tensors. Every function takes `seed=`; without one it draws from irkit's own
    generator, which `irkit.random.seed(n)` resets (as torch.manual_seed does)."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)

    def seed(self, seed: int) -> None:
        """Reset the generator that draws when no `seed=` is given."""
        self._rng = np.random.default_rng(seed)

    def _gen(self, seed: int | None) -> np.random.Generator:
        return self._rng if seed is None else np.random.default_rng(seed)

    def normal(self, shape: Any = (), mean: float = 0.0, std: float = 1.0, *,
               seed: int | None = None, dtype: Any = DEFAULT_FLOAT) -> Tensor:
        """Normal draws of mean `mean` and standard deviation `std`."""
        return Tensor(self._gen(seed).normal(mean, std, shape), dtype)

    def uniform(self, shape: Any = (), low: float = 0.0, high: float = 1.0, *,
                seed: int | None = None, dtype: Any = DEFAULT_FLOAT) -> Tensor:
        """Uniform draws from [low, high)."""
        return Tensor(self._gen(seed).uniform(low, high, shape), dtype)

    def randint(self, low: int, high: int, shape: Any = (), *,
                seed: int | None = None) -> Tensor:
        """Integers (int64) from [low, high)."""
        return Tensor(self._gen(seed).integers(low, high, shape, dtype=np.int64))

    def permutation(self, n: int, *, seed: int | None = None) -> Tensor:
        """0 .. n-1 in a random order (int64)."""
        return Tensor(self._gen(seed).permutation(n).astype(np.int64))


random = _Random()


# ---- numpy's own functions on Tensors ------------------------------------------------------
# numpy ufunc / function name -> irkit function (the irkit name where it differs from numpy's)
UFUNCS = {
    "add": add, "subtract": subtract, "multiply": multiply, "divide": divide,
    "true_divide": divide, "floor_divide": floor_divide, "power": power,
    "negative": negative, "absolute": absolute, "sign": sign, "exp": exp, "log": log,
    "log1p": log1p, "sqrt": sqrt, "square": square, "sin": sin, "cos": cos, "tan": tan,
    "arcsin": arcsin, "arccos": arccos, "arctan": arctan, "sinh": sinh, "cosh": cosh,
    "tanh": tanh, "floor": floor, "ceil": ceil, "reciprocal": reciprocal,
    "maximum": maximum, "minimum": minimum, "equal": equal, "not_equal": not_equal,
    "less": less, "less_equal": less_equal, "greater": greater,
    "greater_equal": greater_equal, "logical_and": logical_and, "logical_or": logical_or,
    "logical_not": logical_not, "matmul": matmul,
}
FUNCTIONS = {
    "sum": sum, "mean": mean, "max": max, "amax": max, "min": min, "amin": min,
    "prod": prod, "var": var, "std": std, "argmax": argmax, "argmin": argmin,
    "reshape": reshape, "ravel": ravel, "transpose": transpose, "swapaxes": swapaxes,
    "concatenate": concatenate, "stack": stack, "expand_dims": expand_dims,
    "squeeze": squeeze, "broadcast_to": broadcast_to, "where": where, "clip": clip,
    "dot": dot, "matmul": matmul, "zeros_like": zeros_like, "ones_like": ones_like,
    "abs": absolute, "absolute": absolute, "exp": exp, "log": log, "sqrt": sqrt,
    "tanh": tanh, "maximum": maximum, "minimum": minimum,
}


def _any_traced(args: Any) -> bool:
    if isinstance(args, (list, tuple)):
        return builtins.any(_any_traced(a) for a in args)
    if isinstance(args, dict):
        return builtins.any(_any_traced(a) for a in args.values())
    return is_traced(args)


def _to_numpy(args: Any) -> Any:
    if isinstance(args, Tensor):
        return args.numpy()
    if isinstance(args, (list, tuple)):
        return type(args)(_to_numpy(a) for a in args)
    if isinstance(args, dict):
        return {k: _to_numpy(v) for k, v in args.items()}
    return args


def _numpy_fallback(name: str, fn: Any, args: tuple, kwargs: dict) -> Any:
    """numpy's own `fn` on the data of eager Tensors; one line inside a trace."""
    if _any_traced(args) or _any_traced(kwargs):
        raise TraceError(f"numpy.{name} cannot run on a traced value and irkit.numpy has no "
                         f"{name}; write it with irkit.numpy functions, or compute it outside "
                         "the traced function")
    return fn(*_to_numpy(args), **_to_numpy(kwargs))


def _array_ufunc(self: Tensor, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    fn = UFUNCS.get(ufunc.__name__)
    if fn is not None and method == "__call__" and not kwargs:
        return fn(*inputs)
    if fn is not None and _any_traced(inputs):
        raise TraceError(f"numpy.{ufunc.__name__}.{method} (or its keyword arguments) on a "
                         f"traced value: call inp.{fn.__name__}(...) instead")
    return _numpy_fallback(ufunc.__name__, getattr(ufunc, method), inputs, kwargs)


def _array_function(self: Tensor, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
    fn = FUNCTIONS.get(func.__name__)
    if fn is not None:
        try:
            return fn(*args, **kwargs)
        except TypeError:
            if _any_traced(args):
                raise TraceError(f"numpy.{func.__name__} with these arguments on a traced "
                                 f"value: call inp.{fn.__name__}(...) instead") from None
    return _numpy_fallback(func.__name__, func, args, kwargs)


def _install_tensor_methods() -> None:
    """Give Tensor its operators and methods (the namespace sits above irkit.tensors)."""
    methods = {
        "__add__": add, "__radd__": lambda a, b: add(b, a),
        "__sub__": subtract, "__rsub__": lambda a, b: subtract(b, a),
        "__mul__": multiply, "__rmul__": lambda a, b: multiply(b, a),
        "__truediv__": divide, "__rtruediv__": lambda a, b: divide(b, a),
        "__floordiv__": floor_divide, "__rfloordiv__": lambda a, b: floor_divide(b, a),
        "__pow__": power, "__rpow__": lambda a, b: power(b, a),
        "__matmul__": matmul, "__rmatmul__": lambda a, b: matmul(b, a),
        "__neg__": negative, "__pos__": lambda a: a, "__abs__": absolute,
        "__eq__": equal, "__ne__": not_equal, "__lt__": less, "__le__": less_equal,
        "__gt__": greater, "__ge__": greater_equal,
        "__and__": logical_and, "__or__": logical_or, "__invert__": logical_not,
        "__getitem__": getitem, "__array_ufunc__": _array_ufunc,
        "__array_function__": _array_function,
        "sum": sum, "mean": mean, "max": max, "min": min, "prod": prod, "var": var,
        "std": std, "argmax": argmax, "argmin": argmin, "reshape": reshape,
        "transpose": lambda a, *axes: transpose(a, axes[0] if len(axes) == 1 and not
                                                np.isscalar(axes[0]) else (axes or None)),
        "squeeze": squeeze, "ravel": ravel, "flatten": ravel, "astype": astype,
        "clip": clip, "exp": exp, "log": log, "sqrt": sqrt, "tanh": tanh,
        "sigmoid": sigmoid, "relu": relu, "softmax": softmax, "abs": absolute,
        "T": property(lambda a: transpose(a)), "at": property(At),
    }
    for name, fn in methods.items():
        setattr(Tensor, name, fn)


_install_tensor_methods()

__all__ = [
    "Tensor", "abs", "absolute", "add", "arange", "arccos", "arcsin", "arctan", "argmax",
    "argmin", "array", "asarray", "astype", "binary_cross_entropy", "broadcast_to", "ceil",
    "clip", "concatenate", "cos", "cosh", "cross_entropy", "divide", "dot", "equal", "exp",
    "expand_dims", "eye", "floor", "floor_divide", "full", "greater", "greater_equal", "less",
    "less_equal", "linspace", "log", "log1p", "log_softmax", "logical_and", "logical_not",
    "logical_or", "logsumexp", "matmul", "max", "maximum", "mean", "min", "minimum",
    "multiply", "negative", "not_equal", "ones", "ones_like", "power", "prod", "random",
    "ravel", "reciprocal", "relu", "reshape", "sigmoid", "sign", "sin", "sinh", "softmax",
    "softplus", "sqrt", "square", "squeeze", "stack", "std", "subtract", "sum", "swapaxes",
    "tan", "tanh", "tensor", "transpose", "var", "where", "zeros", "zeros_like",
]
