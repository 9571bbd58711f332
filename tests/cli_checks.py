"""What the CLI tests share: the command run in this process, and the check that it failed
the way bad input must (exit code != 0, no traceback, one `irkit: error:` line on stderr that
is not an "unexpected" error and holds the given words)."""

from __future__ import annotations

from click.testing import CliRunner, Result

from irkit.cli import main


def cli(*args) -> Result:
    """`irkit ARGS...` run in this process (click's runner), its output captured."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result, *words: str, code: int | None = None) -> str:
    """The one stderr line of a refused command (exit `code` if given, else any but 0)."""
    assert result.exit_code != 0 if code is None else result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: "), lines
    assert "unexpected" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]
