"""irkit: neural networks as a graph IR, differentiated by an autodiff pass, exported to
standard ONNX and trained on onnxruntime."""

from __future__ import annotations

from irkit import checkout, notebook, ops
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
from irkit.version import __version__

checkout.install()  # a source checkout serves its own passes/, runtimes/ and models/
notebook.install_error_display()  # in IPython: irkit's errors end in one line, no internals

# loaded on first use so that `import irkit` (and `irkit train`'s start-up) stays light: the
# training front end imports onnxruntime; the numpy-like namespace (it installs Tensor's
# operators) is 60-100 ms of imports that training never needs
_LAZY = {"Model": "irkit.train.model", "Sequential": "irkit.train.model",
         "load_model": "irkit.train.loading", "Tensor": "irkit.numpy"}


def __getattr__(name: str):
    import importlib
    import importlib.util
    missing = AttributeError(f"module 'irkit' has no attribute {name!r}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name != "numpy" and (name.startswith("__") or importlib.util.find_spec(f"irkit.{name}")):
        raise missing  # `from irkit import data` asks here before it imports the submodule
    namespace = importlib.import_module("irkit.numpy")  # irkit.tensor, irkit.softmax, ...
    if name == "numpy":
        return namespace
    if name in namespace.__all__:
        return getattr(namespace, name)
    raise missing


__all__ = ["DataError", "Function", "Graph", "IRError", "Input", "IrkitError", "Model",
           "ModelFileError", "Node", "Sequential", "ShapeError", "SpecError", "Tensor",
           "UnsupportedOpError", "Value", "__version__", "function", "grad", "hessian", "jacobian",
           "load_model", "numpy", "ops", "value_and_grad", "vjp"]
