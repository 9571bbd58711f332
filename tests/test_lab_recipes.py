"""The lab's recipes (models/*.toml) trained end to end by the CLI on the bundled data, offline:
the accuracies the lab promises, the same split for the models it compares, and an
overfitting run whose validation loss turns upward while training loss keeps falling."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from irkit.cli import main
from irkit.spec import load_recipe


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("IRKIT_OFFLINE", "1")
    monkeypatch.setenv("IRKIT_DATA", str(tmp_path / "no-cache"))
    monkeypatch.chdir(tmp_path)


def train(recipe: str) -> dict:
    result = CliRunner().invoke(main, ["train", recipe, "-o", f"{recipe}.onnx", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("pair", [("iris_linear", "iris_mlp"), ("mnist_linear", "mnist_mlp")])
def test_compared_recipes_share_their_split(pair):
    a, b = (load_recipe(name) for name in pair)
    assert a.data == b.data  # same dataset and val_split
    assert a.train["seed"] == b.train["seed"]  # the seed chooses the validation rows


@pytest.mark.parametrize("recipe,least", [("iris_linear", 0.95), ("iris_mlp", 0.95),
                                          ("mnist_linear", 0.88), ("mnist_mlp", 0.93)])
def test_lab_recipe_reaches_its_accuracy(recipe, least):
    run = train(recipe)
    assert run["final"]["val_accuracy"] >= least, run["final"]
    if recipe.startswith("mnist"):
        assert (run["train_samples"], run["val_samples"]) == (4000, 1000)


def test_overfit_recipe_shows_validation_loss_rising():
    run = train("mnist_overfit")
    assert run["train_samples"] == 500
    val, loss = run["history"]["val_loss"], run["history"]["loss"]
    bottom = val.index(min(val))
    assert bottom + 5 < len(val), f"the minimum (epoch {bottom + 1}) is too late to see a rise"
    for k in range(bottom + 1, bottom + 6):  # five epochs after the minimum:
        assert val[k] > val[k - 1]           # validation loss rises every epoch
        assert loss[k] < loss[k - 1]         # while training loss keeps falling
    assert run["best_epoch"] == bottom + 1   # and the kept weights are the minimum's
