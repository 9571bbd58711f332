"""irkit: neural networks as a graph IR, differentiated by an autodiff pass, exported to
standard ONNX and trained on onnxruntime."""

from __future__ import annotations

from irkit import ops
from irkit.errors import (
    DataError,
    IRError,
    IrkitError,
    ModelFileError,
    ShapeError,
    SpecError,
    UnsupportedOpError,
)
from irkit.function import Function, Input, function, grad, value_and_grad, vjp
from irkit.ir import Graph, Node, Value
from irkit.version import __version__

__all__ = ["DataError", "Function", "Graph", "IRError", "Input", "IrkitError", "ModelFileError",
           "Node", "ShapeError", "SpecError", "UnsupportedOpError", "Value", "__version__",
           "function", "grad", "ops", "value_and_grad", "vjp"]
