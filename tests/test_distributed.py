"""Data-parallel training on MPI (irkit.distributed, runtimes/mpi.py, the split step).

The end-to-end tests start real jobs with `mpiexec -n 2` (or `irkit train --workers 2`) on the
bundled data and compare them with one-process runs; they skip, with the reason, where mpi4py
or mpiexec is missing. The split step and the runner's arithmetic are also checked in-process
(a one-rank communicator), and the paths that need no MPI (the error without mpi4py, the
one-process path never importing it) always run.
"""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from irkit.runtimes import make_step_runner
from irkit.runtimes.reference import ReferenceGraph
from onnx import numpy_helper

from irkit import nn
from irkit.cli.launch import _Relay, find_mpiexec
from irkit.onnx_io import to_onnx
from irkit.signature import GRADS, STEP, TARGET
from irkit.train.losses import get_loss
from irkit.train.optimizers import get_optimizer
from irkit.train.sources import ModuleSource
from irkit.train.step import build_split_graphs, build_step_graphs

TIMEOUT = 180  # seconds a job may take before the test calls it hung


def _mpi_missing() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'irkit-nn[distributed]')"
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception as e:  # noqa: BLE001  (mpi4py without a loadable MPI library)
        return f"mpi4py cannot load an MPI library: {str(e).splitlines()[0]}"
    try:
        find_mpiexec()
    except Exception:  # noqa: BLE001
        return "mpiexec is not installed (pip install 'irkit-nn[distributed]')"
    return None


MPI_MISSING = _mpi_missing()
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))


def _clean_env() -> dict[str, str]:
    """This environment without any MPI launcher's variables (the tests may run under one)."""
    launcher = ("PMI_", "OMPI_", "MPI_LOCAL", "PMIX_", "HYDRA_")
    return {k: v for k, v in os.environ.items() if not k.startswith(launcher)}


def irkit(*args: str, cwd: Path, workers: int = 1, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    """`irkit ARGS` in one process, or under `mpiexec -n workers`."""
    command = [sys.executable, "-m", "irkit.cli", *args]
    if workers > 1:
        command = [find_mpiexec(), "-n", str(workers), *command]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          env=env or _clean_env())
    if check:
        assert done.returncode == 0, done.stderr
    return done


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def assert_same_state(a: Path, b: Path) -> None:
    """Same initializer names, shapes and dtypes; values equal to float32 rounding."""
    wa, wb = initializers(a), initializers(b)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        assert wa[name].dtype == wb[name].dtype and wa[name].shape == wb[name].shape, name
        np.testing.assert_allclose(wa[name], wb[name], rtol=2e-5, atol=2e-6, err_msg=name)


DROPOUT_RECIPE = """
[model]
name = "iris_dropout"
scaling = "standard"
layers = [
  { type = "dense", units = 16, activation = "relu" },
  { type = "dropout", rate = 0.3, seed = 5 },
  { type = "dense", units = 3 },
]
[data]
dataset = "iris"
[train]
optimizer = "adam"
lr = 0.01
seed = 2
"""


# ---- the split step ----------------------------------------------------------------------------
def _graphs(layers, optimizer):
    source = ModuleSource(nn.Sequential(layers), (4,), seed=0)
    g = build_step_graphs(source, get_loss("sparse_categorical_crossentropy"), optimizer)
    return source, g, build_split_graphs(g.train, g.params, g.buffers, g.slots, optimizer)


