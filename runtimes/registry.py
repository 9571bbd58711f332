"""The one list of runtimes: name -> where its class lives (imported on first use, so naming a
runtime never loads the others: `compile(runtime="reference")` runs without onnxruntime).

A runtime class takes `device` and offers `compile(graph) -> CompiledGraph`; one that trains
also offers `step_runner(program, state, settings, **options) -> StepRunner`, choosing its
own options from the settings (device, batch size, ...). `program` is anything with `train`,
`eval` and `data_names` (irkit.train.step.StepGraphs; a data-parallel runtime also calls its
`split(settings)`). Adding a runtime is one class and one line here (or `register_runtime`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from irkit.errors import RuntimeUnavailableError

RUNTIMES: dict[str, str | type] = {
    "onnxruntime": "irkit.runtimes.onnxruntime:OrtRuntime",
    "reference": "irkit.runtimes.reference:ReferenceRuntime",
    "torch": "irkit.runtimes.torch_runtime:TorchRuntime",
    "mpi": "irkit.runtimes.mpi:MpiRuntime",
}


def register_runtime(name: str, cls: str | type) -> None:
    """Add a runtime: its class, or "module:Class" to import when first used."""
    RUNTIMES[name] = cls


def runtime_names() -> list[str]:
    return list(RUNTIMES)


def runtime_class(name: str) -> type:
    """The class registered as `name`; RuntimeUnavailableError naming the choices otherwise."""
    target = RUNTIMES.get(name)
    if target is None:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; use one of "
                                      f"{', '.join(RUNTIMES)}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = RUNTIMES[name] = getattr(importlib.import_module(module), attr)
    return target


def get_runtime(name: str = "onnxruntime", device: str = "cpu"):
    """A runtime by name: onnxruntime (device cpu, cuda or auto), reference (numpy, CPU),
    torch (optional PyTorch), mpi (data-parallel training over MPI ranks, CPU)."""
    return runtime_class(name)(device=device)


def make_step_runner(name: str, program: Any, state: Mapping[str, np.ndarray],
                     settings: Any = None, **options: Any):
    """The StepRunner of runtime `name` for `program`'s graphs, starting from `state`; the
    runtime reads what it needs from `settings` (irkit.train.settings.Settings; device, batch
    size); `options` override (e.g. threads, or an MPI communicator)."""
    device = options.pop("device", None) or (settings.device if settings is not None else "cpu")
    runtime = get_runtime(name, device)
    if not hasattr(runtime, "step_runner"):
        trainers = [n for n in RUNTIMES if n != name and n != "torch"]
        raise RuntimeUnavailableError(f"runtime {name!r} runs graphs but does not train; "
                                      f"train with one of {', '.join(trainers)}")
    return runtime.step_runner(program, state, settings, **options)
