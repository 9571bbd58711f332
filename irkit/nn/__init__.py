"""Layers: Dense, activations, Dropout, Normalize, conv and norm layers, Sequential, and the
Module base. Layers only build IR; `irkit.Model` trains them."""

from __future__ import annotations

from irkit.nn.conv import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    Reshape,
)
from irkit.nn.layers import Activation, Dense, Dropout, Flatten, Normalize, ReLU, Sigmoid, Tanh
from irkit.nn.module import Module, Sequential

__all__ = ["Activation", "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAvgPool2D", "LayerNorm", "MaxPool2D", "Module", "Normalize", "ReLU", "Reshape",
           "Sequential", "Sigmoid", "Tanh"]
