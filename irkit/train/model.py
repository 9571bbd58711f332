"""What the trainer trains: something that builds a forward graph and owns weights.

`ModuleModel` wraps a layer (`Sequential`, a custom `Module`); `OnnxModel` wraps an imported
graph (any ONNX file whose ops irkit knows). Both build a graph whose first output is the
prediction and whose weights are initializers.
"""

from __future__ import annotations

import numpy as np

from irkit import ops
from irkit.errors import DataError
from irkit.ir import Graph
from irkit.nn.layers import Normalize
from irkit.nn.module import Module

INPUT_NAME, OUTPUT_NAME = "input", "output"
BUFFER_PREFIX = "next/"  # a training graph's extra outputs: next values of buffers


class ModuleModel:
    """A Module with an input shape (set from data on first use)."""

    def __init__(self, module: Module, input_shape: tuple[int, ...] | None = None,
                 seed: int = 0) -> None:
        self.module = module
        self.input_shape = input_shape
        self.seed = seed
        self.metadata: dict[str, str] = {}
        self._built = False

    def ensure_input(self, x: np.ndarray) -> None:
        shape = tuple(x.shape[1:])
        if self.input_shape is None:
            self.input_shape = shape
        elif self.input_shape != shape:
            raise DataError(f"the model takes samples of shape {self.input_shape}, the data has "
                            f"{shape}")

    def build(self, training: bool = False) -> Graph:
        graph = Graph(self.module.name or "model")
        graph.metadata = dict(self.metadata)
        x = graph.add_input(INPUT_NAME, np.float32, ("N", *self.input_shape))
        self.module.set_build_state(training, np.random.default_rng(self.seed), "")
        y = ops.own_output(self.module(x), [])
        graph.rename_value(y, OUTPUT_NAME)
        graph.outputs = [y]
        for m in self.module.modules():  # running statistics: extra outputs `next/<buffer>`
            for name, value in m.buffer_updates.items():
                value = ops.own_output(value, graph.outputs)
                graph.rename_value(value, f"{BUFFER_PREFIX}{name}")
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

    def fit_scalers(self, x: np.ndarray) -> None:
        for m in self.module.modules():
            if isinstance(m, Normalize):
                m.fit(x)


class OnnxModel:
    """An imported graph: float initializers are weights; metadata `irkit.frozen` lists fixed
    ones."""

    def __init__(self, graph: Graph, trainable: list[str] | None = None,
                 freeze: list[str] | None = None) -> None:
        self.graph = graph
        self.metadata = dict(graph.metadata)
        floats = [n for n, v in graph.initializers.items() if v.const.dtype.kind == "f"]
        frozen = set(filter(None, self.metadata.get("irkit.frozen", "").split(",")))
        for name in list(trainable or []) + list(freeze or []):
            if name not in graph.initializers:
                raise DataError(f"no initializer named {name!r}; see `irkit inspect` for names")
        chosen = trainable if trainable else [n for n in floats if n not in frozen]
        self._trainable = [n for n in chosen if n not in set(freeze or [])]
        self.input_shape = None
        if len(graph.inputs) != 1:
            raise DataError(f"the model has {len(graph.inputs)} inputs; irkit trains models with "
                            "one input")

    def ensure_input(self, x: np.ndarray) -> None:
        want = self.graph.inputs[0].shape
        if want is not None and len(want) == x.ndim:
            for d, n in zip(want[1:], x.shape[1:]):
                if isinstance(d, int) and d != n:
                    raise DataError(f"the model's input {self.graph.inputs[0].name!r} has shape "
                                    f"{want}, the data's samples have {x.shape[1:]}")
        elif want is not None:
            raise DataError(f"the model's input has rank {len(want)}, the data {x.ndim}")
        out = self.graph.outputs[0].shape
        if out and isinstance(out[0], int):
            raise DataError(f"the model's output {self.graph.outputs[0].name!r} has a fixed "
                            f"batch size of {out[0]} (a Reshape inside bakes it in); export it "
                            "with a dynamic batch dim (torch: dynamic_axes or dynamic_shapes)")

    def build(self, training: bool = False) -> Graph:
        graph = self.graph.copy()
        graph.metadata = dict(self.metadata)
        return graph

    def weights(self) -> dict[str, np.ndarray]:
        return {n: v.const for n, v in self.graph.initializers.items()
                if v.const.dtype.kind == "f"}

    def trainable(self) -> list[str]:
        return list(self._trainable)

    def buffers(self) -> list[str]:
        return []  # imported graphs are trained with their own ops as written

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        for name, arr in values.items():
            v = self.graph.initializers[name]
            v.const = np.asarray(arr, dtype=v.const.dtype)

    def fit_scalers(self, x: np.ndarray) -> None:
        prefix = self.metadata.get("irkit.normalize")
        if not prefix or f"{prefix}.shift" not in self.graph.initializers:
            return
        shift = self.graph.initializers[f"{prefix}.shift"].const
        scale = self.graph.initializers[f"{prefix}.scale"].const
        if shift.any() or not (scale == 1).all():
            return  # fitted already (e.g. a model trained before): keep its scaling
        from irkit.data import fit_scaler
        shift, scale = fit_scaler(x.reshape(len(x), -1), self.metadata.get("irkit.scaling",
                                                                            "standard"))
        self.set_weights({f"{prefix}.shift": shift, f"{prefix}.scale": scale})
