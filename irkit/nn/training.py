"""Keras-style training methods of every Module: compile, fit, evaluate, predict, export.

The heavy lifting is in irkit.train (graphs, trainer) and irkit.runtimes; this is the front end.
"""

from __future__ import annotations

import numpy as np

from irkit.errors import ShapeError


class TrainingMixin:
    """Keras-style training front end shared by every Module: compile, fit, evaluate, predict,
    export. The heavy lifting is in irkit.train (graphs, trainer) and irkit.runtimes."""

    # (methods use Module attributes: _label, weights; the mixin only exists to keep files short)
    def compile(self, loss: str = "sparse_categorical_crossentropy",
                optimizer: str | object = "adam", device: str = "cpu", seed: int = 0,
                **optimizer_settings) -> TrainingMixin:
        """Choose loss and optimizer (by name with settings like lr=0.01, or an instance)."""
        from irkit.train import ModuleModel, Trainer, get_loss, get_optimizer
        self._model = getattr(self, "_model", None) or ModuleModel(self, seed=seed)
        self._trainer = Trainer(self._model, get_loss(loss),
                                get_optimizer(optimizer, **optimizer_settings), device, seed)
        return self

    def fit(self, x, y, epochs: int = 10, batch_size: int = 32,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            seed: int = 0, callbacks=None, keep_best: bool = True):
        """Train; hold out `validation_split` of (x, y) (stratified, seeded) unless
        `validation_data` is given. Scaling layers are fitted on the training part only."""
        from irkit.data import train_val_split
        if getattr(self, "_trainer", None) is None:
            self.compile()
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y)
        if len(x) != len(y):
            raise ShapeError(f"x has {len(x)} samples, y has {len(y)}; they must match")
        if validation_data is None and validation_split:
            tr, va = train_val_split(len(x), validation_split, seed, y)
            x, y, validation_data = x[tr], y[tr], (x[va], y[va])
        self._model.ensure_input(x)
        if self._trainer.graphs is None:
            self._model.fit_scalers(x)
        history = self._trainer.fit(x, y, epochs, batch_size, validation_data, shuffle,
                                    callbacks, keep_best)
        return history

    def evaluate(self, x, y, batch_size: int = 256) -> dict[str, float]:
        """Loss (and accuracy) on (x, y) with the current weights."""
        if getattr(self, "_trainer", None) is None:
            raise ShapeError(f"{self._label()}: call compile() (or fit) before evaluate()")
        self._model.ensure_input(np.asarray(x))
        return self._trainer.evaluate(x, y, batch_size)

    def to_graph(self, input_shape: tuple[int, ...] | None = None):
        """The inference graph (input `input`, output `output`, weights as initializers)."""
        from irkit.train import ModuleModel
        self._model = getattr(self, "_model", None) or ModuleModel(self)
        if input_shape is not None:
            self._model.input_shape = tuple(input_shape)
        if self._model.input_shape is None:
            raise ShapeError(f"{self._label()}: the input shape is unknown; fit first or pass "
                             "input_shape")
        return self._model.build(training=False)

    def predict(self, x, device: str = "cpu") -> np.ndarray:
        """Model outputs for raw inputs x, run on onnxruntime."""
        from irkit.runtimes.onnxruntime import OrtGraph
        x = np.asarray(x, dtype=np.float32)
        graph = self.to_graph(x.shape[1:] if getattr(self, "_model", None) is None
                              or self._model.input_shape is None else None)
        return OrtGraph(graph, device)({graph.inputs[0].name: x})[0]

    def export(self, path: str, opset: int = 17):
        """Write the inference model (scaling included) as ONNX; returns the ModelProto."""
        from irkit.onnx_io import save
        return save(self.to_graph(), path, opset)

