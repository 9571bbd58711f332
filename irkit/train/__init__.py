"""Training: losses, optimizers (as IR), the step graphs and the onnxruntime training loop."""

from __future__ import annotations

from irkit.train.callbacks import Callback, EarlyStopping, LambdaCallback, LearningRateScheduler
from irkit.train.losses import LOSSES, Loss, get_loss
from irkit.train.model import ModuleModel, OnnxModel
from irkit.train.optimizers import SGD, Adam, Optimizer, get_optimizer
from irkit.train.step import StepGraphs, build_step_graphs
from irkit.train.trainer import History, Trainer

__all__ = ["LOSSES", "SGD", "Adam", "Callback", "EarlyStopping", "History", "LambdaCallback",
           "LearningRateScheduler", "Loss", "ModuleModel", "OnnxModel", "Optimizer",
           "StepGraphs", "Trainer", "build_step_graphs", "get_loss", "get_optimizer"]
