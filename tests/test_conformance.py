"""ONNX node conformance: each ONNX backend node test case irkit can read, one test per case.

A case passes when both the round trip (import -> export -> onnxruntime) and the numpy reference
runtime reproduce its expected outputs; the harness and the table of known exceptions are in
conformance.py (`python -m tests.conformance` prints the summary). Select cases with
`pytest tests/test_conformance.py -k relu`.
"""

from __future__ import annotations

import pytest

loader = pytest.importorskip("onnx.backend.test.loader")
if not hasattr(loader, "load_node_model_tests"):
    pytest.skip("this onnx has no in-memory node test cases (onnx >= 1.23 builds them)",
                allow_module_level=True)

from conformance import (  # noqa: E402
    EXCEPTIONS,
    all_cases,
    case_names,
    onnxruntime_fails_alike,
    run_all,
    run_case,
    summary,
)


def _param(name: str):
    marks = [pytest.mark.xfail(reason=EXCEPTIONS[name], strict=True)] if name in EXCEPTIONS else []
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", [_param(n) for n in case_names()])
def test_node_case(name: str) -> None:
    result = run_case(name)
    assert result.roundtrip is None, f"round trip (import -> export -> onnxruntime): " \
                                     f"{result.roundtrip}"
    assert result.reference is None, f"numpy reference runtime: {result.reference}"


def test_exceptions_name_onnx_cases() -> None:
    known = {c.name for c in all_cases()}
    unknown = sorted(set(EXCEPTIONS) - known)
    assert not unknown, f"EXCEPTIONS names cases onnx does not have: {unknown}"


def test_round_trip_passes_at_least_where_onnxruntime_does() -> None:
    # over the same (considered) cases: importing and exporting loses nothing onnxruntime runs
    counts = summary(run_all())
    print(counts)
    assert counts["considered"] > 0
    assert counts["roundtrip_pass"] >= counts["direct_ort_pass"], counts


def test_onnx_reference_stands_in_only_where_onnxruntime_fails_the_original_alike() -> None:
    no_kernel = "onnxruntime: NotImplemented: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Cast"
    wrong = "output 'y': 3/7 elements differ, first at (0, 0): 1 != 0"
    assert onnxruntime_fails_alike(no_kernel, no_kernel.replace("Cast", "Cast(25)"))
    assert onnxruntime_fails_alike(wrong, wrong)
    assert not onnxruntime_fails_alike(wrong, None)  # onnxruntime passes the original
    assert not onnxruntime_fails_alike(no_kernel, None)
    assert not onnxruntime_fails_alike(wrong, wrong.replace("3/7", "2/7"))
    assert not onnxruntime_fails_alike("onnxruntime: InvalidGraph: type error", no_kernel)
    counts = summary(run_all())  # a column of its own, never an onnxruntime pass
    assert counts["passed"] == counts["considered"] - counts["excepted"]
    assert counts["roundtrip_pass"] + counts["roundtrip_onnx_reference_pass"] <= \
        counts["considered"]
