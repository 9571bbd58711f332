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
        # dont_inherit: run as a user would, without this module's `from __future__` flags
        exec(compile(block, f"README.md block {index}", "exec", dont_inherit=True), {})
    # every "# <expected>" comment after a print() names what it prints
    for line in block.splitlines():
        m = re.match(r"print\((.*)\)\s+#\s+(\S+ \S+)", line.strip())
        if m and re.fullmatch(r"-?\d+\.\d+ -?\d+\.\d+", m.group(2)):
            assert m.group(2) in out.getvalue(), (m.group(2), out.getvalue())


LAB_MARK = "<!-- the README test runs this block in a temporary folder -->\n```bash\n"


def _lab_blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(re.escape(LAB_MARK) + r"(.*?)```", f.read(), re.S)


def test_readme_lab_commands_run_as_written(tmp_path):
    """The lab's shell blocks run in order (one folder), every command succeeds, and the
    overfitting run and the early-stopped run say so."""
    import subprocess
    blocks = _lab_blocks()
    assert len(blocks) >= 2
    script = "set -e\n" + "\n".join(blocks)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the model overfits; kept epoch" in result.stderr
    assert "stopped early at epoch" in result.stderr
    assert "confusion (rows: true class, columns: predicted)" in result.stdout
    for name in ("mlp.png", "over.png", "predictions.csv", "mlp_ck/best.onnx", "linear.onnx"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_readme_pictures_are_in_the_repository():
    """Every picture the README shows (the overfitting run's curves) is a file in the clone."""
    with open(README, encoding="utf-8") as f:
        pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", f.read())
    assert pictures, "the README shows the overfitting run's curves"
    for picture in pictures:
        path = os.path.join(os.path.dirname(README), picture)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", picture
