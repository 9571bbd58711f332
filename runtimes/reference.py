"""A numpy interpreter of the IR: a second, independent executor used to check onnxruntime."""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError
from irkit.ir import Graph
from irkit.ops.registry import opdef_of, verify


class ReferenceGraph:
    """A graph run node by node with each op's numpy reference."""

    def __init__(self, graph: Graph) -> None:
        verify(graph)
        self.graph = graph
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        env: dict[int, np.ndarray] = {}
        for v in self.graph.inputs:
            if v.name not in feeds:
                raise ShapeError(f"missing input {v.name!r}; feed every graph input")
            env[id(v)] = np.asarray(feeds[v.name], dtype=v.dtype)
        for v in self.graph.initializers.values():
            env[id(v)] = v.const
        for node in self.graph.nodes:
            args = [env[id(v)] if v is not None else None for v in node.inputs]
            results = opdef_of(node).compute(node, args)
            for out, r in zip(node.outputs, results):
                env[id(out)] = np.asarray(r, dtype=out.dtype)
        return [env[id(v)] for v in self.graph.outputs]


class ReferenceRuntime:
    """Runtime protocol for the numpy interpreter (CPU only)."""

    name = "reference"

    def compile(self, graph: Graph) -> ReferenceGraph:
        return ReferenceGraph(graph)
