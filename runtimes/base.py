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
    """Sums over the batches of one pass: loss × batch size, correct predictions, samples, and
    (for a step with a `count` output, e.g. per-token accuracy) the predictions counted."""

    loss: float
    correct: float
    count: int
    counted: float | None = None  # None: one prediction per sample


def data_parts(x, y) -> tuple:
    """A batch's arrays in the order of a step's data names: the inputs (one array, or a
    tuple of them), then the target unless it is None."""
    parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return parts if y is None else (*parts, y)


class GivenState(dict):
    """Initial state that its caller gives away to a step runner (make_step_runner): the
    runner may keep these arrays as its own state and update them in place, so no second copy
    of the weights is made. The caller reads them only through the runner (read_state, or
    state_views where the runner has them) while the runner lives; a runner that does not
    adopt arrays copies them, as from any mapping."""


def read_only(array) -> np.ndarray:
    """A read-only view of `array` (its memory kept alive): a runner never adopts it from a
    GivenState, so training never writes memory its caller still holds."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


class StepRunner(Protocol):
    """Something that runs a train-step graph and its evaluation graph (see irkit.signature):
    holds the state (params, optimizer state, buffers) on its device between steps."""

    device: str

    def load_state(self, values: Mapping[str, np.ndarray]) -> None:
        """Set some or all state values (e.g. the learning rate, restored weights)."""

    def read_state(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Numpy copies of the current state (all of it, or `names`)."""

    def stage(self, x: np.ndarray | tuple, y: np.ndarray | None) -> Any:
        """The data placed where the runner reads batches from (validated by the caller): x
        one array or one per input (in the step's input order), y None when the step reads no
        target."""

    def train(self, staged: Any, order: np.ndarray, batch_size: int,
              on_batch: Callable[[int, float], None] | None = None) -> Totals:
        """One pass of train steps over `staged` in `order`, `batch_size` rows a step."""

    def evaluate(self, staged: Any, batch_size: int) -> Totals:
        """Loss and correct count of the current state over `staged` (no update)."""


def run_batches(step: Callable[..., tuple], parts: tuple, batch_size: int,
                on_batch: Callable[[int, float], None] | None = None) -> Totals:
    """The batch loop every runner shares: `step(*batch) -> (mean loss, correct[, counted])`
    per slice of every array of `parts` (anything sliceable of one length, e.g. row
    indices); `counted` summed when the step gives it."""
    total_loss, total_correct, total_counted = 0.0, 0.0, None
    n = len(parts[0])
    for index, start in enumerate(range(0, n, batch_size)):
        if n <= batch_size:  # one batch: the arrays themselves (a runner may keep them bound)
            batch = parts
        else:
            batch = tuple(p[start:start + batch_size] for p in parts)
        figures = step(*batch)
        total_loss += figures[0] * len(batch[0])
        total_correct += figures[1]
        if len(figures) > 2:
            total_counted = (total_counted or 0.0) + figures[2]
        if on_batch is not None:
            on_batch(index, figures[0])
    return Totals(total_loss, total_correct, n, total_counted)


def state_pairs(graph: Graph, data: Iterable[str]) -> tuple[list[str], list[str]]:
    """The state a step graph reads, split into (updated, fixed): an input is updated when the
    graph also writes `next/<name>`; `data` names the batch inputs, which are not state."""
    from irkit.signature import next_name
    outputs = {v.name for v in graph.outputs}
    data = set(data)
    state = [v.name for v in graph.inputs if v.name not in data]
    return ([n for n in state if next_name(n) in outputs],
            [n for n in state if next_name(n) not in outputs])


def adoptable(array, dtype: np.dtype | None) -> bool:
    """Whether a step runner may keep `array` as its own state on the CPU: an n-d numpy
    array, writable, aligned, C-ordered, of the step's dtype (a 0-d value is always copied:
    onnxruntime makes its own)."""
    return isinstance(array, np.ndarray) and array.ndim > 0 and array.flags.writeable \
        and array.flags.aligned and array.flags.c_contiguous \
        and (dtype is None or array.dtype == dtype)


def adopted_names(state: Mapping[str, np.ndarray], names: Iterable[str],
                  dtypes: Mapping[str, np.dtype]) -> set[str]:
    """The names whose arrays are adoptable, less each whose memory overlaps one before it
    (by address): of arrays that alias each other one at most is adopted, the others copied,
    or a step would write what it still reads."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, n) for n in names
                   if adoptable(a := state[n], dtypes.get(n)))
    chosen, reached = set(), -1
    for start, size, name in spans:
        if start >= reached:
            chosen.add(name)
        reached = max(reached, start + size)
    return chosen
