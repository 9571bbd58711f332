"""Runtimes (installed as irkit.runtimes): compile a graph for a device, then call it."""

from __future__ import annotations

from irkit.runtimes.base import CompiledGraph, Runtime, get_runtime

__all__ = ["CompiledGraph", "Runtime", "get_runtime"]
