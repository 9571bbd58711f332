"""Shared test helpers: run a graph on the numpy reference and on onnxruntime, compare them.

The helpers are plain functions, also offered as fixtures (`run_reference`,
`assert_ort_matches_reference`) so test modules need no import path tricks.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

# The suite tests the working tree: the repository root comes first on sys.path, so `irkit` is
# this checkout's and irkit/checkout.py serves its passes/, runtimes/ and models/.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [_ROOT] + [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]

# Debug verification (the IR verifier around every pass and export, the ONNX checker on every
# export) is on for the whole suite, the `irkit` processes it starts included.
os.environ["IRKIT_VERIFY"] = "1"

import irkit.passes  # noqa: E402
import irkit.runtimes  # noqa: E402

for _module, _folder in ((irkit, "irkit"), (irkit.passes, "passes"), (irkit.runtimes, "runtimes")):
    if os.path.dirname(os.path.abspath(_module.__file__)) != os.path.join(_ROOT, _folder):
        pytest.exit(f"irkit: error: the tests would run {_module.__name__} from "
                    f"{os.path.dirname(_module.__file__)}, not this checkout's {_folder}/; run "
                    "`pip install -e .` in the checkout", returncode=4)

from irkit.ir import Graph, set_verification  # noqa: E402  (after the sys.path fix above)

# onnxruntime against the numpy reference, per dtype: (rtol, atol)
ORT_TOLERANCE = {np.dtype(np.float64): (1e-9, 1e-11), np.dtype(np.float32): (2e-4, 2e-5)}


def stable_seed(text: str) -> int:
    """A seed derived from a test's name, the same on every run and machine."""
    return zlib.crc32(text.encode())


def reference_outputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs from the numpy reference runtime (the graph is verified first)."""
    from irkit.runtimes.reference import ReferenceRuntime

    return ReferenceRuntime().compile(graph)(feeds)


def ort_matches_reference(graph: Graph, feeds: dict[str, np.ndarray],
                          rtol: float | None = None, atol: float | None = None) -> list:
    """Run `graph` on onnxruntime (CPU) and on the reference; assert every output agrees.

    Tolerances default by the dtype of each output (`ORT_TOLERANCE`); returns ORT's outputs.
    """
    from irkit.runtimes.onnxruntime import OrtGraph

    expected = reference_outputs(graph, feeds)
    got = OrtGraph(graph)(feeds)
    for value, want, have in zip(graph.outputs, expected, got, strict=True):
        assert have.shape == want.shape, f"{value.name}: ORT shape {have.shape} != {want.shape}"
        assert have.dtype == want.dtype, f"{value.name}: ORT dtype {have.dtype} != {want.dtype}"
        r, a = ORT_TOLERANCE.get(want.dtype, (0.0, 0.0))
        np.testing.assert_allclose(have, want, rtol=rtol if rtol is not None else r,
                                   atol=atol if atol is not None else a,
                                   err_msg=f"output {value.name!r}: onnxruntime vs reference")
    return got


@pytest.fixture(autouse=True, scope="session")
def debug_verification():
    """Every test runs with debug verification on (see IRKIT_VERIFY above)."""
    old = set_verification(True)
    yield
    set_verification(old)


@pytest.fixture
def run_reference():
    return reference_outputs


@pytest.fixture
def assert_ort_matches_reference():
    return ort_matches_reference


# ---- the command line in a subprocess: the one helper every CLI test uses ------------------------
def irkit_command() -> list[str]:
    """The `irkit` console script, or `python -m irkit.cli` where it is not on PATH."""
    exe = shutil.which("irkit")
    return [exe] if exe else [sys.executable, "-m", "irkit.cli"]


def run_irkit(*args, cwd, timeout: float = 120, memory_limit: int | None = None,
              **kwargs) -> subprocess.CompletedProcess:
    """`irkit ARGS` in a subprocess in `cwd` (text output captured), optionally under an
    address-space limit of `memory_limit` bytes."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    return subprocess.run([*irkit_command(), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit if memory_limit else None,
                          **kwargs)


@pytest.fixture
def irkit_cli():
    """`run_irkit` as a fixture."""
    return run_irkit
