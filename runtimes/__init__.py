"""Runtimes (installed as irkit.runtimes): compile a graph for a device, then call it; step
runners that train a step graph on a device."""

from __future__ import annotations

from irkit.runtimes.base import (
    CompiledGraph,
    Runtime,
    StepRunner,
    Totals,
    get_runtime,
    make_step_runner,
)

__all__ = ["CompiledGraph", "Runtime", "StepRunner", "Totals", "get_runtime",
           "make_step_runner"]