SPLIT_CASES = {
    "adam-flat": (lambda: [nn.Dense(8, activation="relu"), nn.Dense(3)], "adam", {}),
    "sgd-momentum": (lambda: [nn.Dense(8, activation="relu"), nn.Dense(3)], "sgd",
                     {"momentum": 0.9}),
    "adam-dropout-batchnorm": (lambda: [nn.Dense(8), nn.BatchNorm(), nn.ReLU(),
                                        nn.Dropout(0.3, seed=1), nn.Dense(3)], "adam", {}),
}


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_step_is_the_train_step(case):
    """Gradient graph then update graph give what the one-graph step gives, state named alike;
    both are standard ONNX."""
    layers, name, options = SPLIT_CASES[case]
    optimizer = get_optimizer(name, **options)
    source, g, split = _graphs(layers(), optimizer)
    for graph in (split.gradient, split.update):
        onnx.checker.check_model(to_onnx(graph), full_check=True)
    state = g.initial_state(source.weights(), 0.01)
    state[STEP] = np.array(3, np.int64)
    rng = np.random.default_rng(0)
    feeds = {**state, g.input_name: rng.normal(size=(6, 4)).astype(np.float32),
             TARGET: rng.integers(0, 3, 6)}

    def run(graph, extra=None):
        inputs = {v.name: (extra or {}).get(v.name, feeds.get(v.name)) for v in graph.inputs}
        return dict(zip([v.name for v in graph.outputs], ReferenceGraph(graph)(inputs)))
    whole = run(g.train)
    grads = run(split.gradient)
    updated = run(split.update, {GRADS: grads[GRADS]})
    assert grads[GRADS].shape == (split.grad_size,)
    written = {**{k: v for k, v in grads.items() if k != GRADS}, **updated}
    assert sorted(written) == sorted(whole)
    for key, value in whole.items():
        np.testing.assert_allclose(written[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_split_step_refuses_another_optimizer():
    """A step written with Adam's slots cannot be updated by SGD with momentum."""
    from irkit.errors import DataError
    _, g, _ = _graphs([nn.Dense(8, activation="relu"), nn.Dense(3)], get_optimizer("adam"))
    with pytest.raises(DataError, match="optimizer"):
        build_split_graphs(g.train, g.params, g.buffers, g.slots,
                           get_optimizer("sgd", momentum=0.9))


def test_shard_bounds_cover_each_row_once():
    from irkit.runtimes.mpi import shard_bounds
    for n in (0, 1, 7, 15, 16):
        for size in (1, 2, 3, 5):
            bounds = [shard_bounds(n, size, r) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


@needs_mpi
def test_one_rank_runner_trains_like_onnxruntime():
    """MpiStepRunner on a one-rank communicator (split graphs, packed all-reduce, dropout
    counter, averaged BatchNorm statistics) follows OrtStepRunner step for step."""
    from mpi4py import MPI
    case = SPLIT_CASES["adam-dropout-batchnorm"]
    source, g, split = _graphs(case[0](), get_optimizer("adam"))
    state = g.initial_state(source.weights(), 0.01)
    ort_runner = make_step_runner("onnxruntime", g, state)
    mpi_runner = make_step_runner("mpi", g, state, split=split, comm=MPI.COMM_SELF, threads=1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int64)
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(50)
        a = ort_runner.train(ort_runner.stage(x, y), order, 16)
        b = mpi_runner.train(mpi_runner.stage(x, y), order, 16)
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-5)
        assert (a.correct, a.count) == (b.correct, b.count)
    ea, eb = ort_runner.evaluate((x, y), 20), mpi_runner.evaluate((x, y), 20)
    np.testing.assert_allclose(eb.loss, ea.loss, rtol=1e-5)
    sa, sb = ort_runner.read_state(), mpi_runner.read_state()
    assert sorted(sa) == sorted(sb) and int(sb[STEP]) == 8
    for name in sa:
        np.testing.assert_allclose(sb[name], sa[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ---- jobs: N workers against one process --------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("optimizer,lr", [("sgd", "0.1"), ("adam", "0.01")])
def test_two_workers_equal_one_process(tmp_path, optimizer, lr):
    """`mpiexec -n 2 irkit train` with global batch 15 (shards of 7 and 8 rows) ends with the
    weights and optimizer state of one process with batch 15."""
    args = ["train", "iris_mlp", "--epochs", "2", "--batch-size", "15", "--optimizer",
            optimizer, "--lr", lr, "--json"]
    one = irkit(*args, "-o", "one.onnx", "--save-training", "one.t.onnx", cwd=tmp_path)
    two = irkit(*args, "-o", "two.onnx", "--save-training", "two.t.onnx", cwd=tmp_path,
                workers=2)
    assert '"workers": 2' in two.stdout and '"workers": 1' in one.stdout
    assert two.stdout.count('"workers"') == 1  # rank 0 alone reports
    assert_same_state(tmp_path / "one.t.onnx", tmp_path / "two.t.onnx")
    assert_same_state(tmp_path / "one.onnx", tmp_path / "two.onnx")


def test_each_rank_draws_its_own_dropout_masks():
    """The dropout counter a rank feeds its gradient graph (step·W + r) gives each rank of a
    step its own masks: same weights and rows, different gradients."""
    case = SPLIT_CASES["adam-dropout-batchnorm"]
    source, g, split = _graphs(case[0](), get_optimizer("adam"))
    state = g.initial_state(source.weights(), 0.01)
    rng = np.random.default_rng(3)
    feeds = {**state, g.input_name: rng.normal(size=(8, 4)).astype(np.float32),
             TARGET: rng.integers(0, 3, 8)}
    run = ReferenceGraph(split.gradient)
    grads = [run({**{v.name: feeds[v.name] for v in split.gradient.inputs},
                  STEP: np.array(5 * 2 + rank, np.int64)})[-1] for rank in (0, 1)]
    assert split.gradient.outputs[-1].name == GRADS
    assert not np.allclose(grads[0], grads[1])


@needs_mpi
def test_two_workers_with_dropout_repeat_themselves(tmp_path):
    """Dropout on 2 workers is seeded per rank: the same job twice gives the same files; the
    checkpoint folder is written (by rank 0) as in one process."""
    (tmp_path / "drop.toml").write_text(DROPOUT_RECIPE)
    for name in ("a", "b"):
        irkit("train", "drop.toml", "--epochs", "2", "--batch-size", "16", "-o",
              f"{name}.onnx", "--save-training", f"{name}.t.onnx", "--workers", "2",
              "--checkpoint", f"{name}_ck", cwd=tmp_path)
    # rank 0 alone keeps the checkpoint folder, as one process does
    assert sorted(p.name for p in (tmp_path / "a_ck").iterdir()) == [
        "best.onnx", "history.json", "last.onnx", "last_train.onnx"]
    wa, wb = initializers(tmp_path / "a.t.onnx"), initializers(tmp_path / "b.t.onnx")
    assert sorted(wa) == sorted(wb)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


@needs_mpi
def test_training_file_moves_between_worker_counts(tmp_path):
    """2 epochs on 2 workers then 2 on 1 process, and 2 on 1 then 2 on 2 workers, both end
    where 4 uninterrupted epochs on 1 process end."""
    base = ["--batch-size", "16", "--data", "iris"]
    irkit("train", "iris_mlp", "--epochs", "4", *base, "-o", "ref.onnx", "--save-training",
          "ref.t.onnx", cwd=tmp_path)
    for first, second, name in ((2, 1, "a"), (1, 2, "b")):
        irkit("train", "iris_mlp", "--epochs", "2", *base, "-o", f"{name}1.onnx",
              "--save-training", f"{name}1.t.onnx", cwd=tmp_path, workers=first)
        irkit("train", f"{name}1.t.onnx", "--epochs", "2", *base, "-o", f"{name}2.onnx",
              "--save-training", f"{name}2.t.onnx", cwd=tmp_path, workers=second)
        assert_same_state(tmp_path / "ref.t.onnx", tmp_path / f"{name}2.t.onnx")


# ---- faults -------------------------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env:
            return pid
    return None


def _previous_outputs(tmp_path: Path) -> dict[str, bytes]:
    irkit("train", "iris_mlp", "--epochs", "1", "-o", "out.onnx", "--save-training",
          "out.t.onnx", cwd=tmp_path)
    return {n: (tmp_path / n).read_bytes() for n in ("out.onnx", "out.t.onnx")}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and
            not line.startswith("epoch ")]


def _kill_rank_1(tmp_path: Path, launcher: list[str], options: list[str]
                 ) -> tuple[int, list[str]]:
    """`LAUNCHER irkit train digits_mlp OPTIONS ...`, rank 1 SIGKILLed mid-epoch: the exit
    code and the error lines (the previous run's outputs are checked untouched)."""
    before = _previous_outputs(tmp_path)
    job = subprocess.Popen([*launcher, sys.executable, "-m", "irkit.cli", "train",
                            "digits_mlp", "--epochs", "1000", *options, "-o", "out.onnx",
                            "--save-training", "out.t.onnx"], cwd=tmp_path, env=_clean_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + TIMEOUT
    while not any(line.startswith("epoch 1/") for line in lines):  # training is under way
        assert job.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    victim = _rank_pid(job.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    try:
        code = job.wait(timeout=60)
    finally:
        job.kill()
    reader.join(10)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    return code, _error_lines("".join(lines))


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killed_worker_ends_the_job_with_one_line(tmp_path):
    """SIGKILL to rank 1 mid-epoch: the job ends (no hang), one line names rank 1, and the
    outputs of the previous run are untouched."""
    code, errors = _kill_rank_1(tmp_path, [], ["--workers", "2"])
    assert code != 0
    assert len(errors) == 1 and errors[0].startswith("irkit: error: rank 1:"), errors


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killed_worker_under_a_bare_mpiexec_is_named_in_one_line(tmp_path):
    """Under `mpiexec -n 2` itself, Hydra SIGKILLs the other rank at once and printed only its
    banner: the dead rank's watchdog says the job's one irkit line (mpiexec's banner stays:
    it is mpiexec's)."""
    code, errors = _kill_rank_1(tmp_path, [find_mpiexec(), "-n", "2"], [])
    assert code != 0
    irkit_lines = [line for line in errors if line.startswith("irkit: ")]
    assert irkit_lines == ["irkit: error: rank 1: the worker died without a word (killed by "
                           "a signal, or out of memory); the job was stopped"], errors


RAISING_JOB = """
import sys
from irkit import distributed
from irkit.cli.app import handle_errors
from irkit.cli.jobs import run_training
from irkit.errors import DataError
from irkit.train.callbacks import LambdaCallback

def fail(epoch, logs):
    if epoch == 1 and distributed.rank() == 1:
        raise DataError("the disk of rank 1 is full")

handle_errors(run_training)("iris_mlp", "out.onnx", save_training="out.t.onnx",
                            progress=False, callbacks=[LambdaCallback(on_epoch_end=fail)],
                            epochs=50)
"""


@needs_mpi
def test_raising_worker_ends_the_job_with_one_line(tmp_path):
    """A worker that raises mid-run: one line `irkit: error: rank 1: ...`, the job ends, the
    previous outputs stay."""
    before = _previous_outputs(tmp_path)
    command = [find_mpiexec(), "-n", "2", sys.executable, "-c", RAISING_JOB]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, env=_clean_env())
    assert done.returncode != 0
    # MPICH itself may add its error stack when the abort tears rank 0's all-reduce down;
    # `--workers` shows what remains after the launcher's filter of mpiexec's own lines
    errors = _error_lines(_relayed(done.stderr))
    assert errors == ["irkit: error: rank 1: the disk of rank 1 is full"], (errors, done.stderr)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before


def _relayed(text: str) -> str:
    """`text` as the --workers launcher relays it (mpiexec's and MPICH's lines dropped)."""
    class Stream:
        buffer = io.BytesIO()
    _Relay()._copy(text.encode(), Stream)
    return Stream.buffer.getvalue().decode()


def test_launch_names_the_rank_that_died(capsys):
    """The --workers launcher reads the failed rank from mpiexec's exit codes and prints one
    line instead of mpiexec's banner."""
    relay = _Relay()
    banner = (b"epoch 1/5  loss 1.0\n\n" + b"=" * 20 + b"\n=   BAD TERMINATION OF ONE OF YOUR "
              b"APPLICATION PROCESSES\n=   EXIT CODE: 9\n" + b"=" * 20 + b"\n[mpiexec@vm] Exit "
              b"codes: [vm] 0,0,9\nYOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed "
              b"(signal 9)\nThis typically refers to a problem with your application.\n")

    class Stream:
        buffer = io.BytesIO()
    relay._copy(banner, Stream)
    assert Stream.buffer.getvalue() == b"epoch 1/5  loss 1.0\n"
    assert relay.culprit(9) == "rank 2: the worker died (Killed (signal 9))"
    assert not relay.worker_spoke


# ---- without MPI --------------------------------------------------------------------------------
NO_MPI4PY = ("import sys; sys.modules['mpi4py'] = None; from irkit.cli import main; "
             "main(sys.argv[1:], prog_name='irkit')")


def test_launcher_variables_without_mpi4py_give_one_line(tmp_path):
    """Started as one of 2 ranks (the launcher's variables) where mpi4py cannot be imported:
    one line saying what to install, no output."""
    env = {**_clean_env(), "PMI_SIZE": "2", "PMI_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", NO_MPI4PY, "train", "iris_mlp", "-o",
                           "m.onnx", "--epochs", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        'irkit: error: rank 0: this process is one of 2 started by an MPI launcher, but '
        'mpi4py is not installed: pip install "irkit-nn[distributed]"'], done.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_workers_command_line_round_trips():
    """`--workers N` hands the workers the same options, parsed alike, without --workers."""
    from irkit.cli import main
    from irkit.cli.train import _argv_without_workers
    train = main.commands["train"]
    args = ["iris_mlp", "-o", "m.onnx", "--keep-last", "--json", "--lr", "0.05", "--epochs",
            "3", "--workers", "3", "--save-training", "t.onnx"]
    first = train.make_context("train", list(args))
    rebuilt = _argv_without_workers(first)
    assert rebuilt[0] == "train" and "--workers" not in rebuilt
    again = train.make_context("train", rebuilt[1:])
    assert again.params["workers"] is None
    assert {k: v for k, v in again.params.items() if k != "workers"} == {
        k: v for k, v in first.params.items() if k != "workers"}
