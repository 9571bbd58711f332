"""SIGINT and SIGTERM for the command line: both stop a command the same way.

The first signal raises `Interrupted` (a KeyboardInterrupt) where the command is, so every
`finally` and `except BaseException` runs: safe_io removes this run's temporary files, and the
files already renamed into place (the last complete checkpoint, a finished -o) stay as they
are. The command then ends with one line `irkit: error: interrupted by SIGTERM ...` and exit
code 128 + the signal's number. A signal that some library swallowed, or that arrived in a
finalizer, still makes the exit non-zero (`received`). Later signals are only recorded: the
clean-up of the first is not cut short (a SIGKILL still ends everything).
"""

from __future__ import annotations

import contextlib
import signal
import sys

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal (its number in `signum`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)


def _unraisable(hook):
    """sys.unraisablehook that drops an interruption inside a finalizer (no fragment of a
    traceback on stderr; `received` still reports it)."""
    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    return quiet


@contextlib.contextmanager
def catching_signals():
    """While the block runs, SIGINT and SIGTERM raise `Interrupted` once (see the module).
    Outside the main thread (no handlers can be set there) the block runs as it is."""
    _received.clear()
    try:
        before = {s: signal.signal(s, _on_signal) for s in HANDLED}
    except ValueError:  # not the main thread
        yield
        return
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        sys.unraisablehook = hook


def received() -> int | None:
    """The first signal received inside `catching_signals`, if any."""
    return _received[0] if _received else None


def exit_code(signum: int | None) -> int:
    """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report it."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def message(signum: int | None) -> str:
    """The one line for a command a signal stopped."""
    name = signal.Signals(signum).name if signum is not None else "SIGINT"
    return (f"interrupted by {name}; the files written before it are complete and no partial "
            "file was left (a --checkpoint folder keeps its last complete epoch)")
