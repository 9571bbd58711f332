"""Iris 4-16-3 in JAX, the training `irkit train iris_mlp` does, one `lax.scan` per epoch:
standard scaling, 120 train / 30 validation samples, Adam lr 0.01, batch 16 (the last batch of
an epoch padded and masked, so it trains on 8 samples as the others do), 100 epochs, validation
each epoch inside the same jitted call, the best epoch's weights written to -o (np.savez).

    python benchmarks/peers/iris_jax.py -o iris.npz [--threads N] [--epochs 100]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def init_params(seed: int = 1) -> dict[str, np.ndarray]:
    """He-normal / zeros, as irkit's Dense layers start."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(0, np.sqrt(2 / 4), (4, 16)).astype(np.float32),
            "b1": np.zeros(16, np.float32),
            "W2": rng.normal(0, np.sqrt(2 / 16), (16, 3)).astype(np.float32),
            "b2": np.zeros(3, np.float32)}


def make_epoch(n: int, batch: int, lr: float):
    """A jitted `(state, x, y, order, xv, yv) -> (state', [loss, acc, val_loss, val_acc])`
    that runs one epoch of steps (a lax.scan) and the validation."""
    import jax
    import jax.numpy as jnp
    steps = -(-n // batch)
    pad = steps * batch - n

    def logits_of(p, x):
        return jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    def loss_fn(p, x, y, mask):
        logits = logits_of(p, x)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]
        hits = (jnp.argmax(logits, axis=1) == y) * mask
        return jnp.sum(ce * mask) / jnp.sum(mask), jnp.sum(hits)

    def step(state, b):
        (loss, hits), g = jax.value_and_grad(loss_fn, has_aux=True)(state["p"], *b)
        t = state["t"] + 1.0
        m = jax.tree.map(lambda m, d: BETA1 * m + (1 - BETA1) * d, state["m"], g)
        v = jax.tree.map(lambda v, d: BETA2 * v + (1 - BETA2) * d * d, state["v"], g)
        size, sqrt_c2 = lr / (1 - BETA1 ** t), jnp.sqrt(1 - BETA2 ** t)
        p = jax.tree.map(lambda p, m, v: p - size * m / (jnp.sqrt(v) / sqrt_c2 + EPS),
                         state["p"], m, v)
        return {"p": p, "m": m, "v": v, "t": t}, (loss * jnp.sum(b[2]), hits)

    def epoch(state, x, y, order, xv, yv):
        idx = jnp.concatenate([order, jnp.zeros(pad, order.dtype)])
        mask = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(steps, batch)
        xb = x[idx].reshape(steps, batch, -1)
        yb = y[idx].reshape(steps, batch)
        state, (losses, hits) = jax.lax.scan(step, state, (xb, yb, mask))
        val_loss, val_hits = loss_fn(state["p"], xv, yv, jnp.ones(len(yv)))
        return state, jnp.stack([jnp.sum(losses) / n, jnp.sum(hits) / n, val_loss,
                                 val_hits / len(yv)])
    return jax.jit(epoch)


def fit(data, epochs: int, epoch_fn=None, lr: float = 0.01, batch: int = 16, seed: int = 1,
        log: bool = False):
    """Train from init_params on data = (x, y, xv, yv); returns (best params, history)."""
    import jax.numpy as jnp
    x, y, xv, yv = (jnp.asarray(a.astype(np.int32) if a.dtype.kind == "i" else a)
                    for a in data)
    epoch_fn = epoch_fn or make_epoch(len(x), batch, lr)
    p = {k: jnp.asarray(v) for k, v in init_params(seed).items()}
    state = {"p": p, "m": {k: jnp.zeros_like(v) for k, v in p.items()},
             "v": {k: jnp.zeros_like(v) for k, v in p.items()}, "t": jnp.float32(0)}
    rng = np.random.default_rng(seed)
    history: list[np.ndarray] = []
    best, best_p = float("inf"), p
    for e in range(epochs):
        order = jnp.asarray(rng.permutation(len(x)).astype(np.int32))
        state, logs = epoch_fn(state, x, y, order, xv, yv)
        logs = np.asarray(logs)
        history.append(logs)
        if logs[2] < best:
            best, best_p = float(logs[2]), state["p"]
        if log:
            print(f"epoch {e + 1}/{epochs}  loss {logs[0]:.4f}  accuracy {logs[1]:.4f}  "
                  f"val_loss {logs[2]:.4f}  val_accuracy {logs[3]:.4f}", file=sys.stderr)
    return best_p, history


def main(argv: list[str] | None = None) -> int:
    """Train and write the best weights (see the module docstring); 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="1: XLA single-threaded; else XLA's "
                   "default (all cores)")
    args = p.parse_args(argv)
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
    from iris_data import load_iris
    best, history = fit(load_iris(), args.epochs, log=True)
    with open(args.output, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in best.items()})
    print(f"best val_loss {min(h[2] for h in history):.4f}; wrote {args.output}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
