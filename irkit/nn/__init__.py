"""Layers and models: Dense, activations, Dropout, Normalize, Sequential, and the Module base."""

from __future__ import annotations

from irkit.nn.layers import Activation, Dense, Dropout, Flatten, Normalize, ReLU, Sigmoid, Tanh
from irkit.nn.module import Module, Sequential

__all__ = ["Activation", "Dense", "Dropout", "Flatten", "Module", "Normalize", "ReLU",
           "Sequential", "Sigmoid", "Tanh"]
