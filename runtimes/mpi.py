"""Synchronous data-parallel training on MPI: the StepRunner of `mpiexec -n N irkit train`.

Every rank holds the same state and runs the same steps. A global batch of B rows (in the
order every rank draws from the same seed) is cut into W contiguous shards, one per rank;
each rank runs the gradient graph on its shard (irkit.train.step.SplitGraphs), and one
in-place all-reduce sums, in one float32 buffer,

    [ grad/* · n_r | next buffers · n_r | loss · n_r | correct | n_r ]

so that dividing by the summed n gives the gradient of the global batch's mean loss, the
buffers' sample-weighted mean, and the global loss and accuracy. Every rank then runs the
same update graph on the same numbers: weights stay identical without being sent. Validation
is sharded the same way and its sums all-reduced, so every rank logs the global figures and
the trainer's decisions (best epoch, early stopping, divergence) agree on all ranks.

What differs from one process:

- BatchNorm normalizes with its rank's batch statistics (as PyTorch's DistributedDataParallel
  does without SyncBatchNorm), so its gradients differ from one process's. The running
  statistics are averaged over the ranks each step, weighted by shard size, and stay the same
  on every rank: the running mean moves by the global batch's mean (the update is linear in
  it); the running variance misses the spread between the shards' means.
- Dropout: the mask is a function of (seed, step counter, element index in the batch), and
  each rank feeds its gradient graph the counter step·W + r instead of the step: every rank
  draws its own masks, a function of (seed, step, rank), so a run is reproducible for a given
  number of workers, but its masks are not one process's (nor another worker count's).
- Sums are taken in another order: results agree with one process to float32 rounding.

Runs on CPU (the gradients cross the network through host memory anyway); every rank holds
the whole staged dataset and reads its rows from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np
from irkit.runtimes.base import Totals, data_parts, run_batches, state_pairs
from irkit.runtimes.onnxruntime import make_session, session_bytes

from irkit.distributed import WorkerLostError
from irkit.errors import RuntimeUnavailableError, ShapeError
from irkit.ir import Graph
from irkit.signature import CORRECT, COUNT, GRADS, LOSS, STEP, next_name


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of n that rank `rank` of `size` takes: contiguous, sizes differing by at
    most one, in rank order."""
    return rank * n // size, (rank + 1) * n // size


def _bind_in(io, name: str, array: np.ndarray) -> None:
    io.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


