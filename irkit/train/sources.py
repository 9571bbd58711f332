"""What a Model trains: a source of forward graphs that owns the weights.

`ModuleSource` wraps a layer (`Sequential`, a custom `Module`); `OnnxSource` wraps an imported
graph (any ONNX file whose ops irkit knows). Both build a graph whose first output is the
prediction and whose weights are initializers, and both adapt their data-scaling layer on the
values that really reach it.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from irkit import ops
from irkit.errors import DataError, ShapeError
from irkit.ir import Graph, Value
from irkit.nn.layers import Normalize
from irkit.nn.module import Module, weight_budget
from irkit.ops.dtypes import differentiable
from irkit.signature import (
    INPUT,
    META_FROZEN,
    META_NORMALIZE,
    META_PARAMS,
    META_SCALING,
    OUTPUT,
    next_name,
)
from irkit.train.modes import (
    BATCHNORM_MODES,
    inference_form,
    running_statistics,
    set_batch_norm_mode,
    training_form,
    untie_running_statistics,
)


def values_reaching(graph: Graph, value: Value, x: tuple, compile_graph,
                    batch: int = 4096) -> np.ndarray:
    """What `value` of an inference graph holds when the graph's inputs are `x` (one array per
    input, irkit.train.inputs; run in batches by `compile_graph(graph)`, a runtime's compile;
    that array itself when `value` is an input)."""
    names = [v.name for v in graph.inputs]
    if value.producer is None and value in graph.inputs:
        return x[names.index(value.name)]
    graph.outputs = [ops.own_output(value, [])]
    run = compile_graph(graph)
    n = len(x[0])
    parts = [run({k: a[i:i + batch] for k, a in zip(names, x)})[0] for i in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class ModuleSource:
    """A Module with an input shape (set from data on first use)."""

    def __init__(self, module: Module, input_shape: tuple[int, ...] | None = None,
                 seed: int = 0, weight_budget: int | None = None) -> None:
        self.module = module
        self.input_shape = input_shape
        self.seed = seed
        self.weight_budget = weight_budget  # bytes the weights may hold together (a recipe's)
        self.metadata: dict[str, str] = {}
        self._built = False

    @property
    def name(self) -> str:
        return self.module.name or "model"

    def input_specs(self) -> list[tuple[str, np.dtype]]:
        """The model's inputs: [(name, dtype)] (irkit.train.inputs)."""
        return [(INPUT, np.dtype(np.float32))]

    def ensure_input(self, x: tuple) -> None:
        shape = tuple(x[0].shape[1:])
        if self.input_shape is None:
            self.input_shape = shape
        elif self.input_shape != shape:
            raise DataError(f"the model takes samples of shape {self.input_shape}, the data has "
                            f"{shape}; give it the features the model was built for")

    def build(self, training: bool = False) -> Graph:
        if self.input_shape is None:
            raise DataError(f"{self.name}: the input shape is unknown; fit first or pass "
                            "input_shape")
        graph = Graph(self.name)
        graph.metadata = dict(self.metadata)
        x = graph.add_input(INPUT, np.float32, ("N", *self.input_shape))
        self.module.set_build_state(training, np.random.default_rng(self.seed), "")
        with weight_budget(self.weight_budget):
            y = ops.own_output(self.module(x), [])
        graph.rename_value(y, OUTPUT)
        graph.outputs = [y]
        for m in self.module.modules():  # running statistics: extra outputs `next/<buffer>`
            for name, value in m.buffer_updates.items():
                value = ops.own_output(value, graph.outputs)
                graph.rename_value(value, next_name(name))
                graph.outputs.append(value)
        self._built = True
        return graph

    def weights(self) -> dict[str, np.ndarray]:
        if not self._built:
            self.build()  # creates every weight (and the names' prefixes)
        return self.module.named_weights()

    def trainable(self) -> list[str]:
        self.weights()
        return self.module.trainable_names()

    def buffers(self) -> list[str]:
        """Running statistics that training graphs update (e.g. BatchNorm's)."""
        self.weights()
        return [m._prefix + b for m in self.module.modules() for b in sorted(m.buffers)]

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        self.module.load_weights(values)

    def adapt(self, x: tuple, compile_graph) -> None:
        """Adapt each Normalize layer not adapted yet on the values that reach it, in order
        (`compile_graph`: a runtime's compile, to run the layers before it)."""
        for layer in self.module.modules():
            if isinstance(layer, Normalize) and not layer.adapted:
                graph = self.build(training=False)
                layer.adapt(values_reaching(graph, layer.input_value, x, compile_graph))


