"""Training settings: one frozen object, one default per setting, resolved in one order.

    defaults  <  recipe ([train] and [data])  <  saved training file  <  arguments

(`arguments` are the command line's options or the keyword arguments of `Model.compile` and
`Model.fit`). `resolve` checks every value once, converts it once, and returns `Settings`;
everything downstream reads that object. The learning rate here is where a run *starts*: while
training, the rate is optimizer state inside the step graph (so schedules survive save and
resume); a resumed file's stored rate is its `saved` layer.

An optimizer's hyperparameters (momentum, beta_1, ...) are its own fields
(irkit.train.optimizers). A layer gives them as plain keys (`momentum = 0.9` in a recipe's
[train], `compile(optimizer="sgd", momentum=0.9)`); `resolve` gathers them into
`optimizer_config` and checks them against the optimizer chosen. Hyperparameters from a lower
layer are dropped when a higher layer picks another optimizer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from irkit.errors import SpecError
from irkit.train.losses import get_loss
from irkit.train.optimizers import (
    OPTIMIZERS,
    hyperparameter_names,
    optimizer_class,
    optimizer_from,
)


@dataclass(frozen=True)
class Settings:
    """Every setting of a training run, with its one default."""

    # [train]
    loss: str = "sparse_categorical_crossentropy"
    optimizer: str = "adam"
    lr: float = 0.001
    optimizer_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    keep_best: bool = True          # restore the best epoch's weights at the end
    monitor: str = "val_loss"       # what "best" and early stopping watch
    patience: int = 0               # early stopping after this many epochs without gain; 0: off
    min_delta: float = 0.0          # the smallest change that counts as a gain
    recompute: str | int = "none"   # gradient checkpointing: none, sqrt or a byte budget
    clip_norm: float = 0.0          # clip the gradients to this global L2 norm; 0: off
    accumulate: int = 1             # micro-batches whose gradients make one update
    # [data]
    dataset: str | None = None
    val_split: float = 0.2
    label_column: str = "label"

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` checked and applied (the arguments layer)."""
        return resolve(self.as_dict(), changes, names=("current", "arguments"))

    def as_dict(self) -> dict[str, Any]:
        """The settings as one layer: the optimizer's hyperparameters as plain keys."""
        # every setting is a number, a string or None: a shallow dict (dataclasses.asdict
        # deep-copies each value, 85 us, twice a fit)
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**flat.pop("optimizer_config"), **flat}

    def to_json(self) -> str:
        """What a model's metadata records (everything but the device)."""
        return json.dumps({k: v for k, v in self.as_dict().items() if k != "device"})

    @property
    def monitor_mode(self) -> str:
        """'max' for accuracy-like figures, 'min' for losses."""
        return "max" if "acc" in self.monitor else "min"


DEFAULTS = Settings()
FIELDS = {f.name for f in dataclasses.fields(Settings)} - {"optimizer_config"}
DATA_KEYS = ("dataset", "val_split", "label_column")


def train_keys() -> tuple[str, ...]:
    """The keys of a recipe's [train]: the settings, and every registered optimizer's
    hyperparameters."""
    settings = {k for k in FIELDS if k not in DATA_KEYS and k != "device"}
    return tuple(sorted(settings | hyperparameter_names()))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_recompute(v: Any) -> bool:
    """none, sqrt, or a byte budget > 0 (an integer, or its digits from a command line)."""
    if v in ("none", "sqrt"):
        return True
    return (_is_int(v) and v > 0) or (isinstance(v, str) and v.isdigit() and int(v) > 0)


# what each setting must be: (description, test, conversion)
RULES: dict[str, tuple[str | Callable[[], str], Callable[[Any], bool],
                      Callable[[Any], Any]]] = {
    "loss": ("a string", _is_str, str),
    "optimizer": (lambda: f"one of {', '.join(OPTIMIZERS)}",
                  lambda v: _is_str(v) and v.lower() in OPTIMIZERS, lambda v: v.lower()),
    "lr": ("a finite number > 0", lambda v: _is_number(v) and 0 < v < float("inf"), float),
    "epochs": ("an integer from 1 to 1000000", lambda v: _is_int(v) and 1 <= v <= 10**6, int),
    "batch_size": ("an integer >= 1", lambda v: _is_int(v) and v >= 1, int),
    "seed": ("an integer >= 0", lambda v: _is_int(v) and 0 <= v < 2**63, int),
    "device": ("cpu, cuda or auto", lambda v: v in ("cpu", "cuda", "auto"), str),
    "keep_best": ("true or false", lambda v: isinstance(v, bool), bool),
    "monitor": ("val_loss, val_accuracy, loss or accuracy",
                lambda v: v in ("val_loss", "val_accuracy", "loss", "accuracy"), str),
    "patience": ("an integer >= 0", lambda v: _is_int(v) and v >= 0, int),
    "min_delta": ("a number >= 0", lambda v: _is_number(v) and v >= 0, float),
    "recompute": ('"none", "sqrt" or a byte budget (an integer > 0)', _is_recompute,
                  lambda v: int(v) if str(v).isdigit() else v),
    "clip_norm": ("a finite number >= 0 (0: no clipping)",
                  lambda v: _is_number(v) and 0 <= v < float("inf"), float),
    "accumulate": ("an integer from 1 to 65536", lambda v: _is_int(v) and 1 <= v <= 65536, int),
    "dataset": ("a dataset name or file path (a string)", _is_str, str),
    "val_split": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1, float),
    "label_column": ("a column name (a string)", _is_str, str),
}


