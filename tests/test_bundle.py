"""Training bundles (irkit.train.bundle): `irkit export --bundle`, `irkit import-state`,
load_model on a bundle, the contract and its JSON Schema (docs/bundle.schema.json), all on the
Python side. The bundle outside Python (onnxruntime-web under Node, the browser page in headless
Chromium) is tested in test_bundle_js.py.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import bundle_cases
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bundle_cases import ROOT, assert_same_state, write_csv
from cli_checks import cli, one_line_error

from irkit import load_model
from irkit.data import load_dataset
from irkit.errors import ModelFileError
from irkit.train.bundle import check_contract, pack_state, read_contract, read_state

STEPS, BATCH = 20, 16


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle") / "iris"
    result = cli("export", "iris_mlp", "--bundle", folder)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, Path]:
    """STEPS * BATCH shuffled Iris rows (one pass is STEPS steps) and the same as CSV, written
    so that JS's parseFloat reads back the very float32 values."""
    ds = load_dataset("iris")
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(ds.y)), STEPS * BATCH))
    x, y = ds.x[order].astype(np.float32), ds.y[order].astype(np.int64)
    path = write_csv(tmp_path_factory.mktemp("data") / "iris.csv", x, y, ds.classes)
    return x, y, path


def python_steps(folder: Path, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    return bundle_cases.python_steps(folder, x, y, STEPS, BATCH)


# ---- the bundle ----------------------------------------------------------------------------
def test_bundle_files_and_contract(bundle):
    contract = read_contract(str(bundle))
    names = [e["name"] for e in contract["state"]]
    assert [b["name"] for b in contract["batch"]] == ["input", "target"]
    assert contract["classes"] == ["setosa", "versicolor", "virginica"]
    assert contract["scaling"] == {"kind": "standard", "layer": "normalize", "in_graph": True}
    assert {"dense_1.W", "m/*", "v/*", "opt/lr", "opt/step"} <= set(names)
    assert contract["train_step"]["updates"]["next/dense_1.W"] == "dense_1.W"
    assert "opt/lr" not in contract["train_step"]["updates"].values()  # fixed: a schedule sets it
    for kind in ("train_step", "eval", "inference"):
        onnx.checker.check_model(str(bundle / contract["files"][kind]), full_check=True)
    step = onnx.load(str(bundle / "train_step.onnx"))
    inputs, outputs = {i.name for i in step.graph.input}, {o.name for o in step.graph.output}
    assert set(names) | {"input", "target"} == inputs
    assert set(contract["train_step"]["updates"]) | {"loss", "correct"} == outputs
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    external = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    entries = {e["name"]: e for e in contract["state"]}
    assert set(external) == set(contract["inference"]["weights"])
    for name, info in external.items():
        assert info == {"location": "state.bin", "offset": str(entries[name]["offset"]),
                        "length": str(entries[name]["length"])}


def test_bundle_keeps_one_copy_of_the_weights(tmp_path):
    folder = tmp_path / "digits"
    assert cli("export", "digits_mlp", "--bundle", folder).exit_code == 0
    contract = read_contract(str(folder))
    params = [e for e in contract["state"] if e["role"] == "param"]
    weight_bytes = sum(e["length"] for e in params)
    assert (folder / "state.bin").stat().st_size == contract["state_bytes"]
    for name in ("train_step.onnx", "eval.onnx", "model.onnx"):
        assert (folder / name).stat().st_size < weight_bytes / 4, name
        inline = onnx.load(str(folder / name), load_external_data=False).graph.initializer
        assert all(len(t.raw_data) <= 1024 for t in inline), name


def test_contract_checks_name_the_bad_field(bundle):
    good = read_contract(str(bundle))
    check_contract(good)
    cases = [(lambda d: d.pop("batch"), "batch"),
             (lambda d: d["state"][0].update(role="weight"), "role"),
             (lambda d: d["state"][0].update(length=3), "length"),
             (lambda d: d.update(state_bytes=1), "state_bytes"),
             (lambda d: d["train_step"]["updates"].update({"next/x": "x"}), "updates"),
             (lambda d: d.update(version=2), "version")]
    for edit, word in cases:
        doc = copy.deepcopy(good)
        edit(doc)
        with pytest.raises(ModelFileError, match=word):
            check_contract(doc)


SCHEMA = ROOT / "irkit" / "train" / "bundle.schema.json"


def test_bundle_json_follows_its_schema(bundle, tmp_path):
    """Every bundle.json irkit writes (a recipe with scaling and classes, a fine-tuned ONNX
    model) is valid under irkit/train/bundle.schema.json, and the schema and check_contract
    both refuse broken contracts."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    assert cli("build", "digits_mlp", "-o", tmp_path / "m.onnx").exit_code == 0
    other = tmp_path / "other"
    assert cli("export", tmp_path / "m.onnx", "--bundle", other, "--data", "digits",
               "--freeze", "dense_1.W").exit_code == 0
    for folder in (bundle, other):
        doc = json.loads((folder / "bundle.json").read_text())
        assert not list(validator.iter_errors(doc)), folder
    good = read_contract(str(bundle))
    broken = [lambda d: d.pop("state"), lambda d: d["batch"][0].update(dtype="complex64"),
              lambda d: d["state"][1].update(offset=8), lambda d: d.update(version=2),
              lambda d: d["files"].update(state="weights.bin"),
              lambda d: d["state"][0].update(role="weight"), lambda d: d.update(extra=1)]
    for edit in broken:
        doc = copy.deepcopy(good)
        edit(doc)
        assert list(validator.iter_errors(doc)), doc
        if "extra" not in doc:  # check_contract ignores unknown fields (newer writers)
            with pytest.raises(ModelFileError):
                check_contract(doc)


def test_bundle_steps_in_python_match_irkit_fit(bundle, rows):
    """onnxruntime-Python on the bundle alone == irkit's own training (load_model on the
    bundle, fit over the same batches in the same order)."""
    x, y, _ = rows
    by_hand = python_steps(bundle, x, y)
    model = load_model(str(bundle))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, validation_split=0.0,
              keep_best=False, verbose=0)
    weights = model.get_weights()
    for name in model._graphs.params:
        np.testing.assert_allclose(weights[name], by_hand[name], rtol=1e-5, atol=1e-6)
    assert int(by_hand["opt/step"]) == STEPS


def test_import_state_resumes_and_evaluates(bundle, rows, tmp_path):
    x, y, _ = rows
    trained = python_steps(bundle, x, y)
    contract = read_contract(str(bundle))
    state = tmp_path / "trained.bin"
    state.write_bytes(pack_state(contract["state"], trained, contract["state_bytes"]))
    assert_same_state(read_state(str(bundle), str(state)), trained)
    out = tmp_path / "imported.onnx"
    result = cli("import-state", bundle, state, "-o", out)
    assert result.exit_code == 0, result.output
    model = load_model(str(out))
    assert model._resume.state["opt/step"] == STEPS
    for name in model._resume.params:
        np.testing.assert_array_equal(model.get_weights()[name], trained[name])
    # the bundle's model.onnx with the trained state beside it predicts as the imported file
    served = tmp_path / "served"
    shutil.copytree(bundle, served)
    shutil.copy(state, served / "state.bin")
    session = ort.InferenceSession(str(served / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x),
                               rtol=1e-6, atol=1e-6)
    before = model.evaluate(x, y)["loss"]
    model.fit(x, y, batch_size=BATCH, epochs=2, validation_split=0.0, verbose=0)
    assert model.evaluate(x, y)["loss"] < before
    resumed = cli("train", out, "--data", "iris", "--epochs", "1", "-o", tmp_path / "r.onnx")
    assert resumed.exit_code == 0, resumed.output


def test_import_state_errors(bundle, tmp_path):
    size = read_contract(str(bundle))["state_bytes"]
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * (size - 4))
    one_line_error(cli("import-state", bundle, short, "-o", tmp_path / "a.onnx"),
                          "bytes", "not a state of this bundle")
    nan = tmp_path / "nan.bin"
    blob = bytearray((bundle / "state.bin").read_bytes())
    blob[0:4] = np.array([np.nan], "<f4").tobytes()
    nan.write_bytes(bytes(blob))
    one_line_error(cli("import-state", bundle, nan, "-o", tmp_path / "b.onnx"), "NaN")
    one_line_error(cli("import-state", tmp_path, short, "-o", tmp_path / "c.onnx"),
                          "not a bundle")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "bundle.json").write_text("{not json")
    one_line_error(cli("import-state", broken, "-o", tmp_path / "d.onnx"), "JSON")
    one_line_error(cli("import-state", bundle, "-o", bundle / "state.bin"), "input")
    assert not (tmp_path / "a.onnx").exists()


def test_export_bundle_errors(bundle, tmp_path):
    (tmp_path / "other.txt").write_text("keep me")
    one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path), "other files")
    assert (tmp_path / "other.txt").read_text() == "keep me"
    one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path / "x", "-o",
                              tmp_path / "m.onnx"), "--bundle")
    one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path / "y", "--trainable",
                              "dense_1.W"), "--trainable")


def test_bundle_of_an_onnx_model_trains_only_the_chosen_weights(tmp_path, rows):
    x, y, _ = rows
    assert cli("build", "iris_mlp", "-o", tmp_path / "m.onnx").exit_code == 0
    folder = tmp_path / "finetune"
    result = cli("export", tmp_path / "m.onnx", "--bundle", folder, "--data", "iris",
                 "--trainable", "dense_2.W,dense_2.b")
    assert result.exit_code == 0, result.output
    contract = read_contract(str(folder))
    assert [e["name"] for e in contract["state"] if e["role"] == "param"] == [
        "dense_2.W", "dense_2.b"]
    before, after = read_state(str(folder)), python_steps(folder, x, y)
    assert not np.allclose(before["dense_2.W"], after["dense_2.W"])
