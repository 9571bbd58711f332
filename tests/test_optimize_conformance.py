"""`irkit optimize`'s passes over every ONNX node conformance case irkit round-trips: no case
that passed through irkit's import and export fails or changes after the passes, run by what ran
the case (onnxruntime, or onnx's ReferenceEvaluator where onnxruntime fails the original case
alike)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

loader = pytest.importorskip("onnx.backend.test.loader")
if not hasattr(loader, "load_node_model_tests"):
    pytest.skip("this onnx has no in-memory node test cases (onnx >= 1.23 builds them)",
                allow_module_level=True)

from conformance import (  # noqa: E402
    ONNX_REFERENCE,
    _array,
    _feeds,
    _freeze,
    _frozen_inputs,
    _onnx_reference_run,
    _session_run,
    _why,
    case_names,
    cases,
    compare,
    run_case,
)
from irkit.passes import optimize_for_inference  # noqa: E402

from irkit.onnx_io import from_onnx, to_onnx  # noqa: E402


def optimized_failure(name: str, checked_by: str) -> str | None:
    """Why the optimized case fails (None: it matches the expected outputs), run by
    `checked_by`."""
    case = cases()[name]
    inputs, outputs = case.data_sets[0]
    feeds = _feeds(case.model, inputs)
    names = [vi.name for vi in case.model.graph.output]
    frozen = [n for n in _frozen_inputs(case.model) if n in feeds]
    model = _freeze(case.model, feeds, frozen) if frozen else case.model
    stage = "optimize"
    try:
        graph = from_onnx(model)
        optimize_for_inference(graph)
        stage = "export"
        exported = to_onnx(graph)
        stage = checked_by
        got = (_onnx_reference_run(exported, feeds, names) if checked_by == ONNX_REFERENCE
               else _session_run(exported.SerializeToString(), feeds, names))
        compare(names, [_array(o) for o in outputs], got, case.rtol, case.atol)
    except Exception as e:
        return _why(stage, e)
    return None


def test_optimize_keeps_every_conformance_case_that_ran():
    ran = {n: run_case(n).checked_by for n in case_names() if run_case(n).roundtrip is None}
    assert len(ran) > 500
    failures = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name, checked_by in ran.items():
            why = optimized_failure(name, checked_by)
            if why is not None:
                failures[name] = why
    assert not failures, failures
