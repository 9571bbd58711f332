"""Model recipes: a TOML file (or a bundled recipe name) -> a layer stack plus training settings.

    [model]
    scaling = "standard"           # Normalize layer first: none, minmax or standard
    layers = [{ type = "dense", units = 16, activation = "relu" }, { type = "dense", units = 3 }]
    [data]
    dataset = "iris"               # bundled name or a file
    val_split = 0.2
    label_column = "label"         # the CSV column with the targets
    [train]
    loss = "sparse_categorical_crossentropy"
    optimizer = "adam"             # irkit list optimizers; hyperparameters as keys (momentum = 0.9)
    lr = 0.01
    epochs = 100
    batch_size = 16
    seed = 0
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from irkit.errors import ShapeError, SpecError
from irkit.nn import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    Normalize,
    Reshape,
    Sequential,
)
from irkit.nn.layers import Activation
from irkit.safe_io import FileSafetyError, check_node_count, read_capped
from irkit.train.settings import DATA_KEYS, train_keys
from irkit.train.settings import check as check_setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The one list of layers a recipe can name: type -> class (a layer's keys are its constructor's
# arguments). Adding a layer to recipes is one line here (or `register_layer`).
LAYERS: dict[str, type] = {
    "dense": Dense, "dropout": Dropout, "activation": Activation, "flatten": Flatten,
    "reshape": Reshape, "conv2d": Conv2D, "maxpool2d": MaxPool2D, "avgpool2d": AvgPool2D,
    "globalavgpool2d": GlobalAvgPool2D, "batchnorm": BatchNorm, "layernorm": LayerNorm,
}


def register_layer(kind: str, cls: type) -> None:
    """Let recipes name layer class `cls` as `type = "<kind>"`."""
    LAYERS[kind] = cls


def layer_arguments(kind: str) -> set[str]:
    """The keys a recipe may give a layer of type `kind`: its constructor's arguments."""
    return {n for n, p in inspect.signature(LAYERS[kind]).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


MODEL_KEYS = {"name", "scaling", "layers", "description"}
DATA_FILES = (".csv", ".csv.gz", ".npz", ".gz")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# layer arguments whose type the layer constructors do not check themselves
LAYER_ARG_RULES = {
    "name": ("a string", lambda v: isinstance(v, str)),
    "activation": ("a string", lambda v: isinstance(v, str)),
    "kind": ("a string", lambda v: isinstance(v, str)),
    "kernel_init": ("a string", lambda v: isinstance(v, str)),
    "use_bias": ("true or false", lambda v: isinstance(v, bool)),
    "seed": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
}


@dataclass
class Recipe:
    """A parsed recipe."""

    name: str
    layers: list[dict[str, Any]]
    scaling: str = "none"
    data: dict[str, Any] = field(default_factory=dict)    # [data] as written (checked)
    train: dict[str, Any] = field(default_factory=dict)   # [train] as written (checked)
    source: str = ""

    def settings(self) -> dict[str, Any]:
        """The recipe's settings layer (irkit.train.settings.resolve); a dataset file path is
        relative to the recipe's folder."""
        layer = {**self.train, **self.data}
        name = layer.get("dataset")
        if isinstance(name, str) and name.endswith(DATA_FILES) and not os.path.isabs(name) \
                and os.path.isfile(self.source):
            layer["dataset"] = os.path.join(os.path.dirname(os.path.abspath(self.source)), name)
        return layer

    def build(self) -> Sequential:
        """A fresh, uninitialised layer stack (weights are made on first build, seeded)."""
        layers = [Normalize(self.scaling, name="normalize")] if self.scaling != "none" else []
        try:  # a layer is a node at least: a graph of more than the cap would be refused later
            check_node_count(len(self.layers), f"{self.source}: the recipe's layer stack")
        except FileSafetyError as e:
            raise SpecError(str(e).replace(" nodes,", " layers,", 1)) from None
        for i, spec in enumerate(self.layers):
            layers.append(_layer(spec, i, self.source))
        return Sequential(layers, name=self.name)


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped with irkit (models/*.toml)."""
    return sorted(p.name[:-5] for p in resources.files("irkit.models").iterdir()
                  if p.name.endswith(".toml"))


def load_recipe(source: str) -> Recipe:
    """A recipe from a .toml path or a bundled name (e.g. `iris_mlp`)."""
    if os.path.exists(source):
        raw = read_capped(source, "recipe", "recipe")
    elif source.removesuffix(".toml") in bundled_recipes():
        raw = resources.files("irkit.models").joinpath(
            source.removesuffix(".toml") + ".toml").read_bytes()
    else:
        raise SpecError(f"{source}: no such recipe file; bundled recipes: "
                        f"{', '.join(bundled_recipes())}")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{source}: not valid TOML ({e}); fix the syntax") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise SpecError(f"{source}: arrays or inline tables nested too deeply for a recipe"
                        ) from None
    return parse_recipe(doc, source)


def parse_recipe(doc: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe document; SpecError naming the file and the bad key."""
    _only(doc, {"model", "data", "train"}, source, "top level")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise SpecError(f"{source}: needs a [model] table with a `layers` list")
    _only(model, MODEL_KEYS, source, "[model]")
    layers = model.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{source}: [model] layers must be a non-empty list of tables")
    data = _table(doc, "data", DATA_KEYS, source)
    train = _table(doc, "train", train_keys(), source)
    scaling = model.get("scaling", "none")
    if scaling not in ("none", "minmax", "standard"):
        raise SpecError(f"{source}: [model] scaling {scaling!r} must be none, minmax or standard")
    name = model.get("name") or os.path.basename(source).removesuffix(".toml")
    if not isinstance(name, str):
        raise SpecError(f"{source}: [model] name must be a string, got {name!r}")
    recipe = Recipe(name, layers, scaling, data, train, source)
    try:
        recipe.build()  # validates every layer
    except ShapeError as e:
        raise SpecError(f"{source}: {e}") from None
    return recipe


def _check_values(table: dict, rules: dict, source: str, where: str) -> None:
    for key, value in table.items():
        if key in rules and not rules[key][1](value):
            raise SpecError(f"{source}: {where} {key} must be {rules[key][0]}, got {value!r}")


def _only(table: dict, allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise SpecError(f"{source}: unknown key {extra[0]!r} in {where}; allowed: "
                        f"{', '.join(sorted(allowed))}")


def _table(doc: dict, key: str, allowed: tuple[str, ...], source: str) -> dict:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [{key}] must be a table")
    _only(table, set(allowed), source, f"[{key}]")
    return {k: check_setting(k, v, f"{source}: [{key}]") for k, v in table.items()}


def _layer(spec: Any, index: int, source: str):
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(f"{source}: layer {index} must be a table with a `type`")
    kind = spec["type"]
    if kind not in LAYERS:
        raise SpecError(f"{source}: layer {index} has unknown type {kind!r}; use one of "
                        f"{', '.join(LAYERS)}")
    cls = LAYERS[kind]
    args = {k: v for k, v in spec.items() if k != "type"}
    _only(args, layer_arguments(kind), source, f"layer {index} ({kind})")
    _check_values(args, LAYER_ARG_RULES, source, f"layer {index} ({kind})")
    try:
        return cls(**args)
    except (TypeError, SpecError) as e:
        raise SpecError(f"{source}: layer {index} ({kind}): {e}") from None
