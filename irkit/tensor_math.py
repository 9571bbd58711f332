"""The math of `irkit.numpy`: elementwise functions, comparisons, matmul, reductions,
activations and losses. Each is a few lines over `irkit.tensors.apply` (one op, or a short
composition of ops), so it computes at once on data and builds IR inside a trace.

Inputs may be Tensors, Values, numpy arrays or Python scalars; dtypes follow
`irkit.tensors.result_dtype`. Functions that need floats (exp, log, sigmoid, `/`, mean, ...)
take integers and bools to float32, as torch and JAX do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Value
from irkit.ops.dtypes import onnx_dtype
from irkit.tensor_shape import reshape
from irkit.tensors import DEFAULT_FLOAT, DEFAULT_INT, Tensor, apply, coerce, result_dtype


def tensor_of(x: Any) -> Tensor:
    """`x` as a Tensor (data as it is: numpy dtypes kept, Python floats float32)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Value):
        return Tensor._traced(x)
    return Tensor(x)


def _floats(x: Tensor) -> Tensor:
    return x if x.dtype.kind in "fc" else astype(x, DEFAULT_FLOAT)


def astype(x: Any, dtype: Any) -> Tensor:
    """`x` converted to `dtype` (a Cast node inside a trace)."""
    x = tensor_of(x)
    return x if x.dtype == np.dtype(dtype) else apply("Cast", [x], {"to": onnx_dtype(dtype)})


def _binary(op_type: str, a: Any, b: Any, floats: bool = False) -> Tensor:
    dtype = result_dtype(a, b)
    if floats and dtype.kind not in "fc":
        dtype = DEFAULT_FLOAT
    return apply(op_type, [tensor_of(coerce(a, dtype)), tensor_of(coerce(b, dtype))])


def _unary(op_type: str, x: Any, floats: bool = True, **attributes: Any) -> Tensor:
    x = tensor_of(x)
    return apply(op_type, [_floats(x) if floats else x], attributes or None)


# ---- arithmetic -------------------------------------------------------------------------------
def add(a: Any, b: Any) -> Tensor:
    """a + b, broadcasting."""
    return _binary("Add", a, b)


def subtract(a: Any, b: Any) -> Tensor:
    """a - b, broadcasting."""
    return _binary("Sub", a, b)


def multiply(a: Any, b: Any) -> Tensor:
    """a * b, broadcasting."""
    return _binary("Mul", a, b)


def divide(a: Any, b: Any) -> Tensor:
    """a / b, true division (integers divide as float32)."""
    return _binary("Div", a, b, floats=True)


def floor_divide(a: Any, b: Any) -> Tensor:
    """a // b: floor(a / b), in the dtype of a and b."""
    dtype = result_dtype(a, b)
    return astype(floor(divide(a, b)), dtype)


def power(a: Any, b: Any) -> Tensor:
    """a ** b, broadcasting."""
    return _binary("Pow", a, b)


