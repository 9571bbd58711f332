"""ONNX node conformance: the ONNX backend node test cases run through irkit.

Every case of `onnx.backend.test.loader.load_node_model_tests()` whose ai.onnx opset is at least
13 and whose ops irkit all knows (`irkit.ops.has_op`) runs three ways, each compared with the
case's expected outputs at the case's rtol/atol (shape, dtype, values; NaN equals NaN):

1. round trip: `from_onnx` -> `to_onnx` (checker, full) -> a fresh onnxruntime session (CPU);
   where onnxruntime fails on the original case alike (no kernel for its types, or the same
   wrong values), the exported file runs on onnx's ReferenceEvaluator instead, counted in a
   column of its own (`roundtrip_onnx_reference_pass`), never as an onnxruntime pass;
2. reference: the numpy reference runtime on the imported IR graph;
3. direct: onnxruntime on the original case model, the baseline irkit is measured against
   (a case of an opset or IR version newer than onnxruntime reads is relabeled to the newest
   opset it reads where the case's ops mean the same: `ort_readable`).

Tensors of the types numpy has no native form for (bfloat16, float8, int4, ...; ml_dtypes
arrays) are fed to and read from onnxruntime as OrtValues made from their bytes.

irkit's IR has static axes (opset-17 Reduce* attributes), so an `axes` graph input of a Reduce*
op or of a Pad (opset 18), and the scales and sizes of a Resize with a keep_aspect_ratio_policy,
antialias or half_pixel_symmetric (resolved at import), become initializers holding the
case's data before import; the direct run keeps the case as written. Each case has one data
set (onnx 1.23); the first is used.
Known failures are in `EXCEPTIONS` (case name -> reason); `python -m tests.conformance` prints
the summary table and the failures grouped by reason.
"""

from __future__ import annotations

import functools
import re
import textwrap
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

MIN_CASE_OPSET = 13  # irkit imports ai.onnx opset 13 and newer

_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
               "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


# ---- known exceptions: case name -> reason ----------------------------------------------------
# "not irkit": the case cannot pass through irkit's IR (opset-17 semantics) and export;
# "irkit bug"/"irkit gap": an op in irkit/ops/ is wrong or incomplete (remove the entry on fixing:
# the test of an excepted case that passes fails, so the table stays true).
RANDOM = ("not irkit: a training-mode Dropout's mask is the generator's (ONNX fixes none): the "
          "case expects the draw of onnx.reference's numpy RandomState(seed), which the "
          "exported file reproduces on onnx's ReferenceEvaluator; onnxruntime (on the original "
          "too) and irkit's reference draw other masks from the same seed")
NOT_TENSORS = "not irkit: sequence/optional values; irkit graphs hold tensors only"


def _reason(reason: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, reason)


EXCEPTIONS: dict[str, str] = {
    **_reason(RANDOM,
            "test_training_dropout", "test_training_dropout_default",
            "test_training_dropout_default_mask", "test_training_dropout_mask"),
    **_reason(NOT_TENSORS,
            "test_identity_opt", "test_identity_sequence"),
}


# ---- the cases --------------------------------------------------------------------------------
def ai_onnx_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple[Any, ...]:
    """Every ONNX node test case (built in memory by onnx; about 5 s, once per process)."""
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        return tuple(load_node_model_tests())


def is_considered(case: Any) -> bool:
    """Opset >= 13 and every op registered in irkit."""
    from irkit.ops import has_op

    opset = ai_onnx_opset(case.model)
    return (opset is not None and opset >= MIN_CASE_OPSET
            and all(has_op(n.op_type, n.domain) for n in case.model.graph.node))


@functools.lru_cache(maxsize=1)
def cases() -> dict[str, Any]:
    """The considered cases by name, in the loader's order."""
    return {c.name: c for c in all_cases() if is_considered(c)}


def case_names() -> list[str]:
    return list(cases())


