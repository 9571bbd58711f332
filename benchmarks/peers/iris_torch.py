"""Iris 4-16-3 in PyTorch eager, the training `irkit train iris_mlp` does: standard scaling,
120 train / 30 validation samples, Adam lr 0.01, batch 16, 100 epochs, validation each epoch,
the best epoch's weights written to -o (torch.save of the state dict).

    python benchmarks/peers/iris_torch.py -o iris.pt [--threads N] [--epochs 100]
"""

from __future__ import annotations

import argparse
import sys

import torch
from iris_data import load_iris
from torch_loop import fit


def build(seed: int = 1) -> torch.nn.Module:
    """The 4-16-3 MLP with PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def main(argv: list[str] | None = None) -> int:
    """Train and write the best weights (see the module docstring); 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build()
    history = fit(model, load_iris(), args.epochs, 16, 0.01, seed=1, log=True)
    torch.save(model.state_dict(), args.output)
    print(f"best val_loss {min(history['val_loss']):.4f}; wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
