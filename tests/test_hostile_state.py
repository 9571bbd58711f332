"""Issue 23's findings on saved work and what irkit writes: a resumed run that keeps its best
epoch, shared checkpoint folders, signals and temp files, training that diverges, untrusted
names in outputs, nested inputs and bad histories, onnxruntime's own log lines. Each test
failed on the code before issue 23.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import irkit
from irkit.cli import main
from irkit.nn import Dense, Normalize


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *words: str) -> str:
    """Exit code != 0, no traceback, one stderr line `irkit: error: ...`, not 'unexpected'."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: "), lines
    assert "unexpected" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


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


def test_resume_that_does_not_beat_the_best_epoch_writes_the_best(best_last, tmp_path):
    """lr 5 makes epochs 4-5 worse: -o gets epoch 3's weights (those of a.onnx); it used to
    end in 'the step has no state named normalize.shift' and write nothing."""
    out = tmp_path / "b.onnx"
    r = cli("train", best_last / "s.onnx", "--data", "iris", "--epochs", 2, "--lr", 5,
            "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["best_epoch"] == 3
    a, b = weights(best_last / "a.onnx"), weights(out)
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


def _irkit(*args, cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`irkit ARGS` in a subprocess (no MPI launcher's variables inherited)."""
    launcher = ("PMI_", "OMPI_", "MPI_LOCAL", "PMIX_", "HYDRA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
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
