"""Shared helpers of the training-bundle tests (test_bundle.py, test_bundle_js.py): the CLI,
the bundle trained by onnxruntime-Python and by irkit's own fit, CSV files the JS side reads
back exactly, what the JS tests need (node, npm packages, chromium), and a PNG reader for the
browser page's screenshot."""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from irkit import load_model
from irkit.train.bundle import read_contract, read_state

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "js"
CHROMIUM = "/usr/bin/chromium"






def batches(n: int, steps: int, batch: int):
    """Row slices of `steps` steps of `batch` rows, in order, epoch after epoch (an epoch's
    last batch may be smaller): the order of js/bundle.mjs trainRows and fit(shuffle=False)."""
    done = 0
    while done < steps:
        for start in range(0, n, batch):
            if done == steps:
                return
            yield slice(start, min(start + batch, n))
            done += 1


def python_steps(folder: Path, x: np.ndarray, y: np.ndarray, steps: int,
                 batch: int) -> dict[str, np.ndarray]:
    """The bundle trained by onnxruntime-Python as the JS harness trains it: the contract's
    names only, each next/<name> fed back as <name>."""
    contract = read_contract(str(folder))
    state = read_state(str(folder))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / contract["files"]["train_step"]), options)
    names = [o.name for o in session.get_outputs()]
    features, target = (next(b["name"] for b in contract["batch"] if b["role"] == r)
                        for r in ("features", "target"))
    y = y.astype(next(b["dtype"] for b in contract["batch"] if b["role"] == "target"))
    for rows in batches(len(y), steps, batch):
        out = dict(zip(names, session.run(None, {features: x[rows], target: y[rows], **state})))
        state.update({name: out[nxt] for nxt, name in contract["train_step"]["updates"].items()})
    return state


def irkit_fit(folder: Path, x: np.ndarray, y: np.ndarray, epochs: int,
              batch: int) -> dict[str, np.ndarray]:
    """irkit's own training of the bundle (load_model on the folder, fit over the rows in
    order): its weights after `epochs` epochs."""
    model = load_model(str(folder))
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, validation_split=0.0,
              keep_best=False, verbose=0)
    weights = model.get_weights()
    return {e["name"]: weights[e["name"]] for e in read_contract(str(folder))["state"]
            if e["role"] in ("param", "buffer")}


def assert_same_state(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                      names=None) -> None:
    """`got` equals `want` to 1e-5 relative (1e-6 absolute near zero) on `names` (default:
    all, and the same names)."""
    if names is None:
        assert got.keys() == want.keys()
    for name in names or want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, classes) -> Path:
    """Rows as CSV that JS's parseFloat reads back as the very float32 values; labels as class
    names."""
    lines = [",".join(f"f{i}" for i in range(x.shape[1])) + ",label"]
    lines += [",".join([*(repr(float(v)) for v in r), str(classes[t])]) for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv(path: Path, classes) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of write_csv (or a sample's data.csv): float32 features, int64 class indices."""
    lines = path.read_text().splitlines()[1:]
    cells = [line.split(",") for line in lines if line.strip()]
    x = np.array([[float(v) for v in c[:-1]] for c in cells], np.float32)
    return x, np.array([list(classes).index(c[-1]) for c in cells], np.int64)


# ---- the JS side ---------------------------------------------------------------------------
@functools.cache
def missing_js() -> str | None:
    """What the Node tests lack (None: nothing)."""
    if shutil.which("node") is None:
        return "node (Node.js 18+)"
    if not (JS / "node_modules" / "onnxruntime-web" / "package.json").exists():
        return "onnxruntime-web (run `npm ci` in js/)"
    return None


@functools.cache
def missing_browser() -> str | None:
    """What the headless-Chromium tests lack (None: nothing)."""
    if missing_js():
        return missing_js()
    if not (JS / "node_modules" / "playwright-core" / "package.json").exists():
        return "playwright-core (run `npm ci` in js/)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def run_node(*args, cwd: Path = JS) -> dict:
    done = subprocess.run(["node", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def png_pixels(path: Path) -> np.ndarray:
    """The pixels (rows, columns, channels) of an 8-bit RGB/RGBA, non-interlaced PNG such as
    Chromium's screenshots."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, chunks, idat = 8, {}, b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        idat += body if kind == b"IDAT" else b""
        chunks.setdefault(kind, body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    return _unfilter(raw, channels).reshape(height, width, channels)


def _unfilter(raw: np.ndarray, bpp: int) -> np.ndarray:
    """PNG's per-row filters (none, sub, up, average, Paeth) undone."""
    out = np.zeros((raw.shape[0], raw.shape[1] - 1), np.int32)
    prior = np.zeros(out.shape[1], np.int32)
    for r, row in enumerate(raw):
        kind, line = int(row[0]), row[1:].astype(np.int32)
        if kind == 2:
            line = (line + prior) & 255
        elif kind in (1, 3, 4):
            line = line.copy()
            for i in range(line.size):
                left = line[i - bpp] if i >= bpp else 0
                up, corner = prior[i], (prior[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) >> 1
                else:
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 255
        out[r] = prior = line
    return out.astype(np.uint8)
