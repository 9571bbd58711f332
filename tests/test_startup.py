"""Start-up costs a training run must not pay: modules that load only when their work comes.

Each check runs a fresh Python outside the checkout and lists what got imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import onnx


def test_import_irkit_leaves_onnx_unimported() -> None:
    """Building graphs needs numpy only; onnx (a quarter of a second) loads on export."""
    code = ("import sys, irkit; from irkit import ops; from irkit.ir import Graph; import numpy\n"
            "g = Graph(); x = g.add_input('x', numpy.float32, (2,)); ops.Cast(x, to=7)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir()).stdout
    assert out.strip() == "[]", out


def test_the_stratified_split_leaves_numpy_ma_unimported() -> None:
    """np.unique imports numpy.ma on first use (15 ms); the split of a training run avoids it."""
    code = ("import sys, numpy as np; from irkit.data import train_val_split\n"
            "y = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2])\n"
            "tr, va = train_val_split(len(y), 0.3, 0, y)\n"
            "assert sorted(np.concatenate([tr, va]).tolist()) == list(range(10))\n"
            "assert sorted(y[va].tolist()) == [0, 1, 2]\n"
            "print('numpy.ma' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir()).stdout
    assert out.strip() == "False", out


def test_irkit_train_loads_only_what_its_work_needs(tmp_path):
    """A plain training run imports neither onnx (30-45 ms of a 0.2 s run: irkit writes ONNX
    itself; outside the test suite's debug verification, which checks files with onnx), nor
    networkx (graph analysis only), nor mpi4py (a launcher's runs only), nor the eager tensors
    of irkit.numpy (60-100 ms of imports); its model is valid."""
    out = tmp_path / "iris.onnx"
    code = ("import sys; from irkit.cli import main\n"
            f"sys.argv = ['irkit', 'train', 'iris_mlp', '--epochs', '2', '-o', {str(out)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('onnx', 'networkx', 'mpi4py', 'irkit.numpy')\n"
            "             if m in sys.modules))\n")
    launcher = ("PMI_", "OMPI_", "MPI_LOCAL", "PMIX_", "HYDRA_")  # the tests may run under one
    env = {k: v for k, v in os.environ.items()
           if k != "IRKIT_VERIFY" and not k.startswith(launcher)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {p.key for p in model.metadata_props} >= {"irkit.train", "irkit.pair"}
