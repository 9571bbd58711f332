"""The README's Python examples run as written and print what the README says."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_has_python_examples():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = _blocks()[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README.md block {index}", "exec"), {})
    # every "# <expected>" comment after a print() names what it prints
    for line in block.splitlines():
        m = re.match(r"print\((.*)\)\s+#\s+(\S+ \S+)", line.strip())
        if m and re.fullmatch(r"-?\d+\.\d+ -?\d+\.\d+", m.group(2)):
            assert m.group(2) in out.getvalue(), (m.group(2), out.getvalue())