# What trains in an imported graph, by default: a float initializer trains when it reaches a
# weight slot of an op, through ops that only move or retype it (TRAINABLE_THROUGH). Weight
# slots: the operands of MatMul, Gemm (and its C bias), Einsum; the kernel and bias of Conv and
# ConvTranspose; the scale and bias of the normalizations; an embedding table (Gather's data);
# PRelu's slope; a bias or scale that Add, Sub or Mul combine with a computed value, if it
# has more than one element or follows an op of WEIGHT_SLOTS (a one-unit layer's bias, (1,));
# and a tensor of more than one element concatenated to computed ones (ViT's class token).
# Never: the running statistics (BatchNormalization inputs 3 and 4), scalars of elementwise ops
# (exponents, attention scales, GELU's constants), Where fills, Clip bounds (ReLU6's 6), shapes,
# pads, Dropout ratios, anything of Pow, Div, Where, Clip, Range...
WEIGHT_SLOTS = {"MatMul": (0, 1), "Gemm": (0, 1, 2), "Einsum": None, "Conv": (1, 2),
                "ConvTranspose": (1, 2), "BatchNormalization": (1, 2),
                "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2), "Gather": (0,),
                "PRelu": (1,)}
BIAS_OPS = ("Add", "Sub", "Mul")
TRAINABLE_THROUGH = ("Identity", "Cast", "CastLike", "Transpose", "Reshape", "Unsqueeze",
                     "Squeeze", "Flatten", "Slice", "Expand", "Concat")


def weights_that_train(graph: Graph) -> list[str]:
    """The float initializers of an imported graph that training changes by default (the rule
    above), less those its metadata `irkit.frozen` lists: torch's `nn.Parameter`s, not the
    exporter's constants or BatchNorm's running statistics."""
    frozen = set(filter(None, graph.metadata.get(META_FROZEN, "").split(",")))
    return [n for n, v in graph.initializers.items()
            if differentiable(v.const.dtype) and n not in frozen and (
                _reaches_weight_slot(v) or v.const.size > 1 and _is_learned_token(v))]


def _computed(v: Value | None) -> bool:
    """Whether `v` is computed from the graph's inputs (not an initializer or a Constant)."""
    return v is not None and v.const is None and (
        v.producer is None or v.producer.op_type != "Constant")


def _reaches_weight_slot(value: Value, depth: int = 0) -> bool:
    for node, index in value.uses:
        slots = WEIGHT_SLOTS.get(node.op_type, ())
        if slots is None or index in slots:
            return True
        if node.op_type in BIAS_OPS and value.const is not None and value.const.ndim:
            other = node.inputs[1 - index] if len(node.inputs) == 2 else None
            computed = _computed(other)
            after_weights = computed and other.producer is not None \
                and other.producer.op_type in WEIGHT_SLOTS  # a Linear(n, 1)'s bias: (1,)
            if computed and (value.const.size > 1 or after_weights):
                return True
        if node.op_type in TRAINABLE_THROUGH and depth < 8 and index == 0 or (
                node.op_type == "Concat" and depth < 8):
            if any(_reaches_weight_slot(out, depth + 1) for out in node.outputs):
                return True
    return False


def _is_learned_token(value: Value, depth: int = 0) -> bool:
    """Whether `value` (through ops that only move it) is concatenated to computed values: a
    learned part of a sequence, as ViT's class token."""
    for node, index in value.uses:
        if node.op_type == "Concat" and any(_computed(o) for o in node.inputs if o is not value):
            return True
        if node.op_type in TRAINABLE_THROUGH and node.op_type != "Concat" and index == 0 \
                and depth < 8 and any(_is_learned_token(o, depth + 1) for o in node.outputs):
            return True
    return False


def counted_weights(graph: Graph) -> list[str]:
    """The initializers that train, as `irkit inspect` counts them: a training file's trained
    parameters (its metadata), else `weights_that_train`."""
    stored = graph.metadata.get(META_PARAMS)
    if stored is not None:
        return [n for n in stored.split(",") if n in graph.initializers]
    return weights_that_train(graph)