def check(key: str, value: Any, where: str) -> Any:
    """`value` converted for setting `key`, or SpecError naming `where` and the rule (an
    optimizer hyperparameter is checked by its optimizer, in `resolve`)."""
    if key in hyperparameter_names() and key not in RULES:
        if not (_is_number(value) or isinstance(value, bool)):
            raise SpecError(f"{where}: {key} must be a number or true/false, got {value!r}")
        return value
    if key not in RULES:
        known = sorted(set(RULES) | hyperparameter_names())
        raise SpecError(f"{where}: unknown setting {key!r}; known: {', '.join(known)}")
    what, ok, convert = RULES[key]
    what = what() if callable(what) else what  # a registry's names, read now
    if not ok(value):
        raise SpecError(f"{where}: {key} must be {what}, got {value!r}")
    return convert(value)


def resolve(*layers: Mapping[str, Any] | None, names: tuple[str, ...] = ()) -> Settings:
    """Settings from `layers`, later ones winning (defaults < recipe < saved < arguments);
    None values and None layers are skipped. `names` label the layers in error messages."""
    merged = {k: v for k, v in DEFAULTS.as_dict().items() if k in FIELDS}
    config: dict[str, tuple[int, Any, str]] = {}  # hyperparameter -> (layer, value, where)
    chosen = -1  # the layer that named the optimizer
    for i, layer in enumerate(layers):
        where = names[i] if i < len(names) else f"settings layer {i}"
        for key, value in (layer or {}).items():
            if value is None:
                continue
            value = check(key, value, where)
            if key in FIELDS:
                merged[key] = value
                chosen = i if key == "optimizer" else chosen
            else:
                config[key] = (i, value, where)
    cls = optimizer_class(merged["optimizer"])
    known = set(cls.hyperparameter_names())
    for key, (i, _, where) in config.items():
        if key not in known and i >= chosen:
            raise SpecError(f"{where}: optimizer {cls.name} has no hyperparameter {key!r}; its "
                            f"hyperparameters: {', '.join(cls.hyperparameter_names())}")
    options = {k: v for k, (_, v, _) in config.items() if k in known}
    try:
        cls(**options)  # the optimizer checks its own hyperparameters
    except SpecError as e:
        where = next((w for k, (_, _, w) in config.items() if f" {k} " in str(e)), "settings")
        raise SpecError(f"{where}: {e}") from None
    return Settings(**merged, optimizer_config=options)


def from_json(text: str | None) -> dict[str, Any]:
    """The settings a model's metadata records (unknown keys dropped, values checked later)."""
    try:
        raw = json.loads(text) if text else {}
    except (json.JSONDecodeError, RecursionError):  # damaged, or nested too deeply
        return {}
    if not isinstance(raw, dict):
        return {}
    # files written before optimizers owned their hyperparameters record sgd's momentum and
    # nesterov whatever the optimizer: keep only the recorded optimizer's own
    cls = OPTIMIZERS.get(str(raw.get("optimizer", DEFAULTS.optimizer)).lower())
    own = set(cls.hyperparameter_names()) if cls is not None else set()
    return {k: v for k, v in raw.items() if k in FIELDS or k in own}


def check_same_step(saved: Settings, s: Settings) -> None:
    """A training file continues with the loss and optimizer its step graph was built with."""
    def step_of(settings: Settings) -> dict[str, Any]:
        return {"loss": get_loss(settings.loss).name, "optimizer": settings.optimizer,
                "clip_norm": settings.clip_norm, "accumulate": settings.accumulate,
                **optimizer_from(settings).hyperparameters()}
    before, now = step_of(saved), step_of(s)
    changed = [k for k in now if before.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise SpecError(f"a training file continues with the {k} it was saved with "
                        f"({before.get(k)!r}, not {now[k]!r}); to change it, export "
                        "the model (irkit export) and train that")