def _bind_out(io, name: str, array: np.ndarray) -> None:
    io.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class MpiStepRunner:
    """StepRunner over MPI ranks (see the module docstring): onnxruntime sessions for the
    gradient, update and evaluation graphs; all state in numpy arrays bound by address.

    `split` holds the gradient and update graphs of `train` (build_split_graphs); `comm` is
    an mpi4py communicator (default: the job's, irkit.distributed.comm()). `allreduce_s` and
    `steps` count the time spent in the all-reduce and the steps run (for benchmarks)."""

    def __init__(self, train: Graph, evaluate: Graph, state: Mapping[str, np.ndarray],
                 data: tuple[str, ...], *, split, comm=None, device: str = "cpu",
                 threads: int | None = None, batch_size: int | None = None) -> None:
        if device not in ("cpu", "auto"):
            raise RuntimeUnavailableError(f"data-parallel training runs on CPU; --device "
                                          f"{device} is not supported with MPI workers")
        from irkit import distributed
        self.comm = comm if comm is not None else distributed.comm()
        from mpi4py import MPI
        self._in_place, self._sum, self._mpi_error = MPI.IN_PLACE, MPI.SUM, MPI.Exception
        self.device, self.rank, self.size = "cpu", self.comm.Get_rank(), self.comm.Get_size()
        self.data_names = tuple(data)  # the inputs, then the target (if the step reads one)
        names = [n for group in state_pairs(train, data) for n in group]
        missing = [n for n in names if n not in state]
        if missing:
            raise ShapeError(f"no initial value for the step's state {missing}")
        sessions = [make_session(session_bytes(g), "cpu", threads)
                    for g in (split.gradient, split.update, evaluate)]
        self._grad, self._update, self._eval = sessions
        if COUNT in {o.name for o in self._grad.get_outputs()}:
            raise ShapeError("data-parallel training does not count per-token predictions "
                             "yet; train a per-token loss in one process (no --workers)")
        self._layout(split, {n: np.array(state[n], copy=True, order="C") for n in names})
        self.allreduce_s, self.steps = 0.0, 0

    # ---- set-up ----------------------------------------------------------------------------
    def _layout(self, split, state: dict[str, np.ndarray]) -> None:
        """Place the state: values the update graph writes in two sets that ping-pong, the
        buffers and the rest once; bind the sessions to them (and to the all-reduce buffer)."""
        for name in sorted(state):  # one start for all: rank 0's
            self.comm.Bcast(state[name], root=0)
        written = {o.name for o in self._update.get_outputs()}
        updated = [n for n in state if next_name(n) in written]
        self._sets = [{n: state[n] for n in updated},
                      {n: state[n].copy() for n in updated}]
        grad_outputs = [o.name for o in self._grad.get_outputs()]
        self.buffers = [n for n in state if next_name(n) in grad_outputs]
        self._fixed = {n: state[n] for n in state if n not in updated}
        bad = [n for n in self.buffers if state[n].dtype != np.float32]
        if bad:
            raise ShapeError(f"buffers {bad} are not float32; MPI averages float32 buffers")
        sizes = [split.grad_size] + [state[n].size for n in self.buffers]
        offsets = np.cumsum([0] + sizes)
        self._packed = np.zeros(offsets[-1] + 3, np.float32)  # + loss, correct, count
        self._scaled = int(offsets[-1]) + 1                     # what is multiplied by n_r
        self._views = {GRADS: self._packed[:split.grad_size],
                       LOSS: self._packed[-3:-2].reshape(()),
                       CORRECT: self._packed[-2:-1].reshape(())}
        for name, lo, hi in zip(self.buffers, offsets[1:-1], offsets[2:]):
            self._views[next_name(name)] = self._packed[lo:hi].reshape(state[name].shape)
        self._counter = np.zeros((), np.int64)  # the dropout counter this rank feeds
        self._host = {n: np.zeros((), np.float32) for n in (LOSS, CORRECT)}
        self._grad_io = [self._bind_gradient(k) for k in (0, 1)]
        self._update_io = [self._bind_update(k) for k in (0, 1)]
        self._eval_io = [self._bind_eval(k) for k in (0, 1)]
        self._current = 0
        self._batch: tuple[np.ndarray, ...] | None = None

    def _inputs(self, session, k: int) -> dict[str, np.ndarray]:
        have = {**self._fixed, **self._sets[k]}
        return {i.name: have[i.name] for i in session.get_inputs() if i.name in have}

    def _bind_gradient(self, k: int):
        io = self._grad.io_binding()
        for name, array in self._inputs(self._grad, k).items():
            _bind_in(io, name, self._counter if name == STEP else array)
        for o in self._grad.get_outputs():
            _bind_out(io, o.name, self._views[o.name])
        return io

    def _bind_update(self, k: int):
        io = self._update.io_binding()
        for name, array in self._inputs(self._update, k).items():
            _bind_in(io, name, array)
        _bind_in(io, GRADS, self._views[GRADS])
        for name, array in self._sets[1 - k].items():
            _bind_out(io, next_name(name), array)
        return io

    def _bind_eval(self, k: int):
        io = self._eval.io_binding()
        for name, array in self._inputs(self._eval, k).items():
            _bind_in(io, name, array)
        for o in self._eval.get_outputs():
            if o.name in self._host:
                _bind_out(io, o.name, self._host[o.name])
        return io

    # ---- state -----------------------------------------------------------------------------
    def _current_state(self) -> dict[str, np.ndarray]:
        return {**self._fixed, **self._sets[self._current]}

    def load_state(self, values: Mapping[str, np.ndarray]) -> None:
        current = self._current_state()
        for name, array in values.items():
            if name not in current:
                raise ShapeError(f"the step has no state named {name!r}")
            target = current[name]
            np.copyto(target, np.asarray(array, target.dtype).reshape(target.shape))

    def read_state(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        current = self._current_state()
        return {n: current[n].copy() for n in (current if names is None else names)}

    def _allreduce(self, buffer: np.ndarray) -> None:
        """Sum `buffer` over the ranks, in place; WorkerLostError when a rank is gone."""
        try:
            self.comm.Allreduce(self._in_place, buffer, op=self._sum)
        except self._mpi_error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerLostError(f"the all-reduce failed ({first}): another worker died or "
                                  "cannot be reached") from None

    # ---- running ---------------------------------------------------------------------------
    def stage(self, x, y) -> tuple[np.ndarray, ...]:
        return tuple(np.ascontiguousarray(p) for p in data_parts(x, y))

    def _batch_buffers(self, parts: tuple, m: int) -> tuple[np.ndarray, ...]:
        """Arrays of m rows bound as the gradient graph's batch (rebound when m changes)."""
        if self._batch is None or len(self._batch[0]) != m:
            self._batch = tuple(np.empty((m, *p.shape[1:]), p.dtype) for p in parts)
            for io in self._grad_io:
                for name, buffer in zip(self.data_names, self._batch):
                    _bind_in(io, name, buffer)
        return self._batch

    def step(self, parts: tuple, rows: np.ndarray) -> tuple[float, float]:
        """One synchronous step: this rank's `rows` of the staged `parts`, the others' shards
        of the same global batch. Returns the global batch's (mean loss, correct count)."""
        k, packed, m = self._current, self._packed, len(rows)
        if m:
            for part, buffer in zip(parts, self._batch_buffers(parts, m)):
                np.take(part, rows, axis=0, out=buffer)
            self._counter[...] = self._sets[k][STEP] * self.size + self.rank
            self._grad.run_with_iobinding(self._grad_io[k])
            packed[:self._scaled] *= m
            packed[-1] = m
        else:  # a global batch smaller than the number of ranks
            packed[:] = 0
        start = time.perf_counter()
        self._allreduce(packed)
        self.allreduce_s += time.perf_counter() - start
        packed[:self._scaled] /= packed[-1]
        for name in self.buffers:
            np.copyto(self._fixed[name], self._views[next_name(name)])
        self._update.run_with_iobinding(self._update_io[k])
        self._current, self.steps = 1 - k, self.steps + 1
        return float(packed[-3]), float(packed[-2])

    def train(self, staged, order: np.ndarray, batch_size: int, on_batch=None) -> Totals:
        total_loss, total_correct, n = 0.0, 0.0, len(order)
        for index, start in enumerate(range(0, n, batch_size)):
            rows = order[start:start + batch_size]
            lo, hi = shard_bounds(len(rows), self.size, self.rank)
            loss, correct = self.step(staged, rows[lo:hi])
            total_loss += loss * len(rows)
            total_correct += correct
            if on_batch is not None:
                on_batch(index, loss)
        return Totals(total_loss, total_correct, n)

    def _eval_step(self, *parts: np.ndarray) -> tuple[float, float]:
        io = self._eval_io[self._current]
        for name, part in zip(self.data_names, parts):
            io.bind_cpu_input(name, part)
        self._eval.run_with_iobinding(io)
        return float(self._host[LOSS]), float(self._host[CORRECT])

    def evaluate(self, staged, batch_size: int) -> Totals:
        """Loss and correct count over all of `staged`: each rank a contiguous part, the sums
        all-reduced (every rank must call it)."""
        lo, hi = shard_bounds(len(staged[0]), self.size, self.rank)
        local = run_batches(self._eval_step, tuple(p[lo:hi] for p in staged), batch_size) \
            if hi > lo else Totals(0.0, 0.0, 0)
        sums = np.array([local.loss, local.correct, local.count], np.float64)
        self._allreduce(sums)
        return Totals(float(sums[0]), float(sums[1]), int(sums[2]))


class MpiRuntime:
    """Data-parallel training over the ranks of an MPI job (CPU): steps through MpiStepRunner;
    graphs compile as on onnxruntime's CPU provider."""

    name = "mpi"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def compile(self, graph: Graph):
        from irkit.runtimes.onnxruntime import OrtGraph
        return OrtGraph(graph, "cpu")

    def step_runner(self, program, state: Mapping[str, np.ndarray], settings=None,
                    **options) -> MpiStepRunner:
        """The step cut in two around the all-reduce (`program.split(settings)`, unless
        `split` is given), one onnxruntime thread pool per worker by default."""
        from irkit import distributed
        split = options.pop("split", None) or program.split(settings)
        options.setdefault("threads", distributed.threads_per_worker())
        return MpiStepRunner(program.train, program.eval, state, program.data_names,
                             split=split, device=self.device, **options)
