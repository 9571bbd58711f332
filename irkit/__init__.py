"""irkit: neural networks as a graph IR, differentiated by an autodiff pass, exported to
standard ONNX and trained on onnxruntime."""

from __future__ import annotations

# numpy: the namespace (installs Tensor's operators)
from irkit import checkout, notebook, numpy, ops
from irkit.errors import (
    DataError,
    IRError,
    IrkitError,
    ModelFileError,
    ShapeError,
    SpecError,
    UnsupportedOpError,
)
from irkit.function import Function, Input, function, grad, hessian, jacobian, value_and_grad, vjp
from irkit.ir import Graph, Node, Value
from irkit.tensors import Tensor
from irkit.version import __version__

checkout.install()  # a source checkout serves its own passes/, runtimes/ and models/
notebook.install_error_display()  # in IPython: irkit's errors end in one line, no internals

# the training front end imports onnxruntime; load it on first use so `import irkit` stays light
_LAZY = {"Model": "irkit.train.model", "Sequential": "irkit.train.model",
         "load_model": "irkit.train.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in numpy.__all__:  # irkit.tensor, irkit.softmax, ...: the numpy-like namespace
        return getattr(numpy, name)
    raise AttributeError(f"module 'irkit' has no attribute {name!r}")


__all__ = ["DataError", "Function", "Graph", "IRError", "Input", "IrkitError", "Model",
           "ModelFileError", "Node", "Sequential", "ShapeError", "SpecError", "Tensor",
           "UnsupportedOpError", "Value", "__version__", "function", "grad", "hessian", "jacobian",
           "load_model", "numpy", "ops", "value_and_grad", "vjp"]
