"""Datasets: the bundled Iris and 8x8 digits data, CSV/NPZ files, splits and scaling.

A dataset is features `x` (float32, one row per sample) and targets `y` (int64 class labels or
float32 values). Scaling is fitted on the training part only and is then part of the model.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from irkit.errors import DataError

BUNDLED = {
    "iris": ("iris.csv", ["setosa", "versicolor", "virginica"]),
    "digits": ("digits.csv.gz", [str(d) for d in range(10)]),
}


@dataclass
class Dataset:
    """Features, targets and what they mean."""

    x: np.ndarray
    y: np.ndarray
    name: str
    feature_names: list[str] = field(default_factory=list)
    classes: list[str] | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)


def load_dataset(source: str, label_column: str = "label") -> Dataset:
    """A bundled dataset by name (`iris`, `digits`) or a .csv/.csv.gz/.npz file."""
    if source in BUNDLED:
        filename, classes = BUNDLED[source]
        raw = resources.files("irkit.data").joinpath(filename).read_bytes()
        ds = _parse_csv(_decompress(raw, filename), source, label_column)
        ds.classes = classes
        return ds
    if not os.path.exists(source):
        raise DataError(f"unknown dataset {source!r}: give one of {', '.join(BUNDLED)} or the "
                        "path of a .csv, .csv.gz or .npz file")
    if source.endswith(".npz"):
        return _load_npz(source)
    with open(source, "rb") as f:
        return _parse_csv(_decompress(f.read(), source), source, label_column)


def _decompress(raw: bytes, name: str) -> str:
    try:
        return (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: cannot read it as text ({e}); give a UTF-8 CSV file") from None


def _parse_csv(text: str, name: str, label_column: str) -> Dataset:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise DataError(f"{name}: needs a header row and at least one data row")
    header = [h.strip() for h in lines[0].split(",")]
    if label_column not in header:
        raise DataError(f"{name}: no column {label_column!r} in the header; name the target "
                        "column 'label' (or pass label_column)")
    try:
        table = np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=",", dtype=np.float64,
                           ndmin=2)
    except ValueError as e:
        raise DataError(f"{name}: {str(e).splitlines()[0]}; every cell must be a number") from None
    if table.shape[1] != len(header):
        raise DataError(f"{name}: rows have {table.shape[1]} columns, the header {len(header)}")
    li = header.index(label_column)
    x = np.delete(table, li, axis=1)
    return _make(x, table[:, li], name, [h for i, h in enumerate(header) if i != li])


def _load_npz(path: str) -> Dataset:
    try:
        with np.load(path) as z:
            x, y = z["x"], z["y"]
    except KeyError:
        raise DataError(f"{path}: an .npz dataset needs arrays named 'x' and 'y'") from None
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return _make(x, np.asarray(y), path, [f"x{i}" for i in range(x.shape[1])])


def _make(x: np.ndarray, y: np.ndarray, name: str, features: list[str]) -> Dataset:
    check_finite(x, name)
    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{name}: target has NaN/inf in row {int(np.argmax(~np.isfinite(y)))}")
    if y.dtype.kind in "iu" or np.all(y == np.round(y)):
        y = y.astype(np.int64)
        if (y < 0).any():
            raise DataError(f"{name}: negative class label {int(y.min())}; labels are 0..C-1")
        classes = [str(i) for i in range(int(y.max()) + 1)]
    else:
        y, classes = y.astype(np.float32), None
    return Dataset(x.astype(np.float32), y, name, features, classes)


def check_finite(x: np.ndarray, name: str) -> None:
    """DataError naming the first row with NaN or inf."""
    bad = ~np.isfinite(np.asarray(x, dtype=np.float64))
    if bad.any():
        row = int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))
        raise DataError(f"{name}: NaN or inf in row {row}; clean or impute the data first")


def check_labels(y: np.ndarray, num_classes: int, name: str) -> None:
    """DataError if an integer label is outside 0..num_classes-1."""
    if y.dtype.kind in "iu" and len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.max()) if y.max() >= num_classes else int(y.min())
        raise DataError(f"{name}: label {bad} is out of range for {num_classes} classes; "
                        f"labels must be 0..{num_classes - 1}")


def train_val_split(n: int, val_fraction: float, seed: int, y: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, validation); stratified by class when integer labels are given."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    if val_fraction == 0:
        return rng.permutation(n), np.array([], dtype=np.int64)
    groups = [np.arange(n)] if y is None or y.dtype.kind not in "iu" else [
        np.flatnonzero(y == c) for c in _classes_present(y)]
    train, val = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        k = int(round(len(idx) * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    train_idx, val_idx = np.concatenate(train), np.concatenate(val)
    if len(train_idx) == 0:
        raise DataError(f"validation fraction {val_fraction} of {n} samples leaves none to "
                        "train on; lower it")
    return rng.permutation(train_idx), rng.permutation(val_idx)


def _classes_present(y: np.ndarray) -> np.ndarray:
    """The distinct labels in order (np.unique would import numpy.ma: 20 ms at start-up)."""
    if len(y) and y.min() >= 0 and y.max() < 1 << 20:
        return np.flatnonzero(np.bincount(y))
    return np.unique(y)


def fit_scaler(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) so that (x - shift) * scale is min-max or standard scaled."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "minmax":
        shift, span = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    elif kind == "standard":
        shift, span = x.mean(axis=0), x.std(axis=0)
    elif kind == "none":
        return np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
    else:
        raise DataError(f"unknown scaling {kind!r}; use minmax, standard or none")
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
    return shift.astype(np.float32), scale.astype(np.float32)
