"""The torch runtime: an IR graph as a `torch.nn.Module` that runs it node by node in torch.

    module = to_torch(graph, trainable=True)     # float initializers become nn.Parameters
    loss = module(x, labels)                     # graph inputs by position or by name
    loss.backward()                              # torch autograd: an oracle for irkit's VJPs
    module.initializer("dense.W").grad

or, through the `Runtime` protocol, `get_runtime("torch").compile(graph)(feeds)` with numpy in
and out. The ops are in `irkit.runtimes.torch_ops` (ONNX semantics, one function per op); an
op without one is an UnsupportedOpError naming the op and the node when the module is built.
torch is optional: without it, importing this module raises RuntimeUnavailableError.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from irkit.errors import RuntimeUnavailableError, ShapeError, UnsupportedOpError
from irkit.ir import Graph, Node, Value
from irkit.version import install_hint

try:
    import torch
except ImportError:  # torch is an optional dependency
    raise RuntimeUnavailableError(
        f"the torch runtime needs PyTorch: {install_hint('torch')} (a CPU build: "
        "pip install torch==2.13.0), or use the 'onnxruntime' or 'reference' runtime") from None

from irkit.runtimes.base import choose_device  # noqa: E402
from irkit.runtimes.torch_ops import TORCH_OPS  # noqa: E402
from irkit.runtimes.torch_shape_ops import constant_array, to_tensor  # noqa: E402

__all__ = ["TORCH_OPS", "TorchGraph", "TorchGraphModule", "TorchRuntime", "to_torch",
           "torch_dtype_of"]


def torch_dtype_of(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return _torch_dtype(np.dtype(dtype))


@functools.cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def check_supported(graph: Graph) -> None:
    """UnsupportedOpError naming every node whose op the torch runtime lacks (first three)."""
    missing = [n for n in graph.nodes if n.domain not in ("", "ai.onnx") or
               n.op_type not in TORCH_OPS]
    if missing:
        names = ", ".join(f"{n.op_type} (node {n.name!r})" for n in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UnsupportedOpError(f"the torch runtime has no implementation of {names}{more}; "
                                 "run the graph on onnxruntime or the reference runtime, or add "
                                 "the op to irkit.runtimes.torch_ops")


class TorchGraphModule(torch.nn.Module):
    """An IR graph as a torch module. Initializers are buffers, or nn.Parameters where
    `trainable` says so: True for every float initializer, or an iterable of their names.

    `forward` takes the graph inputs by position (graph order) or by name, as tensors or
    numpy arrays, and returns one tensor, or a tuple for several graph outputs.
    """

    def __init__(self, graph: Graph, trainable: bool | Iterable[str] = False) -> None:
        super().__init__()
        graph.verify()
        check_supported(graph)
        self.graph = graph
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._attr: dict[str, str] = {}  # initializer name -> attribute name in this module
        train = _trainable_names(graph, trainable)
        for name, v in graph.initializers.items():
            tensor = to_tensor(v.const)
            if name in train:
                self._register(name, torch.nn.Parameter(tensor), parameter=True)
            else:
                self._register(name, tensor, parameter=False)
        for node in graph.nodes:  # Constant nodes as buffers: they move with .to(device)
            if node.op_type == "Constant":
                self._register(_constant_key(node), to_tensor(constant_array(node)), False)

    def _register(self, name: str, tensor: torch.Tensor, parameter: bool) -> None:
        base = "init_" + re.sub(r"\W", "_", name)  # torch names may not hold "." or "/"
        attr, i = base, 0
        while hasattr(self, attr):
            i += 1
            attr = f"{base}_{i}"
        self._attr[name] = attr
        if parameter:
            self.register_parameter(attr, tensor)
        else:
            self.register_buffer(attr, tensor)

    def initializer(self, name: str) -> torch.Tensor:
        """The tensor (parameter or buffer) of the graph initializer `name`."""
        if name not in self._attr or name.startswith("\0"):
            raise ShapeError(f"graph {self.graph.name!r} has no initializer named {name!r}")
        return getattr(self, self._attr[name])

    def initializers(self) -> dict[str, torch.Tensor]:
        """Every initializer's tensor by its graph name."""
        return {n: getattr(self, a) for n, a in self._attr.items() if not n.startswith("\0")}

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[int, torch.Tensor] = self._feed(args, kwargs)
        for name, v in self.graph.initializers.items():
            env[id(v)] = getattr(self, self._attr[name])
        for node in self.graph.nodes:
            self._run(node, env)
        outs = tuple(env[id(v)] for v in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs

    def _feed(self, args: tuple, kwargs: dict) -> dict[int, torch.Tensor]:
        if len(args) > len(self.input_names):
            raise ShapeError(f"graph {self.graph.name!r} has {len(self.input_names)} inputs, "
                             f"got {len(args)} positional arguments")
        given = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name not in self.input_names or name in given:
                raise ShapeError(f"graph {self.graph.name!r}: unexpected or repeated input "
                                 f"{name!r}; its inputs are {self.input_names}")
            given[name] = value
        device = self._device()
        env = {}
        for v in self.graph.inputs:
            if v.name not in given:
                raise ShapeError(f"missing input {v.name!r}; feed every graph input")
            env[id(v)] = _as_tensor(given[v.name], v, device)
        return env

    def _device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    def _run(self, node: Node, env: dict[int, torch.Tensor]) -> None:
        if node.op_type == "Constant":
            results: Any = getattr(self, self._attr[_constant_key(node)])
        else:
            args = [env[id(v)] if v is not None else None for v in node.inputs]
            try:
                results = TORCH_OPS[node.op_type](node, *args)
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                raise ShapeError(f"torch could not run node {node.name!r} ({node.op_type}): "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") \
                    from e
        if isinstance(results, torch.Tensor):
            results = [results]
        for out, r in zip(node.outputs, results):
            env[id(out)] = _with_dtype(r, out)


def _constant_key(node: Node) -> str:
    return "\0constant:" + node.name  # never a graph value name (those are printable)


def _trainable_names(graph: Graph, trainable: bool | Iterable[str]) -> set[str]:
    floats = {n for n, v in graph.initializers.items() if v.dtype.kind == "f"}
    if trainable is True:
        return floats
    if trainable is False or trainable is None:
        return set()
    names = set(trainable)
    unknown = sorted(names - set(graph.initializers))
    if unknown:
        raise ShapeError(f"trainable names {unknown} are not initializers of graph "
                         f"{graph.name!r}")
    not_float = sorted(names - floats)
    if not_float:
        raise ShapeError(f"initializers {not_float} are not floating point; only those can be "
                         "trainable")
    return names


def _as_tensor(value: Any, v: Value, device: torch.device) -> torch.Tensor:
    """A graph input as a tensor of its declared dtype on `device` (autograd kept)."""
    want = torch_dtype_of(v.dtype)
    if not isinstance(value, torch.Tensor):
        value = torch.from_numpy(np.array(value, dtype=v.dtype, copy=True))
    value = value.to(device=device)
    return value if value.dtype == want else value.to(want)


def _with_dtype(t: torch.Tensor, v: Value) -> torch.Tensor:
    """A node output with the dtype irkit inferred for it (ONNX fixes output types)."""
    want = torch_dtype_of(v.dtype)
    return t if t.dtype == want else t.to(want)


def to_torch(graph: Graph, trainable: bool | Iterable[str] = False,
             device: str | torch.device = "cpu") -> TorchGraphModule:
    """The graph as a torch module on `device` (see TorchGraphModule)."""
    return TorchGraphModule(graph, trainable).to(device)


class TorchGraph:
    """The `CompiledGraph` of the torch runtime: numpy feeds in, numpy outputs out."""

    def __init__(self, graph: Graph, device: str = "cpu",
                 trainable: bool | Iterable[str] = False) -> None:
        self.device = _resolve_device(device)
        self.module = to_torch(graph, trainable, self.device)
        self.input_names = list(self.module.input_names)
        self.output_names = list(self.module.output_names)

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ShapeError(f"missing inputs {missing}; feed every graph input")
        with torch.no_grad():
            outs = self.module(**{n: feeds[n] for n in self.input_names})
        outs = outs if isinstance(outs, tuple) else (outs,)
        return [o.detach().cpu().numpy() for o in outs]


def _resolve_device(device: str) -> str:
    """'cpu' or 'cuda' by the rule every runtime follows (irkit.runtimes.base.choose_device)."""
    return choose_device(device, lambda: None if torch.cuda.is_available() else
                         "this torch build sees no CUDA GPU")


class TorchRuntime:
    """Runtime protocol for torch (device cpu, cuda or auto; `trainable` as in to_torch)."""

    name = "torch"

    def __init__(self, device: str = "cpu", trainable: bool | Iterable[str] = False) -> None:
        self.device = device
        self.trainable = trainable

    def compile(self, graph: Graph) -> TorchGraph:
        return TorchGraph(graph, self.device, self.trainable)
