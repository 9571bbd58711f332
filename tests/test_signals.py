"""Issue 23: a signal that a library swallows, or that lands in a finalizer, still ends the
command with one line and exit code 128 + N (it used to end rc 0 with a `KeyboardInterrupt:`
fragment, or with no message at all). Both failed on the code before issue 23.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = '''
import gc, os, signal, sys, time
from irkit.cli import main

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

@main.command()
def swallow():
    try:  # a library that catches KeyboardInterrupt and carries on
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except KeyboardInterrupt:
        pass
    print("done")

@main.command()
def finalizer():
    Finalized()  # the signal arrives in __del__: Python prints "Exception ignored in ..."
    gc.collect()
    print("done")

main([sys.argv[1]])
'''


@pytest.mark.parametrize("command,signum,name", [("swallow", 15, "SIGTERM"),
                                                  ("finalizer", 2, "SIGINT")])
def test_a_swallowed_signal_still_ends_in_one_line(command, signum, name):
    done = subprocess.run([sys.executable, "-c", COMMANDS, command], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 128 + signum, (done.returncode, done.stderr)
    assert done.stdout == "done\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"irkit: error: interrupted by {name}"), lines
