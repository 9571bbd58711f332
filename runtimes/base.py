"""The `Runtime` protocol and the lookup of runtimes by name."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from irkit.errors import RuntimeUnavailableError
from irkit.ir import Graph


class CompiledGraph(Protocol):
    """A graph ready to run: feeds by input name, returns outputs in graph-output order."""

    input_names: list[str]
    output_names: list[str]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    """Something that compiles an IR graph for a device."""

    name: str

    def compile(self, graph: Graph) -> CompiledGraph: ...


def get_runtime(name: str = "onnxruntime", device: str = "cpu") -> Runtime:
    """`onnxruntime` (device cpu, cuda or auto), `reference` (numpy, cpu only) or `torch`
    (optional PyTorch; device cpu, cuda or auto)."""
    if name == "reference":
        from irkit.runtimes.reference import ReferenceRuntime
        return ReferenceRuntime()
    if name == "onnxruntime":
        from irkit.runtimes.onnxruntime import OrtRuntime
        return OrtRuntime(device=device)
    if name == "torch":
        from irkit.runtimes.torch_runtime import TorchRuntime
        return TorchRuntime(device=device)
    raise RuntimeUnavailableError(f"unknown runtime {name!r}; use 'onnxruntime', 'reference' "
                                  "or 'torch'")
