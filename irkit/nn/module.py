"""`Module`, the base of every layer, and `Sequential`.

A module turns an input Value into an output Value by appending IR ops. Its weights live in
the module as numpy arrays (created on first build, from a seeded generator) and enter each
graph it builds as initializers named `<layer>.<weight>`, so the training, evaluation and
inference graphs of one model share one set of weights. Modules know nothing of training:
`irkit.Model` (irkit.train) combines a module with a trainer, as Keras' Model does.

A build may run under a weight budget (`weight_budget`, which `irkit train RECIPE` sets to
IRKIT_MAX_TENSOR_BYTES): the bytes of the weights drawn in it together, checked before each is
drawn, so a 300-byte recipe cannot make gigabytes of weights in layers each under the caps.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np

from irkit.errors import ShapeError, SpecError
from irkit.ir import Value
from irkit.nn import init as initializers

_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("weight_budget",
                                                                         default=None)


@contextlib.contextmanager
def weight_budget(max_bytes: int | None):
    """Within it, the weights drawn (float32) may hold `max_bytes` together (None: no
    budget); a SpecError names the weight that would pass it, before it is drawn."""
    token = _BUDGET.set(None if max_bytes is None else [max_bytes, 0])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _spend(shape: tuple[int, ...], what: str) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    nbytes = 4 * int(np.prod(shape, dtype=object))
    if budget[1] + nbytes > budget[0]:
        raise SpecError(f"{what} of shape {tuple(shape)} would bring the weights to "
                        f"{budget[1] + nbytes} bytes of float32, over the limit of {budget[0]} "
                        "for a recipe's weights together; lower the layers' units, filters or "
                        "kernel sizes (or raise IRKIT_MAX_TENSOR_BYTES)")
    budget[1] += nbytes


class Module:
    """Base of layers. Subclasses implement `forward(x)` with irkit ops and `add_weight`.

    A module only builds IR; to train one, wrap it in `irkit.Model(module)`."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.training = False
        self.weights: dict[str, np.ndarray] = {}
        self.frozen: set[str] = set()
        self.buffers: set[str] = set()
        self.buffer_updates: dict[str, Value] = {}  # filled while a training graph is built
        self._rng: np.random.Generator | None = None
        self._prefix = ""
        self._graph = None  # the graph being built, while forward() runs

    # ---- to implement -----------------------------------------------------------------------
    def forward(self, x: Value) -> Value:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    # ---- weights --------------------------------------------------------------------------
    def add_weight(self, name: str, shape: tuple[int, ...], init: str = "glorot_uniform",
                   trainable: bool = True, graph_of: Value | None = None) -> Value:
        """This module's weight `name` as an initializer of the graph being built (call it in
        forward(); `graph_of` names a Value of that graph when called from elsewhere)."""
        graph = graph_of.graph if graph_of is not None else self._graph
        if graph is None:
            raise ShapeError(f"{self._label()}: add_weight is for use inside forward()")
        if name not in self.weights:
            rng = self._rng if self._rng is not None else np.random.default_rng(0)
            shape, what = tuple(int(d) for d in shape), f"{self._label()}: weight {name!r}"
            initializers.check_size(shape, what)
            _spend(shape, what)
            self.weights[name] = initializers.make(init, shape, rng, what)
        elif self.weights[name].shape != tuple(shape):
            raise ShapeError(f"{self._label()}: weight {name!r} has shape "
                             f"{self.weights[name].shape}, the input now needs {tuple(shape)}")
        if not trainable:
            self.frozen.add(name)
        return graph.add_initializer(self._prefix + name, self.weights[name])

    def add_buffer(self, name: str, shape: tuple[int, ...], init: str = "zeros") -> Value:
        """A state tensor the optimizer does not touch but training updates (running stats):
        read it like a weight; give its new value with `update_buffer` in training mode."""
        self.buffers.add(name)
        return self.add_weight(name, shape, init, trainable=False)

    def update_buffer(self, name: str, value: Value) -> None:
        """In a training build: `value` is this buffer's value for the next step."""
        if name not in self.buffers:
            raise ShapeError(f"{self._label()}: {name!r} is not a buffer; use add_buffer")
        self.buffer_updates[self._prefix + name] = value

    def modules(self) -> Iterator[Module]:
        """This module and every module inside it."""
        yield self

    def named_weights(self) -> dict[str, np.ndarray]:
        """Weights by their graph names (`<layer>.<weight>`)."""
        return {m._prefix + k: v for m in self.modules() for k, v in m.weights.items()}

    def trainable_names(self) -> list[str]:
        return [m._prefix + k for m in self.modules() for k in m.weights if k not in m.frozen]

    def load_weights(self, values: dict[str, np.ndarray]) -> None:
        """Set weights from graph names (e.g. after training)."""
        for m in self.modules():
            for k in m.weights:
                if m._prefix + k in values:
                    m.weights[k] = np.asarray(values[m._prefix + k], dtype=m.weights[k].dtype)

    # ---- building -------------------------------------------------------------------------
    def __call__(self, x: Value) -> Value:
        if not isinstance(x, Value):
            raise ShapeError(f"{self._label()} was called with {type(x).__name__}; call it on a "
                             "graph Value (inside a model build or irkit.function)")
        self._graph = x.graph
        try:
            return self.forward(x)
        except TypeError as e:
            raise ShapeError(f"{self._label()}: {e}") from None
        finally:
            self._graph = None

    def _label(self) -> str:
        return f"layer {self.name or type(self).__name__}"

    def set_build_state(self, training: bool, rng: np.random.Generator, prefix: str) -> None:
        """Called by the container before a build: mode, weight generator, weight-name prefix."""
        self.training, self._rng, self._prefix = training, rng, prefix
        self.buffer_updates = {}


class Sequential(Module):
    """Layers applied in order; names them `<kind>_<index>` unless they have names."""

    def __init__(self, layers: list[Module], name: str | None = None) -> None:
        super().__init__(name)
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Module):
                raise ShapeError(f"Sequential item {i} is a {type(layer).__name__}, not a layer")
            if layer.name is None:
                layer.name = f"{type(layer).__name__.lower()}_{i}"
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ShapeError(f"layer names must be unique, got {names}")

    def modules(self) -> Iterator[Module]:
        yield self
        for layer in self.layers:
            yield from layer.modules()

    def set_build_state(self, training: bool, rng: np.random.Generator, prefix: str) -> None:
        super().set_build_state(training, rng, prefix)
        for layer in self.layers:
            layer.set_build_state(training, rng, f"{prefix}{layer.name}.")

    def forward(self, x: Value) -> Value:
        for layer in self.layers:
            x = layer(x)
        return x

