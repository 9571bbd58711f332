"""The onnxruntime runtime: sessions on CPU or CUDA, and the step runner that trains on them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

import numpy as np
import onnxruntime as ort
from irkit.passes.checkpoint_activations import RECOMPUTE
from irkit.passes.data_prefix import split_data_prefix
from irkit.passes.eliminate_common_subexpressions import EliminateCommonSubexpressionsPass
from irkit.passes.eliminate_dead_nodes import EliminateDeadNodesPass
from irkit.passes.lower_losses import LowerSoftmaxCrossEntropyPass
from irkit.passes.lower_small_convs import LowerSmallConvsPass
from irkit.passes.manager import PassManager
from irkit.runtimes import ort_values
from irkit.runtimes.base import (
    GivenState,
    Totals,
    adopted_names,
    choose_device,
    data_parts,
    run_batches,
    state_pairs,
)

from irkit.errors import ShapeError, ort_message
from irkit.ir import Graph
from irkit.onnx_io import model_bytes
from irkit.onnx_io._wire import external_names, model_files
from irkit.signature import CORRECT, COUNT, LOSS, TARGET, next_name

_dlls_preloaded = False
VERBOSE_ENV = "IRKIT_VERBOSE"  # set (by `irkit --verbose`): onnxruntime's own log is shown


def log_severity() -> int:
    """How much of onnxruntime's own log (its colored `[E:onnxruntime:...]` lines) irkit's
    sessions print: 4, fatal only, unless IRKIT_VERBOSE is set (2: warnings and errors). irkit
    reports failures itself, in one line, from the exceptions onnxruntime raises."""
    return 2 if os.environ.get(VERBOSE_ENV, "") not in ("", "0") else 4


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for onnxruntime, by the rule every runtime follows (choose_device)."""
    return choose_device(device, _cuda_unusable)


def _cuda_unusable() -> str | None:
    """Why onnxruntime cannot run on CUDA here, or None when it can."""
    global _dlls_preloaded
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if not _dlls_preloaded and hasattr(ort, "preload_dlls"):
        with _quiet():  # it prints each library it cannot find; the probe below decides
            try:
                ort.preload_dlls()
            except Exception:  # missing CUDA libraries surface when the session starts
                pass
        _dlls_preloaded = True
    if not _cuda_session_works():
        return "CUDA is not usable here (no GPU, or CUDA 13/cuDNN 9 libraries missing)"
    return None


_cuda_ok: bool | None = None


def _cuda_session_works() -> bool:
    global _cuda_ok
    if _cuda_ok is None:
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        ort.set_default_logger_severity(4)  # a failed provider load logs errors otherwise
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            s = ort.InferenceSession(m.SerializeToString(), so,
                                     providers=["CUDAExecutionProvider"])
            _cuda_ok = s.get_providers()[0] == "CUDAExecutionProvider"
        except Exception:
            _cuda_ok = False
        finally:
            ort.set_default_logger_severity(log_severity())
    return _cuda_ok


@contextlib.contextmanager
def _quiet():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield


def make_session(model_bytes: bytes, device: str = "cpu", threads: int | None = None,
                 memory_pattern: bool = True,
                 initializers: Mapping[str, np.ndarray] | None = None,
                 arena: bool = True, memory_reuse: bool = True) -> ort.InferenceSession:
    """An InferenceSession for a resolved device ('cpu' or 'cuda'); onnxruntime's own log
    is silent unless asked for (`log_severity`). `memory_pattern` False turns off
    onnxruntime's planned one-block memory pattern (the arena still reuses memory): train
    steps use that, see OrtStepRunner. `initializers`: the arrays of the model's initializers
    that `session_model` left out of its bytes, given to onnxruntime as they are (no
    serialized copy; protobuf's 2 GiB limit does not apply to them; onnxruntime 1.31 copies
    them while the session is made: benchmarks/README.md, bench_large_model). `arena` False:
    no CPU memory arena (runtimes.memory measures the bytes live that way). `memory_reuse`
    False: the allocation planner does not hand a dead buffer to a later value of the same
    size (a checkpointed step's session: see OrtStepRunner)."""
    ort.set_default_logger_severity(log_severity())  # the process-wide logger, too
    so = ort.SessionOptions()
    if initializers:
        names = list(initializers)
        so.add_external_initializers(names, [ortvalue(initializers[n]) for n in names])
    so.log_severity_level = log_severity()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = memory_pattern
    so.enable_cpu_mem_arena = arena
    so.enable_mem_reuse = memory_reuse
    if threads:
        so.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(model_bytes, so, providers=providers)


