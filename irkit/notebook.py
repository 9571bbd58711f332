"""irkit's errors in IPython and Jupyter: the user's own frames, then one sentence.

`import irkit` in IPython installs a handler for IrkitError (the errors irkit raises on
purpose: bad data, bad shapes, bad files): the traceback shows the frames of the user's code
and leaves out irkit's internals, so a mistake ends in one readable line naming the fix, as
Keras filters its own frames. `IRKIT_TRACEBACK=1` shows every frame. Other exceptions (bugs,
the user's own) keep IPython's full traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

from irkit.checkout import PACKAGE_DIR, ROOT
from irkit.errors import IrkitError

# irkit's own code: the package and, in a checkout, its top-level passes/ and runtimes/
INTERNAL = tuple(os.path.join(p, "") for p in (PACKAGE_DIR, os.path.join(ROOT, "passes"),
                                                os.path.join(ROOT, "runtimes")))
HIDDEN_NOTE = "(irkit's internal frames are hidden; IRKIT_TRACEBACK=1 shows them)"


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    ipython = sys.modules.get("IPython")
    shell_dir = os.path.dirname(ipython.__file__) if ipython is not None else None
    return path.startswith(INTERNAL) or bool(shell_dir and path.startswith(
        os.path.join(shell_dir, "")))


def user_frames(tb) -> list[traceback.FrameSummary]:
    """The frames of `tb` outside irkit (and outside IPython's machinery)."""
    return [f for f in traceback.extract_tb(tb) if not _internal(f.filename)]


def short_traceback(etype: type, value: BaseException, tb) -> list[str]:
    """The lines IPython shows for an IrkitError: the user's frames, a note, the sentence."""
    lines = ["Traceback (most recent call last, irkit's frames left out):\n"]
    lines += traceback.format_list(user_frames(tb))
    lines += [HIDDEN_NOTE + "\n", f"{etype.__name__}: {value}"]
    return [line.rstrip("\n") for line in "".join(lines).splitlines()]


def _handler(shell, etype, value, tb, tb_offset=None) -> None:
    """IPython's custom-exception hook: it shows the traceback itself (the shell ignores what
    the hook returns); `_showtraceback` is what ipykernel turns into the cell's error output."""
    if os.environ.get("IRKIT_TRACEBACK"):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    else:
        shell._showtraceback(etype, value, short_traceback(etype, value, tb))


def install_error_display() -> bool:
    """Install the handler in the running IPython shell (if any); whether it was installed.
    Only IrkitError is handled: the shell's own custom handler for other types is kept."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    if getattr(shell, "CustomTB", None) is not None and \
            getattr(shell, "custom_exceptions", ()) not in ((), (IrkitError,)):
        return False  # someone else's handler: leave it
    shell.set_custom_exc((IrkitError,), _handler)
    return True
