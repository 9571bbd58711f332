"""Issue 23's findings on saved work and what irkit writes: a resumed run that keeps its best
epoch, shared checkpoint folders, signals and temp files, training that diverges, untrusted
names in outputs, nested inputs and bad histories, onnxruntime's own log lines. Each test
failed on the code before issue 23.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_checks import cli, one_line_error
from onnx import numpy_helper

import irkit
from irkit.nn import Dense, Normalize


def weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _blobs(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 4)).astype(np.float32) + 2.0 * y[:, None] + 10.0
    return x, y


# ---- 1. a resume whose file ended on its best epoch ----------------------------------------
@pytest.fixture(scope="module")
def best_last(tmp_path_factory) -> Path:
    """iris_mlp, 3 epochs: the last epoch is the best (validation loss still falling)."""
    folder = tmp_path_factory.mktemp("resume")
    r = cli("train", "iris_mlp", "--epochs", 3, "--save-training", folder / "s.onnx",
            "-o", folder / "a.onnx", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["best_epoch"] == 3
    return folder


def test_resume_that_does_not_beat_the_best_epoch_writes_the_best(best_last, tmp_path,
                                                                  monkeypatch):
    """The issue's repro, verbatim: lr 5 makes epochs 4-5 worse, and b.onnx gets epoch 3's
    weights (those of a.onnx); it used to end in 'the step has no state named
    normalize.shift' and write nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.onnx").write_bytes((best_last / "s.onnx").read_bytes())
    r = cli("train", "s.onnx", "--data", "iris", "--epochs", "2", "--lr", "5", "-o", "b.onnx")
    assert r.exit_code == 0, r.output
    assert "kept epoch 3" in r.stderr, r.stderr
    a, b = weights(best_last / "a.onnx"), weights(tmp_path / "b.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_load_model_and_fit_keep_the_best_epoch_of_the_file(tmp_path):
    x, y = _blobs()
    model = irkit.Sequential([Normalize(), Dense(8, activation="relu"), Dense(3)])
    model.compile(optimizer="adam", lr=0.01, seed=0)
    model.fit(x, y, epochs=3, verbose=0)
    assert model.history.best_epoch == 3
    model.save(str(tmp_path / "s.onnx"))
    best = model.get_weights()
    resumed = irkit.load_model(str(tmp_path / "s.onnx"))
    resumed.fit(x, y, epochs=5, lr=3.0, verbose=0, patience=0)
    assert resumed.history.best_epoch == 3
    for name, value in resumed.get_weights().items():
        np.testing.assert_array_equal(value, best[name], err_msg=name)


def test_stored_best_weights_that_are_no_step_weights_are_refused_at_load(tmp_path):
    """A file whose best/ names are not the step's would fail after training: refused first."""
    x, y = _blobs()
    model = irkit.Sequential([Normalize(), Dense(3)])
    model.compile(optimizer="sgd", lr=0.01, seed=0)
    model.fit(x, y, epochs=2, verbose=0)
    proto = model.training_proto()
    proto.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32),
                                                           "best/normalize.shift"))
    path = tmp_path / "odd.onnx"
    path.write_bytes(proto.SerializeToString())
    r = cli("train", path, "--data", "iris", "--epochs", 3, "-o", tmp_path / "o.onnx")
    one_line_error(r, "best weights", "normalize.shift")
    assert not (tmp_path / "o.onnx").exists()


def _mpi_missing() -> str | None:
    try:
        from mpi4py import MPI  # noqa: F401

        from irkit.cli.launch import find_mpiexec
        find_mpiexec()
    except Exception as e:  # noqa: BLE001  (no mpi4py, no MPI library, no mpiexec)
        return f"--workers needs mpi4py and mpiexec: {str(e).splitlines()[0]}"
    return None