def names_of(patterns: list[str] | str | None) -> list[str] | None:
    """Initializer names or patterns as a list: a comma-separated string (the CLI's
    `--trainable a,b`) split, a list kept; None or empty: None."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",")]
    found = [p for p in patterns or [] if p]
    return found or None


def choose_trainable(graph: Graph, trainable: list[str] | None = None,
                     freeze: list[str] | None = None) -> list[str]:
    """The initializers to train: those matching a `trainable` pattern (fnmatch, e.g.
    `encoder.*`), else `weights_that_train`; less those matching a `freeze` pattern.
    DataError for a pattern that matches no initializer."""
    names = list(graph.initializers)
    for pattern in list(trainable or []) + list(freeze or []):
        if not fnmatch.filter(names, pattern):
            raise DataError(f"no initializer matches {pattern!r}; see `irkit inspect` for the "
                            "names (patterns as in fnmatch: * ? [seq])")
    if trainable:
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in trainable)]
    else:
        chosen = weights_that_train(graph)
    return [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in freeze or [])]


class OnnxSource:
    """An imported graph whose weights are the initializers `choose_trainable` picks
    (`trainable`/`freeze`: fnmatch patterns of initializer names). BatchNorm trains as
    `batchnorm` says (irkit.train.modes.BATCHNORM_MODES; by default on batch statistics,
    updating its running statistics as torch does, whatever mode the file was exported in;
    None: as the graph has it, e.g. a training file's inference graph); a
    training-mode export's Dropout drops; the inference graph is in inference mode
    (irkit.train.modes)."""

    def __init__(self, graph: Graph, trainable: list[str] | None = None,
                 freeze: list[str] | None = None,
                 batchnorm: str | None = BATCHNORM_MODES[0]) -> None:
        if batchnorm is not None:
            set_batch_norm_mode(graph, batchnorm)  # in place
        untie_running_statistics(graph)  # in place, only where the exporter merged them
        self.graph = graph
        self.metadata = dict(graph.metadata)
        self._buffers = running_statistics(graph)
        self._trainable = [n for n in choose_trainable(graph, trainable, freeze)
                           if n not in self._buffers]
        if not graph.inputs:
            raise DataError("the model has no inputs; irkit trains models of their inputs")
        shape = graph.inputs[0].shape
        self.input_shape = tuple(shape[1:]) if shape is not None else None

    @property
    def name(self) -> str:
        return self.graph.name or "model"

    def input_specs(self) -> list[tuple[str, np.dtype]]:
        """The model's inputs: [(name, dtype)] (irkit.train.inputs)."""
        return [(v.name, np.dtype(v.dtype)) for v in self.graph.inputs]

    def ensure_input(self, x: tuple) -> None:
        """DataError unless each array of `x` (one per input) fits its input's shape."""
        for v, a in zip(self.graph.inputs, x):
            want = v.shape
            if want is not None and len(want) != a.ndim:
                raise DataError(f"the model's input {v.name!r} has rank {len(want)} "
                                f"{tuple(want)}, the data {a.ndim} {a.shape}; give the data "
                                "the input's shape (an .npz keeps it)")
            for d, n in zip(want[1:] if want else (), a.shape[1:]):
                if isinstance(d, int) and d != n:
                    raise DataError(f"the model's input {v.name!r} has shape {tuple(want)}, "
                                    f"the data's samples have {a.shape[1:]}")
        out = self.graph.outputs[0].shape
        if out and isinstance(out[0], int):
            raise DataError(f"the model's output {self.graph.outputs[0].name!r} has a fixed "
                            f"batch size of {out[0]} (a Reshape inside bakes it in); export it "
                            "with a dynamic batch dim (torch: dynamic_axes or dynamic_shapes)")

    def build(self, training: bool = False) -> Graph:
        """A copy of the graph in training form (with `next/<running statistic>` outputs) or
        in inference form."""
        graph = self.graph.copy()
        graph.metadata = dict(self.metadata)
        if training:
            return training_form(graph, self._buffers)
        return inference_form(graph)

    def weights(self) -> dict[str, np.ndarray]:
        return {n: v.const for n, v in self.graph.initializers.items()
                if differentiable(v.const.dtype)}

    def trainable(self) -> list[str]:
        return list(self._trainable)

    def buffers(self) -> list[str]:
        """The running statistics of training-mode BatchNormalizations: updated each step."""
        return list(self._buffers)

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        for name, arr in values.items():
            v = self.graph.initializers[name]
            v.const = np.asarray(arr, dtype=v.const.dtype)

    def adapt(self, x: tuple, compile_graph) -> None:
        """Fit irkit's scaling layer (metadata `irkit.normalize`) unless it is fitted already
        (`compile_graph`: a runtime's compile, to run the graph up to it)."""
        prefix = self.metadata.get(META_NORMALIZE)
        if not prefix or f"{prefix}.shift" not in self.graph.initializers:
            return
        shift = self.graph.initializers[f"{prefix}.shift"]
        scale = self.graph.initializers[f"{prefix}.scale"].const
        if shift.const.any() or not (scale == 1).all():
            return  # fitted already (e.g. a model trained before): keep its scaling
        reaching = next((n.inputs[0] for n, _ in shift.uses if n.op_type == "Sub"), None)
        if reaching is None:
            return
        from irkit.data import fit_scaler
        graph = self.build()
        seen = values_reaching(graph, graph.value(reaching.name), x, compile_graph)
        new_shift, new_scale = fit_scaler(seen.reshape(len(seen), -1),
                                          self.metadata.get(META_SCALING, "standard"))
        self.set_weights({f"{prefix}.shift": new_shift, f"{prefix}.scale": new_scale})


def split_input(layers: list, input_shape: tuple | None) -> tuple[list, tuple | None]:
    """(layers, input_shape) with a leading `irkit.Input(shape)` (Keras' `keras.Input`) taken
    out as the input shape: one sample's shape; a leading None or named batch dim is dropped."""
    from irkit.function import Input
    if not layers or not isinstance(layers[0], Input):
        return layers, input_shape
    shape = tuple(layers[0].shape)
    if shape and (shape[0] is None or isinstance(shape[0], str)):
        shape = shape[1:]
    if input_shape is not None and tuple(input_shape) != shape:
        raise ShapeError(f"Sequential: irkit.Input{shape} and input_shape={tuple(input_shape)} "
                         "disagree; give one of them")
    return layers[1:], shape
