"""Training settings: one frozen object, one default per setting, resolved in one order.

    defaults  <  recipe ([train] and [data])  <  saved training file  <  arguments

(`arguments` are the command line's options or the keyword arguments of `Model.compile` and
`Model.fit`). `resolve` checks every value once, converts it once, and returns `Settings`;
everything downstream reads that object. The learning rate here is where a run *starts*: while
training, the rate is optimizer state inside the step graph (so schedules survive save and
resume); a resumed file's stored rate is its `saved` layer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from irkit.errors import SpecError


@dataclass(frozen=True)
class Settings:
    """Every setting of a training run, with its one default."""

    # [train]
    loss: str = "sparse_categorical_crossentropy"
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    keep_best: bool = True          # restore the best epoch's weights at the end
    monitor: str = "val_loss"       # what "best" and early stopping watch
    patience: int = 0               # early stopping after this many epochs without gain; 0: off
    min_delta: float = 0.0          # the smallest change that counts as a gain
    recompute: str | int = "none"   # gradient checkpointing: none, sqrt or a byte budget
    # [data]
    dataset: str | None = None
    val_split: float = 0.2
    label_column: str = "label"

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` checked and applied (the arguments layer)."""
        return resolve(self.as_dict(), changes, names=("current", "arguments"))

    def as_dict(self) -> dict[str, Any]:
        # every setting is a number, a string or None: a shallow dict (dataclasses.asdict
        # deep-copies each value, 85 us, twice a fit)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """What a model's metadata records (everything but the device)."""
        return json.dumps({k: v for k, v in self.as_dict().items() if k != "device"})

    @property
    def monitor_mode(self) -> str:
        """'max' for accuracy-like figures, 'min' for losses."""
        return "max" if "acc" in self.monitor else "min"


DEFAULTS = Settings()
FIELDS = {f.name for f in dataclasses.fields(Settings)}
DATA_KEYS = ("dataset", "val_split", "label_column")
TRAIN_KEYS = tuple(k for k in FIELDS if k not in DATA_KEYS and k != "device")


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
RULES: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "loss": ("a string", _is_str, str),
    "optimizer": ("sgd or adam", lambda v: v in ("sgd", "adam"), str),
    "lr": ("a finite number > 0", lambda v: _is_number(v) and 0 < v < float("inf"), float),
    "momentum": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1, float),
    "nesterov": ("true or false", lambda v: isinstance(v, bool), bool),
    "weight_decay": ("a number >= 0", lambda v: _is_number(v) and 0 <= v < float("inf"), float),
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
    "dataset": ("a dataset name or file path (a string)", _is_str, str),
    "val_split": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1, float),
    "label_column": ("a column name (a string)", _is_str, str),
}


def check(key: str, value: Any, where: str) -> Any:
    """`value` converted for setting `key`, or SpecError naming `where` and the rule."""
    if key not in RULES:
        raise SpecError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(RULES))}")
    what, ok, convert = RULES[key]
    if not ok(value):
        raise SpecError(f"{where}: {key} must be {what}, got {value!r}")
    return convert(value)


def resolve(*layers: Mapping[str, Any] | None, names: tuple[str, ...] = ()) -> Settings:
    """Settings from `layers`, later ones winning (defaults < recipe < saved < arguments);
    None values and None layers are skipped. `names` label the layers in error messages."""
    merged = DEFAULTS.as_dict()
    for i, layer in enumerate(layers):
        where = names[i] if i < len(names) else f"settings layer {i}"
        for key, value in (layer or {}).items():
            if value is not None:
                merged[key] = check(key, value, where)
    if merged["nesterov"] and not merged["momentum"]:
        raise SpecError("nesterov needs momentum > 0")
    return Settings(**merged)


def from_json(text: str | None) -> dict[str, Any]:
    """The settings a model's metadata records (unknown keys dropped, values checked later)."""
    try:
        raw = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in raw.items() if k in FIELDS} if isinstance(raw, dict) else {}
