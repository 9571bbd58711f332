"""Issue 23: a seeded, bounded fuzz run through the real CLI, each case in its own
subprocess with its peak memory measured. Bases are the issue's hostile files (constant bombs,
bad attributes, chains, datasets without features); mutants flip, insert and cut bytes. Every
outcome is classified, and any case that is not a clean result or one `irkit: error:` line
fails the test: "unexpected", a traceback, a hang (per-case timeout), more than 1 GB for an
input under 1 MB, or any other output line (onnxruntime's log noise). Sized for about a
minute on 2 cores; IRKIT_FUZZ_HOSTILE_CASES runs more."""

from __future__ import annotations

import collections
import os
import random

from tests.measured import MEMORY_MB, one_line_error, run_irkit
from tests.test_tiny_inputs import _constant_bomb
from tests.test_unexpected_table import MODELS

SEED = int(os.environ.get("IRKIT_FUZZ_SEED", "20261207"))
CASES = int(os.environ.get("IRKIT_FUZZ_HOSTILE_CASES", "24"))
CASE_SECONDS = 30  # a case slower than this is a hang


def _bases(folder) -> dict[str, bytes]:
    out = {name: build().SerializeToString() for name, (build, _) in MODELS.items()}
    _constant_bomb(folder / "bomb.onnx")
    out["bomb"] = (folder / "bomb.onnx").read_bytes()
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how, at = rng.choice("fic"), rng.randrange(len(b))
        if how == "f":
            b[at] = rng.randrange(256)
        elif how == "i":
            b[at:at] = bytes(rng.choice([b"\xff" * 8, b"\x00", b"\x80\x80\x80\x80\x01"]))
        else:
            del b[at:at + rng.randint(1, 16)]
    return bytes(b)


def classify(run) -> str:
    """ok, error (one line), or the kind of problem."""
    if run.rc is None:
        return "hang"
    if run.peak_mb > MEMORY_MB:
        return "over-memory"
    text = run.stderr + run.stdout
    if "Traceback" in text:
        return "traceback"
    if "unexpected" in run.stderr:
        return "unexpected"
    if run.rc == 0 and not run.lines:
        return "ok"
    if one_line_error(run):
        return "error"
    return "noise"


def test_hostile_fuzz_through_the_cli(tmp_path):
    rng = random.Random(SEED)
    bases = _bases(tmp_path)
    outcomes: collections.Counter = collections.Counter()
    problems = []
    for i in range(CASES):
        name = rng.choice(sorted(bases))
        data = _mutate(bases[name], rng) if i >= len(bases) else bases[name]
        (tmp_path / "case.onnx").write_bytes(data)
        command = rng.choice([["inspect", "case.onnx"], ["export", "case.onnx", "-o", "o.onnx"],
                              ["optimize", "case.onnx", "-o", "o.onnx", "--repeats", "0"]])
        run = run_irkit(command, tmp_path, timeout=CASE_SECONDS)
        kind = classify(run)
        outcomes[kind] += 1
        if kind not in ("ok", "error"):
            keep = tmp_path.parent / f"hostile_{i}.onnx"
            keep.write_bytes(data)
            problems.append(f"case {i} ({name}, {command[0]}): {kind}: {run.stderr[-300:]!r} "
                            f"(kept as {keep})")
        (tmp_path / "o.onnx").unlink(missing_ok=True)
        assert len(data) < 1 << 20  # inputs under 1 MB: the memory bound applies
    print(f"hostile fuzz: {CASES} cases, {dict(outcomes)}")
    assert not problems, "\n".join(problems)