def session_bytes(graph: Graph, device: str = "cpu") -> bytes:
    """The graph as onnxruntime runs it: standard ONNX, on a copy (the graph is left as it
    is) with first lowered (1) the ops that onnxruntime's CPU provider would run as their
    general ONNX functions (LowerSoftmaxCrossEntropyPass tells what and why) and (2) on the
    CPU only, the 2-D convolutions it runs slowly there, those with few output positions, to
    one Gemm each (LowerSmallConvsPass), their im2col columns then merged with the weight
    gradient's (measured on CPU kernels only: CUDA's convolutions are left as they are)."""
    return model_bytes(_lowered(graph, device))


def _lowered(graph: Graph, device: str = "cpu") -> Graph:
    """The graph with the lowerings `session_bytes` describes (a copy when there are any)."""
    losses = any(n.op_type == LowerSoftmaxCrossEntropyPass.op_type for n in graph.nodes)
    convs = device == "cpu" and any(LowerSmallConvsPass.applies(n) for n in graph.nodes)
    if losses or convs:
        graph = graph.copy()
    if losses:
        LowerSoftmaxCrossEntropyPass()(graph)
    if convs:
        PassManager([LowerSmallConvsPass(), EliminateCommonSubexpressionsPass(),
                     EliminateDeadNodesPass()])(graph)
    return graph


def session_model(graph: Graph, device: str = "cpu") -> tuple[bytes, dict[str, np.ndarray]]:
    """`session_bytes(graph, device)` for `make_session(bytes, ..., initializers=...)`: when
    graph's weights are above the external-data threshold (`external_names`: 1 GiB, or
    IRKIT_EXTERNAL_DATA_BYTES), its large initializers are left out of the bytes (each
    written as external data of a file that is never read) and returned as arrays, which
    onnxruntime takes as they are; else (bytes, {})."""
    graph = _lowered(graph, device)
    names = external_names(graph)
    if not names:
        return model_bytes(graph), {}
    # the location is never opened: every tensor that names it is given by add_external_...
    head, _ = model_files(graph, "irkit-in-memory-initializers", names)
    return head, {n: graph.initializers[n].const for n in names}


def _session(graph: Graph, device: str, threads: int | None, memory_pattern: bool = True,
             memory_reuse: bool = True) -> ort.InferenceSession:
    model, initializers = session_model(graph, device)
    return make_session(model, device, threads, memory_pattern, initializers,
                        memory_reuse=memory_reuse)


def recomputes(graph: Graph) -> bool:
    """Whether a step graph recomputes activations (CheckpointActivationsPass): its session
    then runs without the planner's memory reuse. That reuse gives a later value the buffer
    of a dead one of the same size, and the buffer is then held for both; onnxruntime's own
    trainer (ORTModule) turns it off for the same reason. Measured on the ViT train step
    checkpointed (SGD, batch 256): 11.45 -> 8.21 MiB, the same time; an MLP, digits_cnn and
    the unchecked transformer steps are the same either way (benchmarks/README.md)."""
    return any(n.name.startswith(RECOMPUTE) for n in graph.nodes)


