"""Training: irkit.Model (compile/fit/evaluate/predict/save), losses, optimizers (as IR), the
step graphs, the training loop and Keras-named callbacks.

Names load from their modules on first use, so importing one module of this package (the
settings read the optimizer registry) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "irkit.train.callbacks": ["Callback", "EarlyStopping", "LambdaCallback",
                              "LearningRateScheduler", "ModelCheckpoint", "ProgressLogger",
                              "ReduceLROnPlateau", "TrainingCheckpoint"],
    "irkit.train.losses": ["LOSSES", "Loss", "get_loss", "register_loss"],
    "irkit.train.metrics": ["METRICS", "Metric", "TopKAccuracy", "register_metric"],
    "irkit.train.model": ["Model", "Sequential"],
    "irkit.train.loading": ["load_model"],
    "irkit.train.optimizers": ["OPTIMIZERS", "SGD", "Adam", "Optimizer", "RMSprop",
                               "get_optimizer", "optimizer_from", "register_optimizer"],
    "irkit.train.report": ["OverfittingReport", "overfitting_report"],
    "irkit.train.sources": ["ModuleSource", "OnnxSource"],
    "irkit.train.step": ["StepGraphs", "build_step_graphs"],
    "irkit.train.trainer": ["History", "Trainer"],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'irkit.train' has no attribute {name!r}")


__all__ = sorted(_WHERE)
