"""The `irkit` command line. `main` is the click group (irkit/cli/app.py); each family of
commands is a module that adds its commands to it: train.py (build, train, export),
graph.py (grad, inspect, optimize, ops) and lab.py (evaluate, predict, plot)."""

from __future__ import annotations

from irkit.cli import graph, lab, train  # noqa: F401  (each adds its commands to `main`)
from irkit.cli.app import main

__all__ = ["main"]
