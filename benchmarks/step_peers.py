"""The peers of irkit's train step in bench_train_step.py: PyTorch eager, torch.compile, JAX
`jit`, JAX `lax.scan` (POOL steps per call) and a hand-written ONNX step.

Every peer trains the same MLP `x -> Dense(H) -> ReLU -> Dense(C)` with mean softmax
cross-entropy on integer labels, from the same initial weights (W as (in, out)), on the same
POOL batches in the same order, and returns the loss and the number of correct predictions
as Python floats (what a training loop that logs them needs; irkit's step computes both).

A peer's `call(i)` runs `steps_per_call` steps starting at batch `i % POOL`; `first()` runs
the first call from the initial weights and returns the loss of its first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POOL = 8  # distinct batches, cycled; also the steps per call of the scan peers
PARAMS = ("W1", "b1", "W2", "b2")
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # Adam's, the same in every framework


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: the MLP's sizes, batch, optimizer, run length."""

    name: str
    batch: int
    features: int
    hidden: int
    classes: int
    optimizer: str  # "adam" or "sgd" (plain: no momentum)
    lr: float
    steps: int      # per timed run; a multiple of POOL
    repeats: int


def make_batches(cfg: Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """POOL batches: x (POOL, B, F) float32, y (POOL, B) int64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((POOL, cfg.batch, cfg.features)).astype(np.float32)
    y = rng.integers(0, cfg.classes, (POOL, cfg.batch)).astype(np.int64)
    return x, y


# ---- PyTorch --------------------------------------------------------------------------------
class TorchPeer:
    """PyTorch eager (the usual loop), or with `compiled` torch.compile (mode default) of the
    loss function and of the optimizer step; backward runs through the compiled graph."""

    steps_per_call = 1

    def __init__(self, cfg: Config, data, weights: dict[str, np.ndarray],
                 compiled: bool = False) -> None:
        import torch
        self.torch = torch
        self.name = "torch.compile" if compiled else "torch"
        first = torch.nn.Linear(cfg.features, cfg.hidden)
        second = torch.nn.Linear(cfg.hidden, cfg.classes)
        with torch.no_grad():
            for layer, w, b in ((first, "W1", "b1"), (second, "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(weights[w].T.copy()))
                layer.bias.copy_(torch.from_numpy(weights[b]))
        self.model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
        params = self.model.parameters()
        self.opt = (torch.optim.Adam(params, lr=cfg.lr, betas=(BETA1, BETA2), eps=EPS)
                    if cfg.optimizer == "adam" else torch.optim.SGD(params, lr=cfg.lr))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.forward = torch.compile(self._forward) if compiled else self._forward
        self.update = torch.compile(self.opt.step) if compiled else self.opt.step
        self.xs = [torch.from_numpy(x) for x in data[0]]
        self.ys = [torch.from_numpy(y) for y in data[1]]

    def _forward(self, x, y):
        logits = self.model(x)
        return self.loss_fn(logits, y), (logits.argmax(1) == y).sum()

    def call(self, i: int) -> tuple[float, float]:
        self.opt.zero_grad(set_to_none=True)
        loss, correct = self.forward(self.xs[i % POOL], self.ys[i % POOL])
        loss.backward()
        self.update()
        return loss.item(), float(correct.item())

    def first(self) -> float:
        return self.call(0)[0]


# ---- JAX ------------------------------------------------------------------------------------
def jax_step(cfg: Config):
    """The pure step `(state, x, y) -> (state', (loss, correct))` in JAX."""
    import jax
    import jax.numpy as jnp

    def loss_fn(p, x, y):
        logits = jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return loss, jnp.sum(jnp.argmax(logits, axis=1) == y).astype(jnp.float32)

    def step(state, x, y):
        (loss, correct), g = jax.value_and_grad(loss_fn, has_aux=True)(state["p"], x, y)
        if cfg.optimizer == "sgd":
            return {"p": jax.tree.map(lambda p, d: p - cfg.lr * d, state["p"], g)}, (loss,
                                                                                   correct)
        t = state["t"] + 1.0
        m = jax.tree.map(lambda m, d: BETA1 * m + (1 - BETA1) * d, state["m"], g)
        v = jax.tree.map(lambda v, d: BETA2 * v + (1 - BETA2) * d * d, state["v"], g)
        step_size = cfg.lr / (1 - BETA1 ** t)
        sqrt_c2 = jnp.sqrt(1 - BETA2 ** t)
        p = jax.tree.map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / sqrt_c2 + EPS),
                         state["p"], m, v)
        return {"p": p, "m": m, "v": v, "t": t}, (loss, correct)
    return step


def jax_state(cfg: Config, weights: dict[str, np.ndarray]) -> dict:
    """The JAX step's starting state: the weights, and Adam's zero moments and step 0."""
    import jax.numpy as jnp
    p = {k: jnp.asarray(weights[k]) for k in PARAMS}
    if cfg.optimizer == "sgd":
        return {"p": p}
    # distinct arrays for m and v: donated buffers must not alias
    return {"p": p, "m": {k: jnp.zeros_like(v) for k, v in p.items()},
            "v": {k: jnp.zeros_like(v) for k, v in p.items()}, "t": jnp.float32(0.0)}


class JaxJitPeer:
    """`jax.jit` of one step (state donated), one call per step."""

    name, steps_per_call = "jax.jit", 1

    def __init__(self, cfg: Config, data, weights: dict[str, np.ndarray]) -> None:
        import jax
        self.step = jax.jit(jax_step(cfg), donate_argnums=0)
        self.state = jax_state(cfg, weights)
        self.xs = [jax.device_put(x) for x in data[0]]
        self.ys = [jax.device_put(y.astype(np.int32)) for y in data[1]]

    def call(self, i: int) -> tuple[float, float]:
        self.state, (loss, correct) = self.step(self.state, self.xs[i % POOL], self.ys[i % POOL])
        return float(loss), float(correct)

    def first(self) -> float:
        return self.call(0)[0]


class JaxScanPeer:
    """`jax.jit` of a `lax.scan` over the POOL batches: POOL steps per call; the losses and
    correct counts come back to the host once per call."""

    name, steps_per_call = "jax.scan", POOL

    def __init__(self, cfg: Config, data, weights: dict[str, np.ndarray]) -> None:
        import jax
        step = jax_step(cfg)

        def many(state, xs, ys):
            return jax.lax.scan(lambda s, b: step(s, *b), state, (xs, ys))
        self.run = jax.jit(many, donate_argnums=0)
        self.state = jax_state(cfg, weights)
        self.xs, self.ys = jax.device_put(data[0]), jax.device_put(data[1].astype(np.int32))

    def call(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        self.state, (losses, correct) = self.run(self.state, self.xs, self.ys)
        return np.asarray(losses), np.asarray(correct)

    def first(self) -> float:
        return float(self.call(0)[0][0])
