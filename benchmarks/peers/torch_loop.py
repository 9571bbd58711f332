"""A plain PyTorch eager training loop, the one the peer scripts share: shuffled batches, Adam,
loss and accuracy per epoch, validation each epoch, the best epoch's weights kept."""

from __future__ import annotations

import sys

import numpy as np
import torch


def validate(model: torch.nn.Module, loss_fn, xv, yv) -> tuple[float, float]:
    """Loss and accuracy on the validation part, in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = model(xv)
        return loss_fn(logits, yv).item(), (logits.argmax(1) == yv).float().mean().item()


def fit(model: torch.nn.Module, data, epochs: int, batch: int, lr: float, seed: int = 0,
        log: bool = False) -> dict[str, list[float]]:
    """Train `model` on data = (x_train, y_train, x_val, y_val) numpy arrays; returns the
    per-epoch history; the model ends with the weights of its best validation loss."""
    x, y, xv, yv = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [],
                                       "val_accuracy": []}
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        xs, ys = x[order], y[order]
        model.train()
        total, correct = 0.0, 0.0
        for start in range(0, len(xs), batch):
            xb, yb = xs[start:start + batch], ys[start:start + batch]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
            correct += (logits.argmax(1) == yb).sum().item()
        val_loss, val_acc = validate(model, loss_fn, xv, yv)
        for k, v in zip(history, (total / len(x), correct / len(x), val_loss, val_acc)):
            history[k].append(v)
        if val_loss < best:
            best = val_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if log:
            print(f"epoch {epoch + 1}/{epochs}  loss {total / len(x):.4f}  val_loss "
                  f"{val_loss:.4f}  val_accuracy {val_acc:.4f}", file=sys.stderr)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
