"""Layers: Dense, activations, Dropout, Normalize (the data scaling inside the model)."""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.errors import ShapeError, SpecError
from irkit.ir import Value
from irkit.nn.module import Module

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
    absent from evaluation and inference graphs."""

    def __init__(self, rate: float = 0.5, seed: int = 0, name: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise SpecError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate, self.seed = rate, seed

    def forward(self, x: Value) -> Value:
        if not self.training or self.rate == 0:
            return x
        ratio = x.graph.constant(np.array(self.rate, dtype=x.dtype))
        mode = x.graph.constant(np.array(True))
        out, _mask = ops.Dropout(x, ratio, mode, seed=self.seed, _num_outputs=2)
        return out


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x: Value) -> Value:
        return ops.Flatten(x, axis=1)


class Normalize(Module):
    """(x - shift) * scale with frozen weights: the data scaling, fitted on training data."""

    def __init__(self, kind: str = "standard", name: str | None = None) -> None:
        super().__init__(name)
        self.kind = kind

    def forward(self, x: Value) -> Value:
        features = x.shape[-1]
        shift = self.add_weight("shift", (features,), "zeros", trainable=False)
        scale = self.add_weight("scale", (features,), "ones", trainable=False)
        return ops.Mul(ops.Sub(x, shift), scale)

    def fit(self, x: np.ndarray) -> None:
        from irkit.data import fit_scaler
        shift, scale = fit_scaler(x.reshape(len(x), -1), self.kind)
        self.weights["shift"], self.weights["scale"] = shift, scale
        self.frozen |= {"shift", "scale"}
