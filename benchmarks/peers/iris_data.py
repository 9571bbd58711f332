"""Iris for the peer scripts, without irkit: irkit's bundled CSV, a seeded stratified split
(120 train / 30 validation, as `irkit train iris_mlp` makes) and standard scaling fitted on
the training part."""

from __future__ import annotations

import os

import numpy as np

CSV = os.path.join(os.path.dirname(__file__), "..", "..", "irkit", "data", "iris.csv")


def load_iris(val_fraction: float = 0.2, seed: int = 1):
    """(x_train, y_train, x_val, y_val): float32 features scaled, int64 labels."""
    data = np.loadtxt(CSV, delimiter=",", skiprows=1, dtype=np.float64)
    x, y = data[:, :-1], data[:, -1].astype(np.int64)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    tr, va = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    scaled = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return scaled[tr], y[tr], scaled[va], y[va]