class OrtGraph:
    """A compiled graph on onnxruntime: call it with numpy feeds."""

    def __init__(self, graph: Graph, device: str = "cpu", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        self.session = _session(graph, self.device, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {v.name: v.dtype for v in graph.inputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ShapeError(f"missing inputs {missing}; feed every graph input")
        cast = {n: np.asarray(feeds[n], dtype=self._dtypes[n]) for n in self.input_names}
        try:
            return ort_values.run(self.session, None, cast)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ShapeError(f"onnxruntime could not run the graph: {ort_message(e)}") from None


class OrtRuntime:
    """Runtime protocol for onnxruntime."""

    name = "onnxruntime"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def compile(self, graph: Graph) -> OrtGraph:
        return OrtGraph(graph, self.device)

    def step_runner(self, program, state: Mapping[str, np.ndarray], settings=None,
                    **options) -> OrtStepRunner:
        """An OrtStepRunner for `program`'s graphs; its threads follow the batch size."""
        options.setdefault("batch_size", getattr(settings, "batch_size", None))
        return OrtStepRunner(program.train, program.eval, state, program.data_names,
                             device=self.device, **options)


def ortvalue(array: np.ndarray, device: str = "cpu") -> ort.OrtValue:
    """An OrtValue on `device`; 0-d arrays keep their 0-d shape (np.ascontiguousarray would
    make them 1-d)."""
    array = np.require(array, requirements="C")
    if array.ndim == 0:
        v = ort.OrtValue.ortvalue_from_shape_and_type([], array.dtype, device, 0)
        v.update_inplace(array.reshape(()))
        return v
    return ort.OrtValue.ortvalue_from_numpy(array, device, 0)


def empty_ortvalue(shape, dtype, device: str = "cpu") -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype), device, 0)


# batch size x weights up to which a step runs on one intra-op thread: there a thread pool's
# hand-offs cost more than they save (measured on a 2-core CPU: up to 2**19 one thread is as
# fast or faster; above, the pool wins)
TINY_STEP = 2 ** 19


def threads_for(weights: Mapping[str, np.ndarray], batch_size: int | None) -> int | None:
    """1 intra-op thread for a tiny step (see TINY_STEP); None (onnxruntime's default) else."""
    if batch_size is None:
        return None
    return 1 if batch_size * sum(np.size(w) for w in weights.values()) <= TINY_STEP else None


# A train pass gathers the rows of several batches at once, in order, into buffers bound
# once, a slot per batch: an Iris epoch is one gather and 8 runs with nothing to copy or bind
# (a copy a step cost 1.2 us of its 18). At most SLOTS batches (two bindings a slot, each
# binding all the state: ~20 us to make) and SLOT_BYTES of buffer (a batch above it has a
# slot of its own). One pair of buffers serves every pass and batch size.
SLOTS = 64
SLOT_BYTES = 1 << 22


class OrtStepRunner:
    """The StepRunner of onnxruntime: a train session and an eval session on one device.

    Updated state (params, optimizer slots, buffers, the step count) lives in OrtValues in two
    sets that ping-pong: a step reads set A and writes set B, the next reads B and writes A,
    through two IOBindings made once (so a run never writes what it reads). Set A adopts the
    arrays of a GivenState (no copy of the weights; `_make_sets`). State a step reads but
    does not write (the learning rate) has one OrtValue bound in both. The loss and correct
    count are bound to host numpy scalars by address. A train pass gathers the rows of many
    batches at once into buffers bound once (see SLOTS), so a step costs one
    `run_with_iobinding`. A data prefix of the graphs (passes/data_prefix.py: a Normalize
    layer) runs once, on the data `stage` gets.
    """

    def __init__(self, train: Graph, evaluate: Graph, state: Mapping[str, np.ndarray],
                 data: tuple[str, ...], device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        self.device = resolve_device(device)
        self.data_names = tuple(data)  # the inputs, then the target (if the step reads one)
        self.input_name = self.data_names[0]
        self._dtypes = {v.name: np.dtype(v.dtype) for v in train.inputs}
        self.updated, fixed = state_pairs(train, data)
        missing = [n for n in self.updated + fixed if n not in state]
        if missing:
            raise ShapeError(f"no initial value for the step's state {missing}")
        weights = {n: state[n] for n in state_pairs(evaluate, data)[1]}
        self.threads = threads or threads_for(weights, batch_size)
        # row-wise work on the batch that reads only constants (a Normalize layer) runs once,
        # on the staged data: Iris step 18.8 -> 17.6 us (passes/data_prefix.py)
        prefix = split_data_prefix([train, evaluate], self.input_name)
        self._prefix = None if prefix is None else OrtGraph(prefix.graph, self.device,
                                                            self.threads)
        train, evaluate = (train, evaluate) if prefix is None else prefix.graphs
        # no memory pattern: a CNN step's peak about halves, same speed (benchmarks/README.md)
        self.train_session = _session(train, self.device, self.threads, memory_pattern=False,
                                      memory_reuse=not recomputes(train))
        # the eval session is made on first use: the first step is ready sooner, and a run
        # without validation never makes it
        self._evaluate_graph, self._eval_io = evaluate, None
        self._make_sets(state, fixed, isinstance(state, GivenState))
        self._host = {n: np.zeros((), np.float32) for n in (LOSS, CORRECT, COUNT)}
        # a per-token loss counts its predictions (`count`); else one per sample
        self._counted = any(o.name == COUNT for o in self.train_session.get_outputs())
        self._current = 0
        # the batch buffers (rows of each data array; grown on demand) and, per (first row,
        # rows), the two train bindings that read those rows of them
        self._buffers: tuple[np.ndarray, ...] | None = None
        self._slots: dict[tuple[int, int], list] = {}
        self._plans: dict[tuple[int, int], list] = {}  # see _plan
        self._eval_bound: tuple[np.ndarray, ...] | None = None

    def _make_sets(self, state: Mapping[str, np.ndarray], fixed: list[str],
                   adopt: bool) -> None:
        """The two state sets and the fixed state. On CPU an OrtValue shares its numpy
        array's memory: the first set (and the fixed state) adopts the arrays of a GivenState
        where it can (`adoptable`: no copy of the weights), else copies them; the second is
        new memory, first written by the first step. Arrays that alias each other are never
        both adopted: a step would write what it still reads."""
        names, cpu = self.updated + fixed, self.device == "cpu"
        kept = adopted_names(state, names, self._dtypes) if adopt and cpu else set()
        # (on CUDA the OrtValue is a device copy: the caller's array is read, never kept)
        first = {n: state[n] if n in kept or not cpu else np.array(state[n], order="C")
                 for n in names}
        second = {n: np.empty_like(first[n]) if first[n].ndim else first[n].copy()
                  for n in self.updated}
        # the numpy arrays behind the CPU OrtValues (n-d ones: a 0-d OrtValue is a copy):
        # they own the memory, so views of them stay valid after the runner is gone
        self._arrays = [{n: s[n] for n in self.updated if s[n].ndim and cpu}
                        for s in (first, second)]
        self._sets = [{n: ortvalue(s[n], self.device) for n in self.updated}
                      for s in (first, second)]
        self._fixed = {n: ortvalue(first[n], self.device) for n in fixed}
        self._fixed_arrays = {n: first[n] for n in fixed if first[n].ndim and cpu}

    def _binding(self, session: ort.InferenceSession, src: int, dst: int | None):
        io = session.io_binding()
        names = {i.name for i in session.get_inputs()}
        for k, v in {**self._fixed, **self._sets[src]}.items():
            if k in names:
                io.bind_ortvalue_input(k, v)
        if dst is not None:
            for k, v in self._sets[dst].items():
                io.bind_ortvalue_output(next_name(k), v)
        for o in session.get_outputs():
            if o.name in self._host:
                io.bind_output(o.name, "cpu", 0, np.float32, [], self._host[o.name].ctypes.data)
        return io

    # ---- state -----------------------------------------------------------------------------
    def load_state(self, values: Mapping[str, np.ndarray]) -> None:
        for name, array in values.items():
            target = self._fixed[name] if name in self._fixed else \
                self._sets[self._current].get(name)
            if target is None:
                raise ShapeError(f"the step has no state named {name!r}")
            want = target.numpy()
            target.update_inplace(np.require(np.asarray(array, want.dtype).reshape(want.shape),
                                             requirements="C"))

    def read_state(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        current = {**self._fixed, **self._sets[self._current]}
        return {n: current[n].numpy().copy() for n in (current if names is None else names)}

    def state_views(self) -> dict[str, np.ndarray]:
        """The current state as read-only views of the runner's own arrays (no copy; 0-d
        values and a CUDA state as host copies). A view keeps its memory alive, but its
        values are the current ones only until the second next step or a load_state
        rewrites that set."""
        arrays = {**self._fixed_arrays, **self._arrays[self._current]}
        values = {**self._fixed, **self._sets[self._current]}
        views = {n: arrays[n].view() if n in arrays else values[n].numpy().copy()
                 for n in values}
        for v in views.values():
            v.flags.writeable = False
        return views

    # ---- running ---------------------------------------------------------------------------
    def stage(self, x, y) -> tuple[np.ndarray, ...]:
        """C-ordered arrays in the step's data order (x one array or one per input, y None
        when the step reads no target), each of its input's dtype, the first input prepared
        (the data prefix applied)."""
        return self._parts(data_parts(x, y))

    def _parts(self, parts: tuple) -> tuple[np.ndarray, ...]:
        return tuple(self._prepared(p) if i == 0 else
                     np.ascontiguousarray(p, self._dtypes.get(name))
                     for i, (name, p) in enumerate(zip(self.data_names, parts)))

    def _prepared(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, self._dtypes.get(self.input_name))
        return x if self._prefix is None else self._prefix({self.input_name: x})[0]

    def step(self, *parts: np.ndarray) -> tuple[float, float]:
        """One train step on one batch (its arrays in the step's data order: `step(x, y)`
        for one input): (mean loss, correct count). The batch is copied into the bound
        buffers (a copy costs less than binding a new array)."""
        parts = self._parts(parts)
        n = len(parts[0])
        for buffer, part in zip(self._batch_buffers(n, parts), parts):
            buffer[:n] = part  # (assignment: 0.28 us; np.copyto's wrapper: 0.42 us)
        return self._run_step(self._slot(0, n))

    def _run_step(self, bindings: list) -> tuple[float, float]:
        self.train_session.run_with_iobinding(bindings[self._current])
        self._current = 1 - self._current
        return float(self._host[LOSS]), float(self._host[CORRECT])

    def _batch_buffers(self, rows: int, parts: tuple) -> tuple[np.ndarray, ...]:
        """Buffers with room for `rows` rows shaped like the parts' rows; a larger request
        replaces them, and the bindings that read the old ones by address."""
        if self._buffers is None or len(self._buffers[0]) < rows:
            self._buffers = tuple(np.empty((rows, *p.shape[1:]), p.dtype) for p in parts)
            self._slots, self._plans = {}, {}
        return self._buffers

    def _plan(self, rows: int, batch_size: int) -> list:
        """[(rows, bindings)] of the slots that cut the first `rows` rows of the buffers into
        batches of batch_size (made once per pair: a lookup a step costs 0.5 us)."""
        plan = self._plans.get((rows, batch_size))
        if plan is None:
            plan = self._plans[(rows, batch_size)] = [
                (min(batch_size, rows - start), self._slot(start, min(batch_size, rows - start)))
                for start in range(0, rows, batch_size)]
        return plan

    def _slot(self, start: int, rows: int) -> list:
        """The two train bindings (state set A -> B, B -> A) that read rows start..start+rows
        of the batch buffers: made once per slot, so steps bind nothing anew (a bind costs
        ~1.2 us; a binding binds all the state)."""
        bindings = self._slots.get((start, rows))
        if bindings is None:
            bindings = [self._binding(self.train_session, a, b) for a, b in ((0, 1), (1, 0))]
            for io in bindings:
                for name, buffer in zip(self.data_names, self._buffers):
                    io.bind_cpu_input(name, buffer[start:start + rows])
            self._slots[(start, rows)] = bindings
        return bindings

    def _eval_step(self, *parts: np.ndarray) -> tuple[float, ...]:
        if self._eval_io is None:
            self.eval_session = _session(self._evaluate_graph, self.device, self.threads)
            self._eval_io = [self._binding(self.eval_session, a, None) for a in (0, 1)]
        bound = self._eval_bound
        if bound is None or any(p is not b for p, b in zip(parts, bound)):
            for io in self._eval_io:  # bound by address: keep the arrays alive
                for name, part in zip(self.data_names, parts):
                    io.bind_cpu_input(name, part)
            self._eval_bound = parts
        self.eval_session.run_with_iobinding(self._eval_io[self._current])
        figures = float(self._host[LOSS]), float(self._host[CORRECT])
        return (*figures, float(self._host[COUNT])) if self._counted else figures

    def train(self, staged, order: np.ndarray, batch_size: int, on_batch=None) -> Totals:
        """The rows of up to SLOTS batches (SLOT_BYTES) at a time gathered in order into
        buffers bound once, a slot per batch; then a step per slot: one run each. `order`
        holds row numbers of the staged data (the trainer's permutation; not range-checked)."""
        row_bytes = sum(p[:1].nbytes for name, p in zip(self.data_names, staged)
                        if name != TARGET)
        span = batch_size * max(1, min(SLOTS, SLOT_BYTES // max(row_bytes * batch_size, 1)))
        buffers = self._batch_buffers(min(span, len(order)), staged)
        total_loss, total_correct, total_counted, index = 0.0, 0.0, 0.0, 0
        for lo in range(0, len(order), span):
            rows = order[lo:lo + span]
            n = len(rows)
            # mode="clip": the rows are valid, and with "raise" numpy gathers through a buffer
            # of its own first (3x slower: 190 against 64 us for 1024 rows of 784 floats);
            # the method, not np.take (whose wrapper costs 0.6 us)
            for part, buffer in zip(staged, buffers):
                part.take(rows, axis=0, out=buffer[:n], mode="clip")
            for size, bindings in self._plan(n, batch_size):
                loss, correct = self._run_step(bindings)
                total_loss += loss * size
                total_correct += correct
                if self._counted:
                    total_counted += float(self._host[COUNT])
                if on_batch is not None:
                    on_batch(index, loss)
                index += 1
        return Totals(total_loss, total_correct, len(order),
                      total_counted if self._counted else None)

    def evaluate(self, staged, batch_size: int) -> Totals:
        return run_batches(self._eval_step, staged, batch_size)
