"""Optimizers as IR: each builds the parameter and state updates inside the train-step graph.

One class per optimizer, as in Keras (`keras/src/optimizers/sgd.py`): its hyperparameters are
its dataclass fields (checked once, in `__post_init__`), `slots` names the per-parameter state
it keeps, and `update` does the math. `OPTIMIZERS` below is the one list of names: the command
line's choices, the settings' validation, `Model.compile` and the resume check read it. Adding
an optimizer is one class and one line there (or `register_optimizer(Cls)` at run time).

The learning rate and the step count are optimizer *state* (graph inputs written back each
step, see irkit.train.step): a schedule changes the rate without rebuilding anything, and a
training file stores it with the rest of the state. `learning_rate` here is only where a run
starts, as Keras' first argument (`Adam(0.01)`); None leaves it to the settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import numpy as np

from irkit import ops
from irkit.errors import SpecError
from irkit.ir import Value


@dataclass
class Optimizer:
    """Base: hyperparameters are fields; `bounds` gives each number's range [low, high)."""

    learning_rate: float | None = None
    _: KW_ONLY
    weight_decay: float = 0.0
    name: ClassVar[str] = ""
    slots: tuple[str, ...] = dataclasses.field(default=(), init=False, repr=False)
    bounds: ClassVar[dict[str, tuple[float, float]]] = {}

    def __post_init__(self) -> None:
        for f in self.fields():
            self._check(f.name, getattr(self, f.name), f.default)
        if self.learning_rate is not None and not (
                _is_number(self.learning_rate) and 0 < self.learning_rate < math.inf):
            raise SpecError(f"{self._label()} learning_rate must be a finite number > 0, got "
                            f"{self.learning_rate!r}")

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        """The hyperparameters (every field but learning_rate and the slots)."""
        return [f for f in dataclasses.fields(cls) if f.init and f.name != "learning_rate"]

    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        return [f.name for f in cls.fields()]

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters by name (what settings and training files record)."""
        return {f.name: getattr(self, f.name) for f in self.fields()}

    def _label(self) -> str:
        return f"optimizer {self.name or type(self).__name__}:"

    def _check(self, key: str, value: Any, default: Any) -> None:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise SpecError(f"{self._label()} {key} must be true or false, got {value!r}")
            return
        low, high = self.bounds.get(key, (0.0, math.inf))
        if not (_is_number(value) and low <= value < high):
            want = f"in [{low:g}, {high:g})" if high < math.inf else f">= {low:g}"
            raise SpecError(f"{self._label()} {key} must be a number {want}, got {value!r}")

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
        """(p', {slot: slot'}) for parameter `p` with gradient `g` and its slots `state`."""
        raise NotImplementedError

    def _decayed(self, p: Value, g: Value) -> Value:
        return ops.Add(g, ops.Mul(p, self.weight_decay)) if self.weight_decay else g


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class SGD(Optimizer):
    """v' = momentum v + g;  p' = p - lr v'  (PyTorch's form; Nesterov: p' = p - lr (g + m v'))."""

    momentum: float = 0.0
    nesterov: bool = False
    name: ClassVar[str] = "sgd"
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"momentum": (0.0, 1.0)}

    @property
    def update_nodes(self) -> int:
        return 2 + (2 if self.weight_decay else 0) + (2 if self.momentum else 0) + (
            2 if self.nesterov else 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.slots = ("velocity",) if self.momentum else ()
        if self.nesterov and not self.momentum:
            raise SpecError("optimizer sgd: nesterov needs momentum > 0")

    def update(self, p, g, state, shared):
        g = self._decayed(p, g)
        if not self.momentum:
            return ops.Sub(p, ops.Mul(g, shared["lr"])), {}
        v = ops.Add(ops.Mul(state["velocity"], self.momentum), g)
        direction = ops.Add(g, ops.Mul(v, self.momentum)) if self.nesterov else v
        return ops.Sub(p, ops.Mul(direction, shared["lr"])), {"velocity": v}


@dataclass
class Adam(Optimizer):
    """Adam with PyTorch's bias correction: p' = p - lr/c1 m' / (sqrt(v')/sqrt(c2) + epsilon)."""

    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    name: ClassVar[str] = "adam"
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "beta_1": (0.0, 1.0), "beta_2": (0.0, 1.0), "epsilon": (1e-30, math.inf)}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.slots = ("m", "v")

    @property
    def update_nodes(self) -> int:
        return 13 + (2 if self.weight_decay else 0)

    def prepare(self, lr, step):
        one = lr.graph.constant(np.array(1.0, dtype=lr.dtype))
        c1 = ops.Sub(one, ops.Pow(lr.graph.constant(np.float32(self.beta_1)), step))
        c2 = ops.Sub(one, ops.Pow(lr.graph.constant(np.float32(self.beta_2)), step))
        return {"step_size": ops.Div(lr, c1), "sqrt_c2": ops.Sqrt(c2)}

    def update(self, p, g, state, shared):
        g = self._decayed(p, g)
        m = ops.Add(ops.Mul(state["m"], self.beta_1), ops.Mul(g, 1.0 - self.beta_1))
        v = ops.Add(ops.Mul(state["v"], self.beta_2),
                    ops.Mul(ops.Mul(g, g), 1.0 - self.beta_2))
        denom = ops.Add(ops.Div(ops.Sqrt(v), shared["sqrt_c2"]), self.epsilon)
        return ops.Sub(p, ops.Mul(ops.Div(m, denom), shared["step_size"])), {"m": m, "v": v}


@dataclass
class RMSprop(Optimizer):
    """v' = rho v + (1 - rho) g^2;  p' = p - lr g / sqrt(v' + epsilon)  (Keras' form)."""

    rho: float = 0.9
    epsilon: float = 1e-7
    name: ClassVar[str] = "rmsprop"
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "rho": (0.0, 1.0), "epsilon": (1e-30, math.inf)}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.slots = ("velocity",)

    @property
    def update_nodes(self) -> int:
        return 8 + (2 if self.weight_decay else 0)

    def update(self, p, g, state, shared):
        g = self._decayed(p, g)
        v = ops.Add(ops.Mul(state["velocity"], self.rho), ops.Mul(ops.Mul(g, g), 1.0 - self.rho))
        step = ops.Div(ops.Mul(g, shared["lr"]), ops.Sqrt(ops.Add(v, self.epsilon)))
        return ops.Sub(p, step), {"velocity": v}


@dataclass
class AdamW(Adam):
    """Adam with decoupled weight decay, torch.optim.AdamW's form and defaults (weight_decay
    0.01): p' = p (1 - lr weight_decay) - lr/c1 m' / (sqrt(v')/sqrt(c2) + epsilon); the decay
    does not enter the moments (Adam's weight_decay adds it to the gradient)."""

    weight_decay: float = dataclasses.field(default=0.01, kw_only=True)
    name: ClassVar[str] = "adamw"

    @property
    def update_nodes(self) -> int:
        return 13 + (1 if self.weight_decay else 0)

    def prepare(self, lr, step):
        shared = super().prepare(lr, step)
        if self.weight_decay:
            one = lr.graph.constant(np.array(1.0, dtype=lr.dtype))
            shared["decay"] = ops.Sub(one, ops.Mul(lr, self.weight_decay))
        return shared

    def update(self, p, g, state, shared):
        decayed = ops.Mul(p, shared["decay"]) if self.weight_decay else p
        m = ops.Add(ops.Mul(state["m"], self.beta_1), ops.Mul(g, 1.0 - self.beta_1))
        v = ops.Add(ops.Mul(state["v"], self.beta_2),
                    ops.Mul(ops.Mul(g, g), 1.0 - self.beta_2))
        denom = ops.Add(ops.Div(ops.Sqrt(v), shared["sqrt_c2"]), self.epsilon)
        step = ops.Mul(ops.Div(m, denom), shared["step_size"])
        return ops.Sub(decayed, step), {"m": m, "v": v}


# The one list of optimizers: name -> class.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop,
                                          "adamw": AdamW}


def register_optimizer(cls: type[Optimizer]) -> type[Optimizer]:
    """Add an optimizer class under its `name` (usable as a decorator)."""
    if not cls.name or cls.name != cls.name.lower():
        raise SpecError(f"optimizer class {cls.__name__} needs a lower-case `name`")
    OPTIMIZERS[cls.name] = cls
    return cls


def optimizer_class(name: str) -> type[Optimizer]:
    """The class registered as `name` (any case); SpecError listing the choices otherwise."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise SpecError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    return cls


def get_optimizer(name: str | Optimizer, **hyperparameters: Any) -> Optimizer:
    """An optimizer by name (any case) with keyword hyperparameters (momentum, ...)."""
    if isinstance(name, Optimizer):
        return name
    cls = optimizer_class(name)
    unknown = sorted(set(hyperparameters) - set(cls.hyperparameter_names()))
    if unknown:
        raise SpecError(f"optimizer {cls.name} has no hyperparameter {unknown[0]!r}; its "
                        f"hyperparameters: {', '.join(cls.hyperparameter_names())}")
    return cls(**hyperparameters)


def optimizer_from(settings) -> Optimizer:
    """The optimizer of resolved Settings: its name and its hyperparameters."""
    return get_optimizer(settings.optimizer, **dict(settings.optimizer_config))


def hyperparameter_names() -> set[str]:
    """Every hyperparameter name of every registered optimizer (recipes' [train] keys)."""
    return {n for cls in OPTIMIZERS.values() for n in cls.hyperparameter_names()}


def check_registered(optimizer: Optimizer) -> None:
    """An optimizer instance is rebuilt by name (resume, data-parallel workers): its class must
    be the one registered under its name."""
    cls = type(optimizer)
    if OPTIMIZERS.get(optimizer.name) is not cls:
        raise SpecError(f"optimizer class {cls.__name__} is not registered; register it with "
                        f"irkit.train.register_optimizer({cls.__name__}) (it needs a `name`)")
