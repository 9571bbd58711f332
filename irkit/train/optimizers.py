"""Optimizers as IR: each builds the parameter and state updates inside the train-step graph.

The learning rate and the step count are optimizer *state* (graph inputs written back each
step, see irkit.train.step), not fields of these builders: a schedule changes the rate
without rebuilding anything, and a training file stores it with the rest of the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irkit import ops
from irkit.errors import SpecError
from irkit.ir import Value


@dataclass
class Optimizer:
    """Base: `slots` names the per-parameter state tensors (same shape as the parameter)."""

    weight_decay: float = 0.0
    slots = ()
    name = ""

    @property
    def update_nodes(self) -> int:
        """About how many elementwise nodes `update` emits per parameter tensor (the step
        builder weighs this against the cost of a flat update)."""
        return 2 + (2 if self.weight_decay else 0)

    def init_state(self, param: np.ndarray) -> dict[str, np.ndarray]:
        return {slot: np.zeros_like(param) for slot in self.slots}

    def prepare(self, lr: Value, step: Value) -> dict[str, Value]:
        """Scalars shared by every parameter's update (built once per graph); `step` is this
        step's number, 1-based, as float32."""
        return {"lr": lr}

    def update(self, p: Value, g: Value, state: dict[str, Value], shared: dict[str, Value]
               ) -> tuple[Value, dict[str, Value]]:
        raise NotImplementedError

    def _decayed(self, p: Value, g: Value) -> Value:
        return ops.Add(g, ops.Mul(p, self.weight_decay)) if self.weight_decay else g


@dataclass
class SGD(Optimizer):
    """v' = momentum v + g;  p' = p - lr v'  (PyTorch's form; Nesterov: p' = p - lr (g + m v'))."""

    momentum: float = 0.0
    nesterov: bool = False
    name = "sgd"

    @property
    def update_nodes(self) -> int:
        return 2 + (2 if self.weight_decay else 0) + (2 if self.momentum else 0) + (
            2 if self.nesterov else 0)

    def __post_init__(self) -> None:
        self.slots = ("velocity",) if self.momentum else ()
        if self.nesterov and not self.momentum:
            raise SpecError("SGD nesterov=True needs momentum > 0")

    def update(self, p, g, state, shared):
        g = self._decayed(p, g)
        if not self.momentum:
            return ops.Sub(p, ops.Mul(g, shared["lr"])), {}
        v = ops.Add(ops.Mul(state["velocity"], self.momentum), g)
        direction = ops.Add(g, ops.Mul(v, self.momentum)) if self.nesterov else v
        return ops.Sub(p, ops.Mul(direction, shared["lr"])), {"velocity": v}


@dataclass
class Adam(Optimizer):
    """Adam with PyTorch's bias correction: p' = p - lr/c1 m' / (sqrt(v')/sqrt(c2) + eps)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    slots = ("m", "v")
    name = "adam"

    @property
    def update_nodes(self) -> int:
        return 13 + (2 if self.weight_decay else 0)

    def prepare(self, lr, step):
        one = lr.graph.constant(np.array(1.0, dtype=lr.dtype))
        c1 = ops.Sub(one, ops.Pow(lr.graph.constant(np.float32(self.beta1)), step))
        c2 = ops.Sub(one, ops.Pow(lr.graph.constant(np.float32(self.beta2)), step))
        return {"step_size": ops.Div(lr, c1), "sqrt_c2": ops.Sqrt(c2)}

    def update(self, p, g, state, shared):
        g = self._decayed(p, g)
        m = ops.Add(ops.Mul(state["m"], self.beta1), ops.Mul(g, 1.0 - self.beta1))
        v = ops.Add(ops.Mul(state["v"], self.beta2), ops.Mul(ops.Mul(g, g), 1.0 - self.beta2))
        denom = ops.Add(ops.Div(ops.Sqrt(v), shared["sqrt_c2"]), self.eps)
        return ops.Sub(p, ops.Mul(ops.Div(m, denom), shared["step_size"])), {"m": m, "v": v}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(name: str | Optimizer, **kwargs) -> Optimizer:
    """An optimizer by name with keyword settings (momentum, weight_decay, ...)."""
    if isinstance(name, Optimizer):
        return name
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise SpecError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SpecError(f"optimizer {name}: {e}") from None


def optimizer_from(settings) -> Optimizer:
    """The optimizer that resolved Settings name, with their momentum and weight decay."""
    kwargs = {"weight_decay": settings.weight_decay}
    if settings.optimizer == "sgd":
        kwargs.update(momentum=settings.momentum, nesterov=settings.nesterov)
    return get_optimizer(settings.optimizer, **kwargs)
