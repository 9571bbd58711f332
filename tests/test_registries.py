"""One registry per extension point (optimizers, losses, recipe layers, runtimes): adding one
is a class and a line, and every reader (settings, compile, the CLI, resume, listings) sees it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from irkit import nn, ops
from irkit.errors import SpecError
from irkit.train import OPTIMIZERS, Adam, Model, Optimizer, Sequential, register_optimizer
from irkit.train.losses import LOSSES, Loss, register_loss
from irkit.train.settings import resolve

# ---- an optimizer added at run time: one class, one registry line ---------------------------
# written once as source: this process execs it, and the CLI's subprocesses run it too
SIGN_SGD_SOURCE = '''
from dataclasses import dataclass
from typing import ClassVar
from irkit import ops
from irkit.train import Optimizer, register_optimizer

@dataclass
class SignSGD(Optimizer):
    """p' = p - lr * scale * sign(g)."""
    scale: float = 1.0
    name: ClassVar[str] = "signsgd"

    def update(self, p, g, state, shared):
        return ops.Sub(p, ops.Mul(ops.Mul(ops.Sign(g), self.scale), shared["lr"])), {}
'''
_NAMESPACE: dict = {}
exec(compile(SIGN_SGD_SOURCE, "SignSGD", "exec", dont_inherit=True), _NAMESPACE)
SignSGD = _NAMESPACE["SignSGD"]
REGISTERED = SIGN_SGD_SOURCE + "register_optimizer(SignSGD)\n"


@pytest.fixture
def sign_sgd():
    register_optimizer(SignSGD)
    yield SignSGD
    OPTIMIZERS.pop("signsgd")


def _data(n: int = 40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x @ np.array([1.0, -2.0, 0.5], np.float32) > 0).astype(np.int64)


def test_a_new_optimizer_trains_from_python(sign_sgd) -> None:
    x, y = _data()
    model = Sequential([nn.Dense(2)])
    model.compile(optimizer="SignSGD", lr=0.05, scale=0.5)  # any case; its own hyperparameter
    model.prepare(x)
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=len(x), validation_split=0.0, verbose=0,
              shuffle=False)
    after = model.get_weights()
    for name, w in before.items():  # each weight moved by lr * scale in the sign of its grad
        step = np.abs(after[name] - w)
        np.testing.assert_allclose(step[step > 0], 0.05 * 0.5, rtol=1e-5)
    assert model.settings.optimizer_config == {"scale": 0.5}


def test_a_new_optimizer_trains_from_the_cli(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    code = REGISTERED + (
        "from irkit.cli import main\n"
        f"main(['train', 'iris_mlp', '--optimizer', 'signsgd', '--lr', '0.01', '--epochs', "
        f"'3', '--json', '-o', {str(out)!r}])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["history"]["loss"]) == 3 and out.stat().st_size > 0
    listed = subprocess.run([sys.executable, "-c", REGISTERED + (
        "from irkit.cli import main\nmain(['list', 'optimizers', '--json'])\n")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    names = [o["name"] for o in json.loads(listed.stdout)["optimizers"]]
    assert "signsgd" in names and {"sgd", "adam", "rmsprop"} <= set(names)


def test_a_recipe_sets_a_new_optimizers_hyperparameter(sign_sgd) -> None:
    s = resolve({"optimizer": "signsgd", "scale": 0.25}, names=("recipe",))
    assert s.optimizer == "signsgd" and s.optimizer_config["scale"] == 0.25
    with pytest.raises(SpecError, match="recipe: optimizer signsgd has no hyperparameter "
                       "'momentum'"):
        resolve({"optimizer": "signsgd", "momentum": 0.9}, names=("recipe",))
    with pytest.raises(SpecError, match="scale must be a number >= 0"):
        resolve({"optimizer": "signsgd", "scale": -1.0}, names=("recipe",))


def test_a_file_from_before_the_registry_still_resumes() -> None:
    """Older files record momentum/nesterov/weight_decay for every optimizer."""
    from irkit.train.settings import from_json
    old = '{"optimizer": "adam", "momentum": 0.0, "nesterov": false, "weight_decay": 0.01}'
    s = resolve(from_json(old), names=("file",))
    assert s.optimizer == "adam" and s.optimizer_config == {"weight_decay": 0.01}


def test_hyperparameters_of_another_optimizer_below_are_dropped() -> None:
    """A recipe's momentum for sgd does not break `--optimizer adam` on top of it."""
    s = resolve({"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adam"},
                names=("recipe", "arguments"))
    assert s.optimizer == "adam" and "momentum" not in s.optimizer_config


# ---- Keras habits ----------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, lr, config", [
    (Adam(0.01), 0.01, {}),
    (Adam(learning_rate=0.02, beta_1=0.8), 0.02, {"beta_1": 0.8}),
])
def test_an_optimizer_instance_sets_the_learning_rate(optimizer, lr, config) -> None:
    model = Sequential([nn.Dense(2)]).compile(optimizer=optimizer)
    assert model.settings.lr == lr and model.settings.optimizer == "adam"
    for key, value in config.items():
        assert model.settings.optimizer_config[key] == value


def test_sgd_takes_keras_positional_arguments() -> None:
    from irkit.train import SGD
    opt = SGD(0.1, 0.9)
    assert opt.learning_rate == 0.1 and opt.momentum == 0.9 and opt.slots == ("velocity",)
    model = Sequential([nn.Dense(2)]).compile(optimizer=opt)
    assert model.settings.lr == 0.1 and model.settings.optimizer_config["momentum"] == 0.9
    with pytest.raises(SpecError, match="learning_rate must be a finite number > 0"):
        SGD(-1.0)


def test_an_unregistered_optimizer_class_is_named() -> None:
    @dataclass
    class Unlisted(Optimizer):
        name: ClassVar[str] = "unlisted"
    with pytest.raises(SpecError, match="optimizer class Unlisted is not registered"):
        Sequential([nn.Dense(2)]).compile(optimizer=Unlisted())


# ---- a loss added at run time --------------------------------------------------------------
class MeanAbsoluteError(Loss):
    name = "mae"
    aliases = ("mean_absolute_error",)

    def build(self, out, target):
        return ops.ReduceMean(ops.Abs(ops.Sub(out, target)), keepdims=0)


def test_a_new_loss_trains_and_checks_its_targets() -> None:
    register_loss(MeanAbsoluteError())
    try:
        rng = np.random.default_rng(1)
        x = rng.normal(size=(64, 2)).astype(np.float32)
        y = x @ np.array([[1.5], [-0.5]], np.float32)
        model = Sequential([nn.Dense(1)]).compile(loss="MEAN_ABSOLUTE_ERROR", lr=0.05)
        history = model.fit(x, y, epochs=30, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0] / 2
        with pytest.raises(Exception, match="mae needs targets shaped like the output"):
            model.evaluate(x, np.zeros((64, 3), np.float32))
    finally:
        LOSSES.pop("mae")


# ---- runtimes ----------------------------------------------------------------------------------
REFERENCE_ONLY = """
import sys
sys.modules["onnxruntime"] = None  # importing it now fails: the run must never need it
import numpy as np
from irkit import nn
from irkit.train import Sequential
rng = np.random.default_rng(0)
x = rng.normal(size=(60, 4)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
model = Sequential([nn.Normalize("standard"), nn.Dense(8, activation="relu"), nn.Dense(2)])
model.compile(lr=0.05, runtime="reference")
history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
scores = model.evaluate(x, y)
pred = model.predict(x[:5])
assert pred.shape == (5, 2), pred.shape
assert history.history["loss"][-1] < history.history["loss"][0]
print(scores["accuracy"], "onnxruntime" in sys.modules and sys.modules["onnxruntime"] is not None)
"""


def test_the_reference_runtime_runs_without_onnxruntime(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", REFERENCE_ONLY], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    accuracy, ort_loaded = done.stdout.split()
    assert float(accuracy) > 0.8 and ort_loaded == "False"


def test_an_unknown_runtime_is_named_at_compile() -> None:
    with pytest.raises(SpecError, match="unknown runtime 'tpu'; use one of onnxruntime, "
                       "reference, torch, mpi"):
        Model(nn.Dense(2)).compile(runtime="tpu")