def maximum(a: Any, b: Any) -> Tensor:
    """The elementwise larger of a and b (ties share the gradient)."""
    return _binary("Max", a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """The elementwise smaller of a and b (ties share the gradient)."""
    return _binary("Min", a, b)


def negative(x: Any) -> Tensor:
    """-x."""
    return _unary("Neg", x, floats=False)


def absolute(x: Any) -> Tensor:
    """|x|."""
    return _unary("Abs", x, floats=False)


def sign(x: Any) -> Tensor:
    """-1, 0 or 1 by the sign of x."""
    return _unary("Sign", x, floats=False)


def square(x: Any) -> Tensor:
    """x * x."""
    x = tensor_of(x)
    return multiply(x, x)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """a where condition holds, else b (broadcasting); the traced form of a Python `if`."""
    c = tensor_of(condition)
    c = c if c.dtype == np.bool_ else astype(c, np.bool_)
    dtype = result_dtype(a, b)
    return apply("Where", [c, tensor_of(coerce(a, dtype)), tensor_of(coerce(b, dtype))])


def clip(x: Any, a_min: Any = None, a_max: Any = None) -> Tensor:
    """x limited to [a_min, a_max] (either may be None)."""
    x = tensor_of(x)
    bounds = [None if v is None else tensor_of(coerce(v, x.dtype)) for v in (a_min, a_max)]
    return apply("Clip", [x, *bounds])


def _elementwise(op_type: str, doc: str):
    def fn(x: Any) -> Tensor:
        return _unary(op_type, x)

    fn.__name__, fn.__doc__ = op_type.lower(), doc
    return fn


exp = _elementwise("Exp", "e ** x.")
log = _elementwise("Log", "The natural logarithm.")
sqrt = _elementwise("Sqrt", "The square root.")
sin = _elementwise("Sin", "The sine.")
cos = _elementwise("Cos", "The cosine.")
tan = _elementwise("Tan", "The tangent.")
arcsin = _elementwise("Asin", "The inverse sine.")
arccos = _elementwise("Acos", "The inverse cosine.")
arctan = _elementwise("Atan", "The inverse tangent.")
sinh = _elementwise("Sinh", "The hyperbolic sine.")
cosh = _elementwise("Cosh", "The hyperbolic cosine.")
tanh = _elementwise("Tanh", "The hyperbolic tangent.")
floor = _elementwise("Floor", "The largest integer <= x (as a float).")
ceil = _elementwise("Ceil", "The smallest integer >= x (as a float).")
reciprocal = _elementwise("Reciprocal", "1 / x.")
sigmoid = _elementwise("Sigmoid", "1 / (1 + exp(-x)).")
relu = _elementwise("Relu", "max(x, 0).")
softplus = _elementwise("Softplus", "log(1 + exp(x)).")
for _fn, _name in ((arcsin, "arcsin"), (arccos, "arccos"), (arctan, "arctan")):
    _fn.__name__ = _name


def log1p(x: Any) -> Tensor:
    """log(1 + x)."""
    return log(add(_floats(tensor_of(x)), 1.0))


# ---- comparisons and logic ---------------------------------------------------------------------
def equal(a: Any, b: Any) -> Tensor:
    """a == b, elementwise (bool)."""
    return _binary("Equal", a, b)


def not_equal(a: Any, b: Any) -> Tensor:
    """a != b, elementwise (bool)."""
    return logical_not(equal(a, b))


def less(a: Any, b: Any) -> Tensor:
    """a < b, elementwise (bool)."""
    return _binary("Less", a, b)


def less_equal(a: Any, b: Any) -> Tensor:
    """a <= b, elementwise (bool)."""
    return _binary("LessOrEqual", a, b)


def greater(a: Any, b: Any) -> Tensor:
    """a > b, elementwise (bool)."""
    return _binary("Greater", a, b)


def greater_equal(a: Any, b: Any) -> Tensor:
    """a >= b, elementwise (bool)."""
    return _binary("GreaterOrEqual", a, b)


def _logical(op_type: str, a: Any, b: Any) -> Tensor:
    return apply(op_type, [astype(a, np.bool_), astype(b, np.bool_)])


def logical_and(a: Any, b: Any) -> Tensor:
    """a and b, elementwise (bool)."""
    return _logical("And", a, b)


def logical_or(a: Any, b: Any) -> Tensor:
    """a or b, elementwise (bool)."""
    return _logical("Or", a, b)


def logical_not(x: Any) -> Tensor:
    """not x, elementwise (bool)."""
    return apply("Not", [astype(x, np.bool_)])


# ---- linear algebra -----------------------------------------------------------------------------
def matmul(a: Any, b: Any) -> Tensor:
    """a @ b (numpy's rules: 1-D operands, batch dims broadcast)."""
    if np.isscalar(a) or np.isscalar(b):
        raise ShapeError("matmul: an operand is a scalar; use multiply (*) for scalars")
    return _binary("MatMul", a, b)


def dot(a: Any, b: Any) -> Tensor:
    """The dot product of 1-D operands, the matrix product of 2-D ones (matmul)."""
    return matmul(a, b)


# ---- reductions -------------------------------------------------------------------------------
def _axes(axis: Any) -> list[int] | None:
    return None if axis is None else [int(a) for a in np.atleast_1d(axis)]


def _reduce(op_type: str, x: Any, axis: Any, keepdims: bool) -> Tensor:
    x = tensor_of(x)
    axes = _axes(axis)
    if op_type == "ReduceSum":
        const = None if axes is None else np.array(axes, np.int64)
        return apply(op_type, [x, const], {"keepdims": int(keepdims)})
    return apply(op_type, [x], {"axes": axes, "keepdims": int(keepdims)})


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """The sum over `axis` (an int, a tuple, or None for all); bools count as int64."""
    x = tensor_of(x)
    return _reduce("ReduceSum", astype(x, DEFAULT_INT) if x.dtype == np.bool_ else x,
                   axis, keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The mean over `axis` (integers average as float32)."""
    return _reduce("ReduceMean", _floats(tensor_of(x)), axis, keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """The largest element over `axis` (ties share the gradient)."""
    return _reduce("ReduceMax", x, axis, keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """The smallest element over `axis` (ties share the gradient)."""
    return _reduce("ReduceMin", x, axis, keepdims)


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The product over `axis`."""
    return _reduce("ReduceProd", x, axis, keepdims)


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) over `axis`, computed stably."""
    return _reduce("ReduceLogSumExp", _floats(tensor_of(x)), axis, keepdims)


def var(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The (population) variance over `axis`: mean((x - mean(x))^2)."""
    x = _floats(tensor_of(x))
    return mean(square(subtract(x, mean(x, axis, keepdims=True))), axis, keepdims)


def std(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The (population) standard deviation over `axis`."""
    return sqrt(var(x, axis, keepdims))


def _arg(op_type: str, x: Any, axis: Any, keepdims: bool) -> Tensor:
    x = tensor_of(x)
    if axis is None:  # over the flattened array, as numpy does
        out = apply(op_type, [reshape(x, -1)], {"axis": 0, "keepdims": 0})
        return reshape(out, (1,) * x.ndim) if keepdims else out
    return apply(op_type, [x], {"axis": int(axis), "keepdims": int(keepdims)})


def argmax(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The index of the largest element along `axis` (of the flattened array when None)."""
    return _arg("ArgMax", x, axis, keepdims)


def argmin(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The index of the smallest element along `axis` (of the flattened array when None)."""
    return _arg("ArgMin", x, axis, keepdims)


# ---- activations and losses ----------------------------------------------------------------
def softmax(x: Any, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`."""
    return _unary("Softmax", x, axis=int(axis))


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """log(softmax(x)) along `axis`, computed stably."""
    return _unary("LogSoftmax", x, axis=int(axis))


def cross_entropy(logits: Any, labels: Any) -> Tensor:
    """The mean cross-entropy of class scores `logits` (N, C): integer `labels` (N,) are class
    indices (one fused SoftmaxCrossEntropyLoss); float `labels` (N, C) are probabilities."""
    logits = _floats(tensor_of(logits))
    labels = tensor_of(labels)
    if labels.dtype.kind in "iu":
        if logits.ndim != 2 or labels.ndim != 1:
            raise ShapeError(f"cross_entropy: logits {logits.shape} and class labels "
                             f"{labels.shape}: pass logits (N, C) and labels (N,)")
        return apply("SoftmaxCrossEntropyLoss", [logits, astype(labels, np.int64)],
                     {"reduction": "mean"}, num_outputs=1)
    per_row = sum(multiply(labels, log_softmax(logits, axis=-1)), axis=-1)
    return negative(mean(per_row))


def binary_cross_entropy(p: Any, y: Any) -> Tensor:
    """The mean of -(y log p + (1 - y) log(1 - p)) for probabilities p and targets y."""
    p = _floats(tensor_of(p))
    terms = add(multiply(y, log(p)), multiply(subtract(1.0, y), log(subtract(1.0, p))))
    return negative(mean(terms))
