"""`irkit optimize`: an ONNX inference model through `irkit.passes.inference_passes`.

The model is read with the usual caps, converted to the IR, optimized, written back as
standard ONNX (opset 17, checked with `onnx.checker` full_check), and both versions run on
onnxruntime with the same random feeds: the outputs must agree (rtol 1e-4, atol 1e-5) or
nothing is written. A training model's `training_info` (its train step) is not carried over:
the output is the optimized inference model, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from irkit.errors import IrkitError

if TYPE_CHECKING:  # onnx loads after the file passed the caps that need no onnx (_read)
    import onnx


def random_feeds(model: onnx.ModelProto, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed per graph input: standard normal floats, zeros otherwise; symbolic dims =
    `batch`."""
    from onnx import helper
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        feeds[vi.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                          else np.zeros(shape, dtype))
    return feeds


def _op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _outputs(model_bytes: bytes, feeds: dict) -> list[np.ndarray] | None:
    """The model's outputs on onnxruntime, or None if onnxruntime cannot run it."""
    from irkit.runtimes import ort_values
    from irkit.runtimes.onnxruntime import make_session
    try:
        return ort_values.run(make_session(model_bytes, "cpu"), None, feeds)
    except Exception:  # onnxruntime's own exception types: "did not run before" is a fact
        return None


def compare(before: list[np.ndarray], after: list[np.ndarray], names: list[str]) -> None:
    """IrkitError naming the first output that differs beyond rtol 1e-4 / atol 1e-5."""
    for name, a, b in zip(names, before, after, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise IrkitError(f"optimizing changed output {name!r}; nothing was written (please "
                             "report this model)")


def optimize_proto(original: onnx.ModelProto) -> onnx.ModelProto:
    """The optimized model (IR passes, then export at opset 17 with the full checker)."""
    from irkit.onnx_io import from_onnx, to_onnx
    from irkit.passes import optimize_for_inference
    graph = from_onnx(original)
    optimize_for_inference(graph)
    return to_onnx(graph)


def optimize_file(path: str, batch: int, repeats: int,
                  latency: Callable[[bytes, dict, int], float]) -> tuple[onnx.ModelProto, dict]:
    """Optimize the model at `path`; the new model and a report (node counts, ops, latency)."""
    from irkit.onnx_io import load_proto
    original = load_proto(path)  # the caps that need no onnx import come first
    from irkit.onnx_io import check_run_sizes
    try:
        optimized = optimize_proto(original)
        check_run_sizes(original)  # before onnxruntime runs it (a constant bomb: 90 s, 5 GB)
    except IrkitError as e:
        raise type(e)(f"{path}: {e}") from None
    before_bytes, after_bytes = original.SerializeToString(), optimized.SerializeToString()
    feeds = random_feeds(original, batch)
    ran_before = _outputs(before_bytes, feeds)
    report: dict = {"nodes_before": len(original.graph.node),
                    "nodes_after": len(optimized.graph.node), "ran_before": ran_before is not None,
                    "dropped_training_info": len(original.training_info) > 0}
    if ran_before is not None:
        ran_after = _outputs(after_bytes, feeds)
        if ran_after is None:
            raise IrkitError(f"{path}: onnxruntime runs the model but not the optimized one; "
                             "nothing was written (please report this model)")
        compare(ran_before, ran_after, [o.name for o in original.graph.output])
        if repeats:
            report["latency_ms"] = {"before": 1e3 * latency(before_bytes, feeds, repeats),
                                    "after": 1e3 * latency(after_bytes, feeds, repeats)}
    ops_before, ops_after = _op_counts(original), _op_counts(optimized)
    report["ops"] = {op: (ops_before[op], ops_after[op])
                     for op in sorted(set(ops_before) | set(ops_after))}
    return optimized, report
