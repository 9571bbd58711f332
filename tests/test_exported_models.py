"""Every exported inference model: valid ONNX, and the same outputs on every executor.

The bundled recipes are trained for a few epochs through the Python API and through
`irkit.cli.jobs.run_training` (what `irkit train` runs). Each exported file must pass the
full ONNX checker and give the same outputs in onnxruntime, onnx.reference, irkit's numpy
reference runtime and the model's own `predict`. The models take raw features: the fitted
scaling is the first op of the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from irkit.runtimes.reference import ReferenceRuntime
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import irkit
from irkit.cli.jobs import run_training
from irkit.data import fit_scaler, load_dataset, train_val_split
from irkit.onnx_io import load
from irkit.spec import load_recipe

RECIPES = ["iris_linear", "iris_mlp", "digits_mlp"]
EPOCHS = 3
TOL = {"rtol": 1e-5, "atol": 1e-5}


class Trained:
    """One recipe trained both ways, with both exported files."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.recipe = r = load_recipe(name)
        self.data = load_dataset(r.data["dataset"])
        self.module = irkit.Model(r.build())
        self.module.compile(**r.train)  # loss, optimizer, lr, momentum, batch_size, seed, ...
        self.history = self.module.fit(self.data.x, self.data.y, epochs=EPOCHS,
                                       validation_split=r.data["val_split"], verbose=0)
        self.api_path = directory / f"{name}_api.onnx"
        self.module.export(str(self.api_path))
        self.session_path = directory / f"{name}_session.onnx"
        self.report = run_training(name, str(self.session_path), progress=False, epochs=EPOCHS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Trained]:
    directory = tmp_path_factory.mktemp("exported")
    return {name: Trained(name, directory) for name in RECIPES}


def run_all_executors(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model's output on x from onnxruntime, onnx.reference and irkit's reference runtime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    graph = load(path)
    return {
        "onnxruntime": session.run(None, {input_name: x})[0],
        "onnx.reference": ReferenceEvaluator(str(path)).run(None, {input_name: x})[0],
        "irkit.reference": ReferenceRuntime().compile(graph)({input_name: x})[0],
    }


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("which", ["api_path", "session_path"])
def test_checker_and_executors_agree(trained, name, which):
    t = trained[name]
    path = getattr(t, which)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    ops = [n.op_type for n in model.graph.node]
    assert ops[:2] == ["Sub", "Mul"]  # the scaling comes first
    assert "Dropout" not in ops
    x = t.data.x
    outputs = run_all_executors(path, x)
    want = outputs["onnxruntime"]
    assert want.shape == (len(x), t.data.num_classes) and want.dtype == np.float32
    for executor, got in outputs.items():
        assert got.dtype == np.float32, executor
        np.testing.assert_allclose(got, want, **TOL, err_msg=f"{executor} vs onnxruntime")
    if which == "api_path":
        np.testing.assert_allclose(t.module.predict(x), want, **TOL,
                                   err_msg="Module.predict vs onnxruntime")


@pytest.mark.parametrize("name", RECIPES)
def test_api_and_session_train_the_same_model(trained, name):
    """Same recipe, same seed: the Python API and `irkit train` give identical models."""
    t = trained[name]
    assert t.report["history"] == t.history.history
    api, cli = initializers(t.api_path), initializers(t.session_path)
    assert set(api) == set(cli)
    for key in api:
        np.testing.assert_array_equal(api[key], cli[key], err_msg=key)


@pytest.mark.parametrize("name", RECIPES)
def test_model_takes_raw_features(trained, name):
    t = trained[name]
    x, y = t.data.x, t.data.y
    w = initializers(t.api_path)
    # scaling fitted on the training part of the split only
    split, seed = t.recipe.data["val_split"], t.recipe.train["seed"]
    train_idx, _ = train_val_split(len(x), split, seed, y)
    shift, scale = fit_scaler(x[train_idx], t.recipe.scaling)
    np.testing.assert_allclose(w["normalize.shift"], shift, rtol=1e-6)
    np.testing.assert_allclose(w["normalize.scale"], scale, rtol=1e-6)
    if t.recipe.scaling == "standard":  # (digits' pixel min/max are the same on any split)
        assert not np.array_equal(fit_scaler(x, "standard")[0], shift)
    # the model on raw data == its layers on data scaled by hand (float64 numpy)
    h = (x.astype(np.float64) - shift) * scale
    dense = sorted({k.split(".")[0] for k in w if k.startswith("dense_")},
                   key=lambda n: int(n.split("_")[1]))
    for i, layer in enumerate(dense):
        h = h @ w[f"{layer}.W"] + w[f"{layer}.b"]
        if i < len(dense) - 1:
            h = np.maximum(h, 0.0)  # the hidden layers of the recipes are ReLU
    raw = t.module.predict(x)
    np.testing.assert_allclose(raw, h, rtol=1e-4, atol=1e-4)
    # and so the scaled-by-hand input is the wrong input for the model
    scaled = ((x - shift) * scale).astype(np.float32)
    assert not np.allclose(t.module.predict(scaled), raw, atol=1e-3)


@pytest.mark.parametrize("name", RECIPES)
def test_a_few_epochs_learn_something(trained, name):
    t = trained[name]
    assert t.history["loss"][-1] < t.history["loss"][0]
    accuracy = (t.module.predict(t.data.x).argmax(axis=1) == t.data.y).mean()
    assert accuracy > 0.6
