"""Training: irkit.Model (compile/fit/evaluate/predict/save), losses, optimizers (as IR), the
step graphs, the training loop and Keras-named callbacks."""

from __future__ import annotations

from irkit.train.callbacks import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressLogger,
    ReduceLROnPlateau,
    TrainingCheckpoint,
)
from irkit.train.losses import LOSSES, Loss, get_loss
from irkit.train.model import Model, Sequential, load_model
from irkit.train.optimizers import SGD, Adam, Optimizer, get_optimizer, optimizer_from
from irkit.train.report import OverfittingReport, overfitting_report
from irkit.train.sources import ModuleSource, OnnxSource
from irkit.train.step import StepGraphs, build_step_graphs
from irkit.train.trainer import History, Trainer

__all__ = ["LOSSES", "SGD", "Adam", "Callback", "EarlyStopping", "History", "LambdaCallback",
           "LearningRateScheduler", "Loss", "Model", "ModelCheckpoint", "ModuleSource",
           "OnnxSource", "Optimizer", "OverfittingReport", "ProgressLogger", "ReduceLROnPlateau",
           "Sequential", "StepGraphs", "Trainer", "TrainingCheckpoint", "build_step_graphs",
           "get_loss", "get_optimizer", "load_model", "optimizer_from", "overfitting_report"]
