"""irkit.Model on pure layers: Normalize adapts on the values that reach it, one default per
setting for Python and the command line."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

import irkit
from irkit.cli import main
from irkit.data import fit_scaler, train_val_split
from irkit.nn import Dense, Normalize
from irkit.signature import META_SETTINGS
from irkit.train.settings import DEFAULTS


def test_normalize_adapts_on_the_dense_output_that_reaches_it():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 5)) * 3 + 7).astype(np.float32)
    y = rng.integers(0, 3, 200)
    first, norm = Dense(4, name="first"), Normalize("standard", name="norm")
    model = irkit.Sequential([first, norm, Dense(3)])
    model.compile(optimizer="sgd", lr=1e-9, seed=4)  # lr ~0: the weights stay the initial ones
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.25, seed=4)
    w = model.get_weights()
    train_idx, _ = train_val_split(len(x), 0.25, 4, y)
    hidden = x[train_idx] @ w["first.W"] + w["first.b"]  # what reached Normalize
    shift, scale = fit_scaler(hidden, "standard")
    np.testing.assert_allclose(w["norm.shift"], shift, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w["norm.scale"], scale, rtol=1e-4)
    raw_shift, _ = fit_scaler(x[train_idx], "standard")  # not the raw features' statistics
    assert raw_shift.shape != shift.shape or not np.allclose(raw_shift, shift)


def test_python_and_the_cli_share_one_default_learning_rate(tmp_path):
    model = irkit.Sequential([Dense(3)])
    model.compile()
    assert model.settings.lr == model.learning_rate == DEFAULTS.lr
    (tmp_path / "r.toml").write_text(
        '[model]\nlayers = [{ type = "dense", units = 3 }]\n[data]\ndataset = "iris"\n'
        '[train]\nepochs = 1\n')  # no lr: the default
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "r.toml"), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta[META_SETTINGS])["lr"] == DEFAULTS.lr


def test_predict_after_another_fit_uses_the_new_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = rng.integers(0, 3, 90)
    model = irkit.Sequential([Dense(3)])
    model.compile(lr=0.05)
    model.fit(x, y, epochs=1, verbose=0)
    first = model.predict(x[:5])  # caches a session
    model.fit(x, y, epochs=3, verbose=0)
    w = model.get_weights()
    np.testing.assert_allclose(model.predict(x[:5]), x[:5] @ w["dense_0.W"] + w["dense_0.b"],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.predict(x[:5]), first)
