"""`--target web`: a bundle's step and evaluation graphs in forms onnxruntime-web's WebGPU
provider runs (irkit.passes.lower_for_web tells what and why), and the way back to irkit.

A web bundle's class targets and step counter are int32 (bundle.json says so: `target` is
"web", and the batch and state entries carry the dtypes); its state file holds the step as
int32. irkit reads such a bundle (`import-state`, `load_model(DIR)`) through `irkit_form`,
which puts int64 casts at the graph's edges, so irkit trains and resumes it as any other.
"""

from __future__ import annotations

import numpy as np

from irkit.errors import DataError
from irkit.ir import Graph
from irkit.ops.dtypes import onnx_dtype
from irkit.signature import STEP, TARGET, next_name

TARGETS = ("default", "web")
NARROWED = (TARGET, STEP)  # the int64 inputs that the web form reads as int32


def lower(graph: Graph) -> Graph:
    """A copy of a step or evaluation graph in the web form (LowerForWebPass)."""
    from irkit.passes.lower_for_web import LowerForWebPass
    graph = graph.copy()
    LowerForWebPass(NARROWED)(graph)
    return graph


def state_for(graph: Graph, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` in the dtypes `graph` reads (the step count as int32 for a web graph)."""
    out = {}
    for name, value in state.items():
        dtype = graph.value(name).dtype if graph.has_value(name) else value.dtype
        value = np.asarray(value)
        if value.dtype != dtype:
            if dtype.kind == "i" and np.abs(value).max(initial=0) >= np.iinfo(dtype).max:
                raise DataError(f"state {name!r} = {value!r} does not fit {dtype}; export "
                                "with the default target")
            value = value.astype(dtype)
        out[name] = value
    return out


def irkit_form(graph: Graph) -> Graph:
    """A web step graph as irkit trains it: the int32 inputs NARROWED read as int64 (a Cast
    after each) and their int32 next values written as int64 (a Cast before each)."""
    from irkit import ops
    from irkit.passes.lower_for_web import swap_input
    graph = graph.copy()
    for name in NARROWED:
        if not graph.has_value(name) or graph.value(name).dtype != np.int32:
            continue
        narrow, wide = swap_input(graph, name, np.int64)
        with graph.name_scope(f"{name}/"):
            cast = ops.Cast(wide, to=onnx_dtype(np.int32))
        graph.replace_all_uses_with(narrow, cast)
        graph.remove_input(narrow)
        out = next((v for v in graph.outputs if v.name == next_name(name)), None)
        if out is not None and out.dtype == np.int32:
            graph.rename_value(out, graph.unique_name(f"{out.name}/int32"))
            with graph.name_scope(f"{name}/"):
                widened = ops.Cast(out, to=onnx_dtype(np.int64))
            graph.outputs = [widened if v is out else v for v in graph.outputs]
            graph.rename_value(widened, next_name(name))
    graph.toposort()
    return graph


def irkit_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A web bundle's state as irkit keeps it: the step count int64."""
    return {n: v.astype(np.int64) if n == STEP else v for n, v in state.items()}
