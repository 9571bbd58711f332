"""Layers: Dense, activations, Dropout, Normalize (the data scaling inside the model).

Layers only build IR; nothing here knows how a model is trained (irkit.train does).
"""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.errors import ShapeError, SpecError
from irkit.ir import Value
from irkit.nn.module import Module
from irkit.ops.shape import onnx_dtype
from irkit.signature import STEP

ACTIVATIONS = {
    "relu": ops.Relu, "tanh": ops.Tanh, "sigmoid": ops.Sigmoid, "elu": ops.Elu,
    "softplus": ops.Softplus, "leaky_relu": ops.LeakyRelu,
    "softmax": lambda x: ops.Softmax(x, axis=-1),
    "log_softmax": lambda x: ops.LogSoftmax(x, axis=-1),
    # Gelu is an opset-20 op; in opset 17 it is x/2 (1 + erf(x / sqrt 2))
    "gelu": lambda x: ops.Mul(ops.Mul(x, 0.5), ops.Add(ops.Erf(ops.Mul(x, 0.5 ** 0.5)), 1.0)),
}


def activation_fn(name: str | None):
    if name in (None, "linear", "none"):
        return None
    if name not in ACTIVATIONS:
        raise SpecError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Dense(Module):
    """y = x W + b (one Gemm node for 2-D inputs), then an optional activation."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 kernel_init: str | None = None, name: str | None = None) -> None:
        super().__init__(name)
        if not isinstance(units, int) or units < 1:
            raise SpecError(f"Dense units must be a positive integer, got {units!r}")
        self.units, self.use_bias = units, use_bias
        self.activation = activation_fn(activation)
        default_init = "he_normal" if activation == "relu" else "glorot_uniform"
        self.kernel_init = kernel_init or default_init

    def forward(self, x: Value) -> Value:
        self.input_value = x
        features = x.shape[-1] if x.shape else None
        if not isinstance(features, int):
            raise ShapeError(f"{self._label()}: the input's last dim must be known, got {x.shape}")
        w = self.add_weight("W", (features, self.units), self.kernel_init)
        b = self.add_weight("b", (self.units,), "zeros") if self.use_bias else None
        if x.rank == 2:
            y = ops.Gemm(x, w, b) if b is not None else ops.Gemm(x, w)
        else:
            y = ops.MatMul(x, w)
            y = ops.Add(y, b) if b is not None else y
        return self.activation(y) if self.activation else y


class Activation(Module):
    """An activation by name: relu, tanh, sigmoid, elu, softplus, leaky_relu, softmax, ..."""

    def __init__(self, kind: str, name: str | None = None) -> None:
        super().__init__(name)
        self.kind = kind
        self.fn = activation_fn(kind)

    def forward(self, x: Value) -> Value:
        return self.fn(x) if self.fn else x


def ReLU(name: str | None = None) -> Activation:  # noqa: N802  (layer constructors, Keras names)
    return Activation("relu", name)


def Tanh(name: str | None = None) -> Activation:  # noqa: N802
    return Activation("tanh", name)


def Sigmoid(name: str | None = None) -> Activation:  # noqa: N802
    return Activation("sigmoid", name)


class Dropout(Module):
    """Zero a `rate` fraction of activations while training (scaled by 1/(1-rate));
    absent from evaluation and inference graphs.

    The mask is a pure function of (seed, step count, element index): a hash made of float32
    Mul/Add/Floor (see `keep_mask`), not onnxruntime's stateful random generator. So a resumed
    run draws the same masks as an uninterrupted one, and the numpy reference draws the same
    masks as onnxruntime, bit for bit (those ops round the same in every IEEE executor).
    """

    def __init__(self, rate: float = 0.5, seed: int = 0, name: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise SpecError(f"Dropout rate must be in [0, 1), got {rate}")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
            raise SpecError(f"Dropout seed must be an integer in [0, 2**31), got {seed!r}")
        self.rate, self.seed = rate, seed

    def forward(self, x: Value) -> Value:
        if not self.training or self.rate == 0:
            return x
        return hashed_dropout(x, self.seed, self.rate)[0]


def hashed_dropout(x: Value, seed: int, rate: float) -> tuple[Value, Value]:
    """(x * keep / (1 - rate), keep): Dropout with the `keep_mask` of the graph's step count
    (the step input, added if the graph has none yet)."""
    graph = x.graph
    step = graph.value(STEP) if graph.has_value(STEP) else graph.add_input(STEP, np.int64, ())
    keep = keep_mask(x, step, seed, rate)
    scale = ops.Mul(ops.Cast(keep, to=onnx_dtype(x.dtype)), 1.0 / (1.0 - rate))
    return ops.Mul(x, scale), keep


def _fract(v: Value) -> Value:
    return ops.Sub(v, ops.Floor(v))


def keep_mask(x: Value, step: Value, seed: int, rate: float) -> Value:
    """Boolean mask shaped like x, True with probability 1 - rate, a function of
    (seed, step, element index) only. A 3-input float hash (after D. Hoskins' "hash without
    sine"): the element index split exactly into (index mod 4096, index div 4096) and the step
    (mod a prime, so every float stays exact), each scrambled by fract(v * 0.1031), mixed by a
    dot product, folded by one more fract."""
    g = x.graph

    def const(v: float) -> Value:
        return g.constant(np.array(v, np.float32))
    n = ops.Cast(ops.Size(x), to=1)  # to=1: float32; exact below 2**24 elements
    index = ops.Reshape(ops.Range(const(0.0), n, const(1.0)), ops.Shape(x))
    hi = ops.Floor(ops.Mul(index, 1.0 / 4096))
    lo = ops.Sub(index, ops.Mul(hi, 4096.0))
    prime = g.constant(np.array(65521, np.int64))
    t = ops.Sub(step, ops.Mul(ops.Div(step, prime), prime))  # step mod 65521
    t = ops.Add(ops.Cast(t, to=1), const(float((seed * 7919) % 65521) + 0.5))
    a, b, c = (_fract(ops.Mul(v, 0.1031)) for v in (lo, hi, t))
    d = ops.Add(ops.Add(ops.Mul(a, ops.Add(c, 31.32)), ops.Mul(b, ops.Add(b, 31.32))),
                ops.Mul(c, ops.Add(a, 31.32)))
    u = _fract(ops.Mul(ops.Add(ops.Add(a, d), ops.Add(b, d)), ops.Add(c, d)))
    return ops.GreaterOrEqual(u, const(float(rate)))


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x: Value) -> Value:
        return ops.Flatten(x, axis=1)


class Normalize(Module):
    """(x - shift) * scale with frozen weights: the data scaling, fitted on training data."""

    def __init__(self, kind: str = "standard", name: str | None = None) -> None:
        super().__init__(name)
        if kind not in ("standard", "minmax"):
            raise SpecError(f"Normalize kind {kind!r} must be standard or minmax")
        self.kind = kind
        self.adapted = False
        self.input_value: Value | None = None  # what reached it in the last build


    def forward(self, x: Value) -> Value:
        self.input_value = x
        features = x.shape[-1]
        shift = self.add_weight("shift", (features,), "zeros", trainable=False)
        scale = self.add_weight("scale", (features,), "ones", trainable=False)
        return ops.Mul(ops.Sub(x, shift), scale)

    def adapt(self, x: np.ndarray) -> None:
        """Fit the scaling to `x`, the values that reach this layer (Keras' `adapt`)."""
        from irkit.data import fit_scaler
        shift, scale = fit_scaler(x.reshape(len(x), -1), self.kind)
        self.weights["shift"], self.weights["scale"] = shift, scale
        self.frozen |= {"shift", "scale"}
        self.adapted = True
