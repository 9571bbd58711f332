"""Mutated dataset files (CSV, gzipped CSV, NPZ, IDX): every one loads or ends in one of
irkit's one-line errors, never another exception or a warning. Seeded, so every run is the
same."""

from __future__ import annotations

import gzip
import io
import warnings

import numpy as np
import pytest

from irkit.data import load_dataset, mnist
from irkit.errors import IrkitError


def _seed_files() -> list[tuple[str, bytes]]:
    plain, strings = io.BytesIO(), io.BytesIO()
    np.savez(plain, x=np.arange(12.0).reshape(4, 3), y=np.array([0, 1, 0, 2]))
    np.savez_compressed(strings, x=np.arange(12.0).reshape(4, 3), y=np.array(list("abac")))
    csv = b"a,b,label\n1,2,0\n3,4.5,1\n\n5,6,2\n"
    idx = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8))
    return [("d.npz", plain.getvalue()), ("e.npz", strings.getvalue()), ("d.csv", csv),
            ("s.csv", b"a,species,b\n1,cat,2\n3,dog,4\n"), ("g.csv.gz", gzip.compress(csv)),
            ("i.idx", idx), ("j.idx.gz", gzip.compress(idx))]


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    """1-4 random edits: overwrite a byte, delete a run, insert bytes, truncate."""
    out = bytearray(data)
    for _ in range(rng.integers(1, 5)):
        kind, at = rng.integers(0, 4), int(rng.integers(0, len(out) + 1))
        if kind == 0 and at < len(out):
            out[at] = int(rng.integers(0, 256))
        elif kind == 1:
            del out[at:at + int(rng.integers(1, 20))]
        elif kind == 2:
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8).tobytes()
        else:
            del out[at:]
    return bytes(out)


@pytest.mark.parametrize("index", range(7))
def test_mutated_dataset_files_fail_cleanly(tmp_path, monkeypatch, index):
    monkeypatch.setenv("IRKIT_MAX_ELEMENTS", "1000000")
    name, data = _seed_files()[index]
    rng = np.random.default_rng(index)
    path = tmp_path / name
    for _ in range(200):
        path.write_bytes(_mutate(rng, data))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                if ".idx" in name:
                    mnist.read_idx(str(path))
                else:
                    load_dataset(str(path), "species" if name.startswith("s") else None)
            except IrkitError as e:
                assert "\n" not in str(e), str(e)
