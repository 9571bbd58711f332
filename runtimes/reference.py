"""A numpy interpreter of the IR, and a step runner on it: a second, independent executor
used to check onnxruntime (inference and training)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from irkit.runtimes.base import Totals, choose_device, data_parts, run_batches, state_pairs

from irkit.errors import ShapeError
from irkit.ir import Graph
from irkit.ops.registry import opdef_of, verify
from irkit.signature import CORRECT, COUNT, LOSS, next_name


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

    def __init__(self, device: str = "cpu") -> None:
        self.device = choose_device(device, lambda: "the reference runtime runs on the CPU only")

    def compile(self, graph: Graph) -> ReferenceGraph:
        return ReferenceGraph(graph)

    def step_runner(self, program, state: Mapping[str, np.ndarray], settings=None,
                    **_options) -> ReferenceStepRunner:
        return ReferenceStepRunner(program.train, program.eval, state, program.data_names)


class ReferenceStepRunner:
    """The StepRunner of the numpy interpreter: the same protocol as onnxruntime's runner, so
    training itself is checked against a second, independent executor."""

    device = "cpu"

    def __init__(self, train: Graph, evaluate: Graph, state: Mapping[str, np.ndarray],
                 data: tuple[str, ...]) -> None:
        self.data_names = tuple(data)  # the inputs, then the target (if the step reads one)
        self.updated, fixed = state_pairs(train, data)
        self.state = {n: np.array(state[n], copy=True) for n in self.updated + fixed}
        self._train, self._eval = ReferenceGraph(train), ReferenceGraph(evaluate)

    def load_state(self, values: Mapping[str, np.ndarray]) -> None:
        for name, array in values.items():
            if name not in self.state:
                raise ShapeError(f"the step has no state named {name!r}")
            self.state[name] = np.array(array, dtype=self.state[name].dtype)

    def read_state(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return {n: self.state[n].copy() for n in (self.state if names is None else names)}

    def stage(self, x, y) -> tuple[np.ndarray, ...]:
        return data_parts(x, y)

    def _run(self, graph: ReferenceGraph, parts: tuple) -> dict:
        feeds = {n: self.state[n] for n in graph.input_names if n in self.state}
        feeds.update(zip(self.data_names, parts))
        return dict(zip(graph.output_names, graph(feeds)))

    @staticmethod
    def _figures(out: dict) -> tuple:
        figures = (float(out[LOSS]), float(out.get(CORRECT, 0.0)))
        return figures + ((float(out[COUNT]),) if COUNT in out else ())

    def step(self, *parts) -> tuple:
        """One train step on a batch (the arrays in the step's data order, as stage gives
        them): (mean loss, correct[, counted])."""
        out = self._run(self._train, parts)
        for name in self.updated:
            self.state[name] = out[next_name(name)]
        return self._figures(out)

    def _eval_step(self, *parts) -> tuple:
        return self._figures(self._run(self._eval, parts))

    def train(self, staged, order: np.ndarray, batch_size: int, on_batch=None) -> Totals:
        return run_batches(self.step, tuple(p[order] for p in staged), batch_size, on_batch)

    def evaluate(self, staged, batch_size: int) -> Totals:
        return run_batches(self._eval_step, staged, batch_size)
