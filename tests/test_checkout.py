"""The checkout is what runs and what is tested (irkit/checkout.py, tests/conftest.py).

Each test copies the working tree to a temporary folder and starts Python there, as a user in
a clone (or a notebook saved in it) does; the copy's own files must be the ones that run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXP_RULE = "lambda x, y, g, n: Mul(g, y))  # d exp = exp"


def _copy_tree(tmp_path: Path, tests: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "clone"
    for name in ("irkit", "passes", "runtimes", "models"):
        shutil.copytree(ROOT / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    (root / "tests").mkdir()
    for name in ("conftest.py", *tests):
        shutil.copy(ROOT / "tests" / name, root / "tests")
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True,
                          env=env, timeout=600)


def test_python_in_a_clone_imports_the_clone(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    done = _run(root, "-c", "import irkit, irkit.runtimes, irkit.passes, irkit.models\n"
                "for m in (irkit, irkit.runtimes, irkit.passes, irkit.models): print(m.__file__)")
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.split()]
    assert [f.parent.name for f in files] == ["irkit", "runtimes", "passes", "models"]
    assert all(f.is_relative_to(root) for f in files), files


def test_a_broken_gradient_in_the_working_tree_fails_the_suite(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path, ("gradient_cases.py", "test_ops_gradients.py"))
    args = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ops_gradients.py",
            "-k", "central_differences and Exp and not Expand")
    intact = _run(root, *args)
    assert intact.returncode == 0, intact.stdout[-2000:]
    source = root / "irkit" / "ops" / "elementwise.py"
    text = source.read_text()
    assert EXP_RULE in text
    source.write_text(text.replace(EXP_RULE, "lambda x, y, g, n: Mul(g, x))  # broken"))
    broken = _run(root, *args)
    assert broken.returncode == 1, broken.stdout[-2000:]
    assert "FAILED tests/test_ops_gradients.py::test_gradient_matches_central_differences[Exp" \
        in broken.stdout


def test_the_cli_notes_a_checkout_it_does_not_run(tmp_path: Path) -> None:
    from irkit.checkout import installed_elsewhere_note
    root = _copy_tree(tmp_path)
    note = installed_elsewhere_note(str(root))
    assert note is not None and "pip install -e ." in note and "\n" not in note
    assert installed_elsewhere_note(str(ROOT)) is None  # the suite runs this checkout
    assert installed_elsewhere_note(str(tmp_path)) is None  # not a checkout at all


def test_the_wheel_lists_every_package() -> None:
    """A non-editable install (the GPU machine's `pip install --target`) ships every package
    folder: pyproject's explicit list names each one."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "irkit").rglob(
        "__init__.py")}
    found |= {f"irkit.{name}" for name in ("passes", "runtimes", "models")}
    assert found == listed
