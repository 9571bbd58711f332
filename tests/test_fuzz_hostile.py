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


# ---- data containers: .npz (stored, deflate, bzip2 members), .csv.gz, IDX .gz -------------------
CONTAINER_CASES = int(os.environ.get("IRKIT_FUZZ_CONTAINER_CASES", "16"))
RECIPE = ('[model]\nlayers = [{ type = "dense", units = 8, activation = "relu" }, '
          '{ type = "dense", units = 10 }]\n[data]\ndataset = "iris"\n')
IDX_IMAGES = "train-images-idx3-ubyte.gz"  # read by `--data mnist` from $IRKIT_DATA/mnist


def _npz(compression: int, **arrays) -> bytes:
    """An .npz whose members are stored with `compression` (zipfile's constants)."""
    import io
    import zipfile

    import numpy as np
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            z.writestr(f"{name}.npy", member.getvalue())
    return out.getvalue()


def _container_bases() -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes): small valid datasets of each container, and two bombs."""
    import gzip
    import struct
    import zipfile

    import numpy as np
    x, y = np.arange(120.0).reshape(30, 4) % 7, np.arange(30) % 3
    csv = b"a,b,c,d,label\n" + b"".join(b"%d,%d,%d,%d,%d\n" % (*r, t) for r, t in
                                        zip(x.astype(int), y))
    images = (np.arange(20 * 28 * 28) % 251).astype(np.uint8).tobytes()
    return {
        "npz": ("case.npz", _npz(zipfile.ZIP_STORED, x=x, y=y)),
        "npz_deflate": ("case.npz", _npz(zipfile.ZIP_DEFLATED, x=x, y=y)),
        "npz_bzip2": ("case.npz", _npz(zipfile.ZIP_BZIP2, x=x, y=y)),
        "npz_bomb": ("case.npz", _npz(zipfile.ZIP_DEFLATED, x=np.zeros((1 << 22, 4)), y=y)),
        "csv_gz": ("case.csv.gz", gzip.compress(csv)),
        "csv_gz_bomb": ("case.csv.gz", gzip.compress(b"a,b,c,d,label\n" +
                                                     b"1,2,3,4,0\n" * (3 << 21))),
        "idx_gz": (IDX_IMAGES, gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 20, 28, 28)
                                             + images)),
    }


def _container_run(folder, name: str, data: bytes):
    """`irkit train RECIPE --data FILE` on one (mutated) container, in its own process."""
    import gzip
    import struct
    if name != IDX_IMAGES:
        (folder / name).write_bytes(data)
        return run_irkit(["train", "r.toml", "--data", name, "--epochs", "1", "-o", "o.onnx",
                          "--json"], folder, timeout=CASE_SECONDS)
    home = folder / "home" / "mnist"
    home.mkdir(parents=True, exist_ok=True)
    (home / name).write_bytes(data)
    (home / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        bytes([0, 0, 8, 1]) + struct.pack(">I", 20) + bytes(i % 10 for i in range(20))))
    return run_irkit(["train", "r.toml", "--data", "mnist", "--epochs", "1", "-o", "o.onnx",
                      "--json"], folder, timeout=CASE_SECONDS,
                     env={"IRKIT_DATA": str(folder / "home"), "IRKIT_OFFLINE": "1"})


def test_hostile_fuzz_of_data_containers_through_the_cli(tmp_path):
    """The containers' bases (each valid, or a bomb the caps refuse) and their mutants: every
    outcome is a result or one line, under 1 GB, within the per-case time."""
    rng = random.Random(SEED + 1)
    bases = _container_bases()
    (tmp_path / "r.toml").write_text(RECIPE)
    outcomes: collections.Counter = collections.Counter()
    problems = []
    for i in range(CONTAINER_CASES):
        base = sorted(bases)[i] if i < len(bases) else rng.choice(sorted(bases))
        name, data = bases[base]
        data = _mutate(data, rng) if i >= len(bases) else data
        assert len(data) < 1 << 20  # inputs under 1 MB: the memory bound applies
        run = _container_run(tmp_path, name, data)
        kind = classify(run)
        outcomes[kind] += 1
        if kind not in ("ok", "error") or (i < len(bases) and kind != ("error" if "bomb" in base
                                                                       else "ok")):
            keep = tmp_path.parent / f"container_{i}_{name}"
            keep.write_bytes(data)
            problems.append(f"case {i} ({base}): {kind}: {run.stderr[-300:]!r} (kept as {keep})")
        (tmp_path / "o.onnx").unlink(missing_ok=True)
    print(f"container fuzz: {CONTAINER_CASES} cases, {dict(outcomes)}")
    assert not problems, "\n".join(problems)