def _irkit(*args, cwd: Path, timeout: float = 120, env_extra: dict | None = None,
           **kwargs) -> subprocess.CompletedProcess:
    """`irkit ARGS` in a subprocess (no MPI launcher's variables inherited)."""
    launcher = ("PMI_", "OMPI_", "MPI_LOCAL", "PMIX_", "HYDRA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "irkit.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
def test_resume_under_workers_keeps_the_best_epoch(best_last, tmp_path):
    done = _irkit("train", best_last / "s.onnx", "--data", "iris", "--epochs", 2, "--lr", 5,
                  "-o", tmp_path / "c.onnx", "--workers", 2, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    a, c = weights(best_last / "a.onnx"), weights(tmp_path / "c.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name], c[name], err_msg=name)


# ---- 2. shared checkpoint folders ------------------------------------------------------------
def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s checkpoint lock until its stdin closes."""
    code = ("import sys; from irkit.safe_io import lock_folder; "
            f"lock = lock_folder({str(folder)!r}, '--checkpoint'); print('held', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_checkpoint_folder_is_refused_and_touches_nothing(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    theirs = folder / f".last.onnx.{os.getpid()}-abcd1234.tmp"  # in flight, its writer alive
    theirs.write_bytes(b"half a model")
    holder = _holder(folder)
    try:
        r = cli("train", "iris_mlp", "--epochs", 1, "--checkpoint", folder,
                "-o", tmp_path / "m.onnx")
        one_line_error(r, "in use by another irkit run", f"pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait()
    assert theirs.read_bytes() == b"half a model"
    assert not (tmp_path / "m.onnx").exists() and not (folder / "best.onnx").exists()
    r = cli("train", "iris_mlp", "--epochs", 1, "--checkpoint", folder, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output  # the lock went with the process that held it
    assert (folder / "best.onnx").exists()


# ---- 3. temporary files and signals ---------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_later_write_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    from irkit.safe_io import write_atomic
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".m.onnx.{dead}-abcd1234.tmp"
    kept = [tmp_path / f".m.onnx.{alive}-abcd1234.tmp",   # a writer still at work
            tmp_path / f".other.onnx.{dead}-abcd1234.tmp",  # another target's
            tmp_path / "m.onnx.tmp", tmp_path / f".m.onnx.{dead}-abcd1234.tmp.keep"]
    for path in [stale, *kept]:
        path.write_bytes(b"x")
    link = tmp_path / f".m.onnx.{dead}-zzzz1234.tmp"
    link.symlink_to(tmp_path / "m.onnx.tmp")
    write_atomic(tmp_path / "m.onnx", b"model")
    assert not stale.exists()
    assert all(p.exists() for p in kept) and link.is_symlink()
    assert (tmp_path / "m.onnx").read_bytes() == b"model"


def test_a_later_training_removes_what_a_killed_training_left(tmp_path):
    """The temporary files a SIGKILLed `irkit train` leaves (its pid, now dead, in their
    names) beside -o, --save-training and in the checkpoint folder: the next run's writes
    remove them."""
    dead, folder = _dead_pid(), tmp_path / "ck"
    folder.mkdir()
    left = [tmp_path / f".m.onnx.{dead}-a1b2c3d4.tmp", tmp_path / f".s.onnx.{dead}-a1b2c3d4.tmp"]
    left += [folder / f".{name}.{dead}-a1b2c3d4.tmp"
             for name in ("best.onnx", "last.onnx", "last_train.onnx", "history.json")]
    for path in left:
        path.write_bytes(b"\0" * 4096)  # a full-size model, cut off
    r = cli("train", "iris_mlp", "--epochs", 1, "-o", tmp_path / "m.onnx", "--save-training",
            tmp_path / "s.onnx", "--checkpoint", folder)
    assert r.exit_code == 0, r.output
    assert [p for p in [*tmp_path.iterdir(), *folder.iterdir()] if p.suffix == ".tmp"] == []


PAIR_WRITER = """
import os, sys
from irkit.cli.signals import catching_signals
from irkit.safe_io import write_all_atomic
folder = sys.argv[1]
with catching_signals():
    print("ready", flush=True)
    for i in range(10 ** 6):
        tag = str(i).encode() * 8
        write_all_atomic([(os.path.join(folder, "t.onnx"), tag * 200000),
                          (os.path.join(folder, "m.onnx"), tag)])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_leave_matching_pairs_and_no_temporary_file(tmp_path, signum):
    """A writer of (big training file, model) pairs, signalled at random moments: both files
    of the pair are always from the same write, and no temporary file is left."""
    rng = np.random.default_rng(int(signum))
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", PAIR_WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and "Interrupted" in err, err
        assert sorted(os.listdir(tmp_path)) in (["m.onnx", "t.onnx"], [])
        if (tmp_path / "m.onnx").exists():
            tag = (tmp_path / "m.onnx").read_bytes()
            assert (tmp_path / "t.onnx").read_bytes() == tag * 200000


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_training_ends_in_one_line_and_keeps_its_checkpoint(tmp_path, signum):
    folder = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "irkit.cli", "train", "digits_mlp",
                             "--epochs", "500", "--checkpoint", str(folder), "-o",
                             str(tmp_path / "m.onnx"), "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (folder / "last_train.onnx").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: interrupted by "
                                                   f"{signal.Signals(signum).name}"), lines
    assert out == ""
    left = sorted(p.name for p in folder.iterdir() if p.name != ".irkit.lock")
    assert left == ["best.onnx", "history.json", "last.onnx",
                    "last_train.onnx"]
    assert not (tmp_path / "m.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
    onnx.checker.check_model(onnx.load(str(folder / "last_train.onnx")), full_check=True)
    r = cli("train", folder / "last_train.onnx", "--data", "digits", "--epochs", 1,
            "-o", tmp_path / "resumed.onnx")
    assert r.exit_code == 0, r.output


def test_more_workers_than_cores_are_refused_with_the_core_count(tmp_path):
    from irkit.cli.launch import usable_cores
    r = cli("train", "iris_mlp", "-o", tmp_path / "m.onnx", "--workers", 1000)
    one_line_error(r, "--workers 1000", f"{usable_cores()} usable core")


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line holds `text` (this test's own folder)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_ends_every_worker_at_once(tmp_path, signum):
    folder = tmp_path / "ck"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "irkit.cli", "train", "iris_mlp", "--epochs", "100000",
         "--workers", "2", "--checkpoint", str(folder), "-o", str(tmp_path / "m.onnx"),
         "--json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (folder / "last_train.onnx").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signum)
    _, err = launcher.communicate(timeout=20)  # it used to hang for minutes
    assert launcher.returncode == 128 + signum, err
    assert err.splitlines() == [line for line in err.splitlines()
                                if line.startswith("irkit: error: interrupted by")], err
    assert len(err.splitlines()) == 1
    time.sleep(0.5)
    assert _processes_naming(str(tmp_path)) == []  # no worker trains on, orphaned
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
def test_a_launch_past_its_time_limit_is_stopped_in_one_line(tmp_path):
    done = _irkit("train", "iris_mlp", "-o", tmp_path / "m.onnx", "--workers", 2, cwd=tmp_path,
                  env_extra={"IRKIT_LAUNCH_TIMEOUT": "0.05"})
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "0 of 2 workers started within 0.05 s" in lines[0], lines
    assert _processes_naming(str(tmp_path)) == [] and not (tmp_path / "m.onnx").exists()


# ---- 4. silent nonsense ---------------------------------------------------------------------
def test_a_learning_rate_that_explodes_the_first_epoch_stops_in_one_line(tmp_path):
    r = cli("train", "iris_mlp", "--optimizer", "adam", "--lr", "1e6", "-o", tmp_path / "m.onnx",
            "--checkpoint", tmp_path / "ck")
    one_line_error(r, "epoch 1: training diverged", "--lr", "now 1e+06")
    assert not (tmp_path / "m.onnx").exists()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == []


@pytest.fixture(scope="module")
def iris_model(best_last) -> Path:
    return best_last / "a.onnx"


def test_predict_refuses_features_beyond_float32(iris_model, tmp_path):
    data = tmp_path / "big.csv"
    data.write_text("a,b,c,d\n1e39,1,1,1\n")
    one_line_error(cli("predict", iris_model, "--data", data, "--json"), "beyond float32")


def test_json_holds_null_never_bare_nan():
    from irkit.errors import json_text
    text = json_text({"a": float("nan"), "b": [float("inf"), np.float32(1.5)], "c": "x"})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": "x"}
    assert "NaN" not in text and "Infinity" not in text


# ---- 5. untrusted names in outputs ------------------------------------------------------------
def test_prediction_csv_neutralizes_formulas_and_quotes_separators():
    import csv
    import io

    from irkit.cli.predictor import Predictions
    names = ["=HYPERLINK(\"x\")", "+cmd|' /C calc'!A0", "a,b\nc"]
    p = Predictions("classify", np.zeros((2, 3)), np.array([0, 2]),
                    np.full((2, 3), 1 / 3), names, "logits")
    rows = list(csv.reader(io.StringIO(p.to_csv())))
    assert len(rows) == 3 and all(len(r) == 5 for r in rows)
    assert rows[1][0] == "'=HYPERLINK(\"x\")" and rows[2][0] == "a,b\nc"
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row[:1])
