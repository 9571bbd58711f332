"""The distribution's name: PyPI's `irkit` is another project, so irkit installs as `irkit-nn`
(import name and command `irkit`), and every install hint names that distribution."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from irkit.version import DISTRIBUTION, __version__, install_hint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("irkit", "passes", "runtimes", "models", "tests", "benchmarks", "examples",
           "README.md", ".ci")
SUFFIXES = (".py", ".md", ".toml", ".ipynb", "run")
# an install of the wrong project: `irkit[extra]` or `pip install irkit` (not irkit-nn)
WRONG = re.compile(r"""(?<![\w-])irkit\[|pip install\s+["']?irkit(?![\w-])""")


def _project() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="tomli reads pyproject.toml on 3.10")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _texts():
    for top in SCANNED:
        path = os.path.join(ROOT, top)
        walk = [(path, [], [""])] if os.path.isfile(path) else os.walk(path)
        for folder, dirs, files in walk:
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".ipynb_checkpoints")]
            for name in files:
                file = os.path.join(folder, name) if name else folder
                if file.endswith(SUFFIXES) and file != os.path.abspath(__file__):
                    with open(file, encoding="utf-8") as f:
                        yield os.path.relpath(file, ROOT), f.read()


def test_pyproject_names_the_distribution_and_keeps_the_command():
    project = _project()
    assert project["name"] == DISTRIBUTION == "irkit-nn"
    assert project["scripts"] == {"irkit": "irkit.cli:main"}
    assert "matplotlib>=3.5" in project["dependencies"]  # the lab's plots need no extra
    assert {"test", "plot", "notebook", "torch", "distributed"} <= set(project[
        "optional-dependencies"])


def test_no_install_hint_names_the_other_project():
    wrong = [f"{path}: {m.group(0)!r}" for path, text in _texts() for m in WRONG.finditer(text)]
    assert not wrong, wrong
    hints = sum(text.count(DISTRIBUTION + "[") for _, text in _texts())
    assert hints >= 4  # README, distributed, torch runtime, CLI help: the pattern is in use


def test_hints_come_from_one_place():
    from irkit import distributed

    assert install_hint("distributed") == 'pip install "irkit-nn[distributed]"'
    assert distributed.INSTALL_HINT == install_hint("distributed")


def test_version_names_the_distribution(tmp_path):
    done = subprocess.run([sys.executable, "-m", "irkit.cli", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"irkit {__version__} (pip: {DISTRIBUTION})"
