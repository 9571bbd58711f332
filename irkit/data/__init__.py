"""Datasets: bundled Iris, 8x8 digits and a 5,000-image MNIST subset, MNIST from its IDX
files, CSV/NPZ files, splits and scaling.

A dataset is features `x` (float32, one row per sample) and targets `y` (int64 class labels or
float32 values). Scaling is fitted on the training part only and is then part of the model.
Sources and licences of the bundled files: SOURCES.md beside this file.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from irkit.data.dataset import (
    MAX_CLASSES,
    Dataset,
    check_finite,
    check_labels,
    make_dataset,
)
from irkit.data.files import gunzip_capped, load_npz, parse_csv, read_data_file
from irkit.data.mnist import PARTS as MNIST_PARTS
from irkit.data.mnist import data_home, load_mnist, read_idx
from irkit.errors import DataError

DIGITS = [str(d) for d in range(10)]
BUNDLED = {
    "iris": ("iris.csv", ["setosa", "versicolor", "virginica"]),
    "digits": ("digits.csv.gz", DIGITS),
    "mnist5k": ("mnist5k.csv.gz", DIGITS),
}


def dataset_names() -> list[str]:
    """Names `load_dataset` knows besides file paths: bundled sets, then downloaded ones."""
    return [*BUNDLED, *MNIST_PARTS]


def load_dataset(source: str, label_column: str | None = None) -> Dataset:
    """A dataset by name (bundled `iris`, `digits`, `mnist5k`; `mnist`, `mnist-test` from the
    cache folder, downloaded if missing) or a .csv/.csv.gz/.npz file. `label_column` names the
    CSV column that holds the targets (default `label`)."""
    label_column = label_column or "label"
    if source in BUNDLED:
        filename, classes = BUNDLED[source]
        raw = resources.files("irkit.data").joinpath(filename).read_bytes()
        if filename.endswith(".gz"):
            raw = gunzip_capped(raw, filename)
        ds = parse_csv(raw, source, "label")
        ds.classes = classes
        return ds
    if source in MNIST_PARTS:
        return load_mnist(source)
    if not os.path.lexists(source):
        if os.sep in source or "/" in source or "." in os.path.basename(source):
            raise DataError(f"no such file: {source!r} (from {os.getcwd()}); check the path, "
                            f"or name a bundled dataset: {', '.join(dataset_names())}")
        raise DataError(f"unknown dataset {source!r}: give one of {', '.join(dataset_names())} "
                        "or the path of a .csv, .csv.gz or .npz file")
    if source.endswith(".npz"):
        return load_npz(source)
    return parse_csv(read_data_file(source), source, label_column)


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


__all__ = ["BUNDLED", "MAX_CLASSES", "Dataset", "check_finite", "check_labels", "data_home",
           "dataset_names", "fit_scaler", "load_dataset", "load_mnist", "make_dataset",
           "read_idx", "train_val_split"]
