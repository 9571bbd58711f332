"""Runtimes (installed as irkit.runtimes): compile a graph for a device, then call it; step
runners that train a step graph on a device. The runtimes by name: registry.py."""

from __future__ import annotations

from irkit.runtimes.base import CompiledGraph, GivenState, Runtime, StepRunner, Totals, read_only
from irkit.runtimes.registry import (
    RUNTIMES,
    get_runtime,
    make_step_runner,
    register_runtime,
    runtime_names,
)

__all__ = ["RUNTIMES", "CompiledGraph", "GivenState", "Runtime", "StepRunner", "Totals",
           "get_runtime", "make_step_runner", "read_only", "register_runtime", "runtime_names"]
