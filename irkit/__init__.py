"""irkit: neural networks as a graph IR, differentiated by an autodiff pass, exported to
standard ONNX and trained on onnxruntime."""

from __future__ import annotations

__version__ = "0.1.0"

from irkit import ops  # noqa: E402
from irkit.errors import (  # noqa: E402
    DataError,
    IRError,
    IrkitError,
    ModelFileError,
    ShapeError,
    SpecError,
    UnsupportedOpError,
)
from irkit.function import Function, Input, function, grad, value_and_grad, vjp  # noqa: E402
from irkit.ir import Graph, Node, Value  # noqa: E402

__all__ = ["DataError", "Function", "Graph", "IRError", "Input", "IrkitError", "ModelFileError",
           "Node", "ShapeError", "SpecError", "UnsupportedOpError", "Value", "__version__",
           "function", "grad", "ops", "value_and_grad", "vjp"]
