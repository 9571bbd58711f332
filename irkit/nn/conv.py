"""Layers for images and normalisation: Reshape, Conv2D, MaxPool2D, AvgPool2D,
GlobalAvgPool2D, BatchNorm, LayerNorm. Images are NCHW, as in ONNX."""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.errors import ShapeError, SpecError
from irkit.ir import Value
from irkit.nn.layers import activation_fn
from irkit.nn.module import Module


def _pair(v, what: str) -> list[int]:
    vals = [v, v] if isinstance(v, int) else list(v)
    if len(vals) != 2 or not all(isinstance(i, int) and i > 0 for i in vals):
        raise SpecError(f"{what} must be a positive int or two of them, got {v!r}")
    return vals


def _pads(padding, kernel: list[int]) -> list[int]:
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":  # odd kernels keep the size at stride 1
        return [k // 2 for k in kernel] * 2
    p = _pair(padding, "padding") if padding else [0, 0]
    return p * 2


class Reshape(Module):
    """(N, ...) -> (N, *shape), e.g. 64 pixels -> (1, 8, 8)."""

    def __init__(self, shape, name: str | None = None) -> None:
        super().__init__(name)
        self.shape = [int(d) for d in shape]

    def forward(self, x: Value) -> Value:
        return ops.Reshape(x, np.array([-1, *self.shape], dtype=np.int64))


class Conv2D(Module):
    """2-D convolution over NCHW input: `filters` output channels, then an activation."""

    def __init__(self, filters: int, kernel_size=3, strides=1, padding="same",
                 activation: str | None = None, use_bias: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.filters, self.kernel = int(filters), _pair(kernel_size, "kernel_size")
        self.strides, self.pads = _pair(strides, "strides"), _pads(padding, self.kernel)
        self.activation, self.use_bias = activation_fn(activation), use_bias
        self.init = "he_normal" if activation == "relu" else "glorot_uniform"

    def forward(self, x: Value) -> Value:
        if x.rank != 4 or not isinstance(x.shape[1], int):
            raise ShapeError(f"{self._label()} needs (N, C, H, W) input with known C, got "
                             f"{x.shape}; add a reshape layer first")
        w = self.add_weight("W", (self.filters, x.shape[1], *self.kernel), self.init)
        inputs = [x, w] + ([self.add_weight("b", (self.filters,), "zeros")]
                           if self.use_bias else [])
        y = ops.Conv(*inputs, kernel_shape=self.kernel, strides=self.strides, pads=self.pads)
        return self.activation(y) if self.activation else y


class _Pool2D(Module):
    op = None

    def __init__(self, pool_size=2, strides=None, padding="valid",
                 name: str | None = None) -> None:
        super().__init__(name)
        self.kernel = _pair(pool_size, "pool_size")
        self.strides = _pair(strides, "strides") if strides else self.kernel
        self.pads = _pads(padding, self.kernel)

    def forward(self, x: Value) -> Value:
        if x.rank != 4:
            raise ShapeError(f"{self._label()} needs (N, C, H, W) input, got {x.shape}")
        return type(self).op(x, kernel_shape=self.kernel, strides=self.strides, pads=self.pads)


class MaxPool2D(_Pool2D):
    """Max over windows (default 2x2, stride = window)."""

    op = ops.MaxPool


class AvgPool2D(_Pool2D):
    """Mean over windows (default 2x2, stride = window; padding not counted)."""

    op = ops.AveragePool


class GlobalAvgPool2D(Module):
    """(N, C, H, W) -> (N, C): the mean of each channel."""

    def forward(self, x: Value) -> Value:
        return ops.Flatten(ops.GlobalAveragePool(x), axis=1)


class BatchNorm(Module):
    """Batch normalisation over the channel axis (1). Training graphs normalise with the
    batch's statistics and update the running ones (a graph output carried to the next step,
    running = momentum * running + (1 - momentum) * batch); evaluation and inference use the
    running statistics through the standard BatchNormalization op."""

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5,
                 name: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 <= momentum < 1.0:
            raise SpecError(f"BatchNorm momentum must be in [0, 1), got {momentum}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def forward(self, x: Value) -> Value:
        if x.rank is None or x.rank < 2 or not isinstance(x.shape[1], int):
            raise ShapeError(f"{self._label()} needs (N, C, ...) input with known C")
        c = x.shape[1]
        gamma = self.add_weight("gamma", (c,), "ones")
        beta = self.add_weight("beta", (c,), "zeros")
        mean = self.add_buffer("running_mean", (c,), "zeros")
        var = self.add_buffer("running_var", (c,), "ones")
        if not self.training:
            return ops.BatchNormalization(x, gamma, beta, mean, var, epsilon=self.epsilon)
        y, new_mean, new_var = ops.BatchNormalization(
            x, gamma, beta, mean, var, epsilon=self.epsilon, momentum=self.momentum,
            training_mode=1, _num_outputs=3)
        self.update_buffer("running_mean", new_mean)
        self.update_buffer("running_var", new_var)
        return y


class LayerNorm(Module):
    """Normalise each sample over its last axis, then scale and shift (LayerNormalization)."""

    def __init__(self, epsilon: float = 1e-5, name: str | None = None) -> None:
        super().__init__(name)
        self.epsilon = float(epsilon)

    def forward(self, x: Value) -> Value:
        d = x.shape[-1] if x.shape else None
        if not isinstance(d, int):
            raise ShapeError(f"{self._label()} needs a known last dim, got {x.shape}")
        gamma = self.add_weight("gamma", (d,), "ones")
        beta = self.add_weight("beta", (d,), "zeros")
        return ops.LayerNormalization(x, gamma, beta, axis=-1, epsilon=self.epsilon)