# ---- running one case -------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """How one case fared; a path's entry is None when it passed, else why it failed."""

    name: str
    opset: int
    ops: tuple[str, ...]
    frozen: tuple[str, ...]  # graph inputs made initializers before import
    roundtrip: str | None
    reference: str | None
    direct: str | None
    checked_by: str = "onnxruntime"  # what ran the exported file: or ONNX_REFERENCE

    @property
    def passed(self) -> bool:
        return self.roundtrip is None and self.reference is None


class Mismatch(AssertionError):
    """An output differs from the expected one."""


def _array(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return x if x is None or isinstance(x, list) else np.asarray(x)


def _feeds(model: onnx.ModelProto, inputs: list[Any]) -> dict[str, Any]:
    """Data-set inputs by name: they follow the graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    return {n: _array(x) for n, x in zip(names, inputs) if x is not None}


def _frozen_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs irkit needs as constants: the axes of Reduce* ops and of Pad (opset 18),
    and the sizes of a Resize with a keep_aspect_ratio_policy (opset 18; import resolves it)."""
    wanted: set[str] = set()
    for n in model.graph.node:
        if n.op_type in _REDUCE_OPS and len(n.input) > 1:
            wanted.add(n.input[1])
        if n.op_type == "Pad" and len(n.input) > 3:
            wanted.add(n.input[3])
        if n.op_type == "Resize" and any(
                a.name == "keep_aspect_ratio_policy" or (a.name == "antialias" and a.i) or (
                    a.name == "coordinate_transformation_mode" and a.s == b"half_pixel_symmetric")
                for a in n.attribute):  # resolved at import: sizes and scales known there
            wanted.update(n.input[2:4])
    return [vi.name for vi in model.graph.input if vi.name in wanted]


def _freeze(model: onnx.ModelProto, feeds: dict[str, Any],
            names: list[str]) -> onnx.ModelProto:
    """A copy where the named graph inputs are initializers holding their fed data."""
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    keep = [vi for vi in frozen.graph.input if vi.name not in names]
    del frozen.graph.input[:]
    frozen.graph.input.extend(keep)
    frozen.graph.initializer.extend(numpy_helper.from_array(np.asarray(feeds[n]), n)
                                    for n in names)
    return frozen


def compare(names: list[str], expected: list[Any], got: list[Any], rtol: float,
            atol: float) -> None:
    """Mismatch (one line) unless every output has the expected shape, dtype and values."""
    if len(got) != len(expected):
        raise Mismatch(f"{len(got)} outputs, expected {len(expected)}")
    for name, want, have in zip(names, expected, got):
        if isinstance(want, list) or isinstance(have, list):  # a sequence: item by item
            if not (isinstance(want, list) and isinstance(have, list)):
                raise Mismatch(f"output {name!r}: a sequence and a tensor")
            compare([f"{name}[{i}]" for i in range(len(want))], want, have, rtol, atol)
            continue
        have = np.asarray(have)
        if have.shape != want.shape:
            raise Mismatch(f"output {name!r}: shape {have.shape}, expected {want.shape}")
        if have.dtype != want.dtype:
            raise Mismatch(f"output {name!r}: dtype {have.dtype}, expected {want.dtype}")
        if want.dtype == object or want.dtype.kind in "biuUS":
            bad = np.asarray(have != want)
        else:
            with np.errstate(all="ignore"):
                a, b = have.astype(np.float64), want.astype(np.float64)
                bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise Mismatch(f"output {name!r}: {int(bad.sum())}/{bad.size} elements differ, "
                           f"first at {where}: {have[where]!r} != {want[where]!r}")


def _why(stage: str, e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if "/onnxruntime_src/" in text:  # keep the message, not the C++ signature before it
        text = re.split(r"[)\]] (?=[A-Z])", text)[-1]
    text = text if len(text) <= 240 else text[:237] + "..."
    return text if isinstance(e, Mismatch) else f"{stage}: {type(e).__name__}: {text}"


def _session_run(model_bytes: bytes, feeds: dict[str, Any], names: list[str]) -> list[Any]:
    import onnxruntime as ort
    from irkit.runtimes import ort_values
    from irkit.runtimes.onnxruntime import make_session

    session = make_session(model_bytes, "cpu", threads=1)
    wanted = {i.name for i in session.get_inputs()}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # failures are reported as results, not logged
    return ort_values.run(session, names, {k: v for k, v in feeds.items() if k in wanted},
                          quiet)


ONNX_REFERENCE = "onnx.reference"


def onnxruntime_fails_alike(roundtrip: str | None, direct: str | None) -> bool:
    """Whether onnxruntime fails on the exported file as it does on the original case: no
    kernel for the types in both, or the same wrong values in both (then the file is run with
    onnx's ReferenceEvaluator instead, and counted in a column of its own)."""
    if roundtrip is None or direct is None:
        return False
    no_kernel = all("NOT_IMPLEMENTED" in text for text in (roundtrip, direct))
    return no_kernel or (roundtrip == direct and roundtrip.startswith("output "))


def _onnx_reference_run(model: onnx.ModelProto, feeds: dict[str, Any],
                        names: list[str]) -> list[Any]:
    from onnx.reference import ReferenceEvaluator

    wanted = {vi.name for vi in model.graph.input}
    return ReferenceEvaluator(model).run(names, {k: v for k, v in feeds.items() if k in wanted})


def _run_paths(case: Any, model: onnx.ModelProto, feeds: dict[str, Any], names: list[str],
               expected: list[Any], direct: str | None) -> tuple[str | None, str | None, str]:
    """(round trip, reference) failures of the (frozen) model, None where a path passed, and
    what ran the exported file: onnxruntime, or onnx's ReferenceEvaluator where onnxruntime
    fails on the original case alike (`onnxruntime_fails_alike`)."""
    from irkit.runtimes.reference import ReferenceRuntime

    from irkit.onnx_io import from_onnx, to_onnx

    stage = "import"
    try:
        graph = from_onnx(model)
    except Exception as e:
        return _why(stage, e), _why(stage, e), "onnxruntime"
    roundtrip = reference = None
    checked_by = "onnxruntime"
    try:
        stage = "export"
        exported = to_onnx(graph)
        stage = "onnxruntime"
        compare(names, expected, _session_run(exported.SerializeToString(), feeds, names),
                case.rtol, case.atol)
    except Exception as e:
        roundtrip = _why(stage, e)
    if stage == "onnxruntime" and onnxruntime_fails_alike(roundtrip, direct):
        checked_by = ONNX_REFERENCE
        try:
            compare(names, expected, _onnx_reference_run(exported, feeds, names), case.rtol,
                    case.atol)
            roundtrip = None
        except Exception as e:
            roundtrip = _why(ONNX_REFERENCE, e)
    try:
        got = dict(zip([v.name for v in graph.outputs], ReferenceRuntime().compile(graph)(feeds)))
        compare(names, expected, [got.get(n) for n in names], case.rtol, case.atol)
    except Exception as e:
        reference = _why("reference", e)
    return roundtrip, reference, checked_by


ORT_MAX_OPSET, ORT_MAX_IR = 26, 13  # the newest onnxruntime 1.31 reads (27 is refused)


def ort_readable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The case model as onnxruntime can read it: a newer opset relabeled to the newest one at
    or below ORT_MAX_OPSET where every node's schema has the same documentation and
    attributes (only its type lists may have grown: Cast 28 added float6) and the model passes
    onnx's full checker, with that opset's IR version; as it is when no such opset exists."""
    opset = ai_onnx_opset(model) or 0
    if opset <= ORT_MAX_OPSET and model.ir_version <= ORT_MAX_IR:
        return model

    def meaning(at: int) -> list[tuple]:
        schemas = [onnx.defs.get_schema(n.op_type, at, n.domain) for n in model.graph.node]
        return [(s.doc, sorted(s.attributes)) for s in schemas]
    try:
        want = meaning(opset)
        for target in range(min(opset, ORT_MAX_OPSET), 0, -1):
            if meaning(target) != want:
                break
            relabeled = onnx.ModelProto()
            relabeled.CopyFrom(model)
            for o in relabeled.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = target
            relabeled.ir_version = onnx.helper.find_min_ir_version_for(
                list(relabeled.opset_import))
            onnx.checker.check_model(relabeled, full_check=True)
            return relabeled
    except (onnx.defs.SchemaError, onnx.checker.ValidationError,
            onnx.shape_inference.InferenceError):
        pass
    return model


@functools.cache
def run_case(name: str) -> Result:
    """Run one considered case three ways (cached: a session runs each case once)."""
    case = cases()[name]
    inputs, outputs = case.data_sets[0]
    feeds = _feeds(case.model, inputs)
    expected = [_array(o) for o in outputs]
    names = [vi.name for vi in case.model.graph.output]
    frozen = [n for n in _frozen_inputs(case.model) if n in feeds]
    model = _freeze(case.model, feeds, frozen) if frozen else case.model
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            compare(names, expected, _session_run(ort_readable(case.model).SerializeToString(),
                                                   feeds, names), case.rtol, case.atol)
            direct = None
        except Exception as e:
            direct = _why("onnxruntime", e)
        roundtrip, reference, checked_by = _run_paths(case, model, feeds, names, expected,
                                                      direct)
    return Result(name, ai_onnx_opset(case.model) or 0,
                  tuple(sorted({n.op_type for n in case.model.graph.node})), tuple(frozen),
                  roundtrip, reference, direct, checked_by)


def run_all() -> list[Result]:
    return [run_case(n) for n in case_names()]


# ---- summary ----------------------------------------------------------------------------------
def summary(results: list[Result]) -> dict[str, int]:
    """The counts the conformance report states."""
    return {
        "considered": len(results),
        "passed": sum(r.passed for r in results),
        "roundtrip_pass": sum(r.roundtrip is None and r.checked_by == "onnxruntime"
                              for r in results),
        "roundtrip_onnx_reference_pass": sum(r.roundtrip is None and r.checked_by ==
                                             ONNX_REFERENCE for r in results),
        "reference_pass": sum(r.reference is None for r in results),
        "direct_ort_pass": sum(r.direct is None for r in results),
        "frozen_inputs": sum(bool(r.frozen) for r in results),
        "excepted": sum(r.name in EXCEPTIONS for r in results),
        "unexpected_failures": sum(not r.passed and r.name not in EXCEPTIONS for r in results),
    }


def report(results: list[Result]) -> str:
    """The summary table, then the failures grouped by reason: the known exceptions, any
    unexpected ones, and the cases onnxruntime fails on directly."""
    lines = ["ONNX node conformance (opset >= 13, ops irkit supports)", ""]
    lines += [f"  {key:<31}{value:>6}" for key, value in summary(results).items()]
    excepted: dict[str, list[str]] = defaultdict(list)
    failing: dict[str, list[str]] = defaultdict(list)
    direct: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.name in EXCEPTIONS:
            excepted[EXCEPTIONS[r.name]].append(r.name)
        elif not r.passed:
            failing[r.roundtrip or r.reference or ""].append(r.name)
        if r.direct is not None:
            direct[r.direct[:120]].append(r.name)
    for title, groups in (("known exceptions", excepted), ("unexpected failures", failing),
                          ("onnxruntime fails on the original case", direct)):
        lines += ["", f"{title} ({sum(map(len, groups.values()))}):"]
        for why, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines.append(f"  [{len(names)}] {why}")
            lines += textwrap.wrap(", ".join(names), 100, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6, break_on_hyphens=False)
    stale = sorted(r.name for r in results if r.name in EXCEPTIONS and r.passed)
    if stale:
        lines += ["", f"excepted but passing (remove from EXCEPTIONS): {', '.join(stale)}"]
    return "\n".join(lines)


def main() -> None:
    from irkit.ir import set_verification

    set_verification(True)  # as under pytest: the export runs onnx's full checker
    print(report(run_all()))


if __name__ == "__main__":
    main()
