"""The `Runtime` and `StepRunner` protocols, the device rule, and the batch loop that every step
runner shares (the runtimes by name: irkit/runtimes/registry.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np

from irkit.errors import RuntimeUnavailableError
from irkit.ir import Graph

DEVICES = ("cpu", "cuda", "auto")


def choose_device(device: str, cuda_unusable: Callable[[], str | None]) -> str:
    """The one rule for devices, whatever the runtime: 'cpu'; 'cuda' when `cuda_unusable()`
    gives no reason, else a one-line error with the reason; 'auto' falls back to 'cpu' with a
    message on stderr."""
    if device not in DEVICES:
        raise RuntimeUnavailableError(f"unknown device {device!r}; use one of "
                                      f"{', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    reason = cuda_unusable()
    if reason is None:
        return "cuda"
    if device == "auto":
        print(f"irkit: {reason}; running on CPU", file=sys.stderr)
        return "cpu"
    raise RuntimeUnavailableError(f"device cuda: {reason}; use device cpu or auto")


class CompiledGraph(Protocol):
    """A graph ready to run: feeds by input name, returns outputs in graph-output order."""

    input_names: list[str]
    output_names: list[str]

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    """Something that compiles an IR graph for a device."""

    name: str

    def compile(self, graph: Graph) -> CompiledGraph: ...


class Totals(NamedTuple):
    """Sums over the batches of one pass: loss × batch size, correct predictions, samples."""

    loss: float
    correct: float
    count: int


class StepRunner(Protocol):
    """Something that runs a train-step graph and its evaluation graph (see irkit.signature):
    holds the state (params, optimizer state, buffers) on its device between steps."""

    device: str

    def load_state(self, values: Mapping[str, np.ndarray]) -> None:
        """Set some or all state values (e.g. the learning rate, restored weights)."""

    def read_state(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Numpy copies of the current state (all of it, or `names`)."""

    def stage(self, x: np.ndarray, y: np.ndarray) -> Any:
        """The data placed where the runner reads batches from (validated by the caller)."""

    def train(self, staged: Any, order: np.ndarray, batch_size: int,
              on_batch: Callable[[int, float], None] | None = None) -> Totals:
        """One pass of train steps over `staged` in `order`, `batch_size` rows a step."""

    def evaluate(self, staged: Any, batch_size: int) -> Totals:
        """Loss and correct count of the current state over `staged` (no update)."""


def run_batches(step: Callable[[np.ndarray, np.ndarray], tuple[float, float]],
                x: np.ndarray, y: np.ndarray, batch_size: int,
                on_batch: Callable[[int, float], None] | None = None) -> Totals:
    """The batch loop every runner shares: `step(xb, yb) -> (mean loss, correct)` per slice
    (x and y may be anything sliceable of one length, e.g. row indices)."""
    total_loss, total_correct = 0.0, 0.0
    n = len(x)
    for index, start in enumerate(range(0, n, batch_size)):
        if n <= batch_size:  # one batch: the arrays themselves (a runner may keep them bound)
            xb, yb = x, y
        else:
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        loss, correct = step(xb, yb)
        total_loss += loss * len(xb)
        total_correct += correct
        if on_batch is not None:
            on_batch(index, loss)
    return Totals(total_loss, total_correct, n)


def state_pairs(graph: Graph, data: Iterable[str]) -> tuple[list[str], list[str]]:
    """The state a step graph reads, split into (updated, fixed): an input is updated when the
    graph also writes `next/<name>`; `data` names the batch inputs, which are not state."""
    from irkit.signature import next_name
    outputs = {v.name for v in graph.outputs}
    data = set(data)
    state = [v.name for v in graph.inputs if v.name not in data]
    return ([n for n in state if next_name(n) in outputs],
            [n for n in state if next_name(n) not in outputs])
