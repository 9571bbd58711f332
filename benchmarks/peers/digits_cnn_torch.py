"""models/digits_cnn.toml in PyTorch: min-max scaling in the model, conv(16, 3x3, same) ->
BatchNorm -> ReLU -> maxpool 2 -> conv(32, 3x3, same) + ReLU -> maxpool 2 -> flatten ->
dense 64 + ReLU -> dropout 0.2 -> dense 10. Trained by torch_loop.fit (Adam lr 0.003,
batch 32) in bench_process.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MinMax(nn.Module):
    """(x - min) / (max - min), fitted on the training part (irkit's Normalize("minmax"))."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        lo, span = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
        self.register_buffer("shift", torch.from_numpy(lo.astype(np.float32)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))

    def forward(self, x):
        return (x - self.shift) * self.scale


def build(x_train: np.ndarray, seed: int = 0) -> nn.Module:
    """The recipe's network for 64-pixel rows, scaling fitted on `x_train`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        MinMax(x_train), nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=0.1, eps=1e-5), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
