"""Training bundles (irkit.train.bundle): `irkit export --bundle`, `irkit import-state`, and the
bundle trained by stock onnxruntime-web outside Python (js/: under Node, in headless Chromium).

The Node and Chromium tests need node, `npm ci` in js/ and Debian's chromium (.ci/run installs
them); without them they skip and name what is missing.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from irkit import load_model
from irkit.cli import main
from irkit.data import load_dataset
from irkit.errors import ModelFileError
from irkit.train.bundle import check_contract, pack_state, read_contract, read_state

JS = Path(__file__).resolve().parents[1] / "js"
STEPS, BATCH = 20, 16
CHROMIUM = "/usr/bin/chromium"


# ---- helpers -------------------------------------------------------------------------------
def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error:"), lines
    for word in words:
        assert word in lines[0], lines[0]


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
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    lines = ["a,b,c,d,label"] + [",".join([*(repr(float(v)) for v in r), ds.classes[t]])
                                 for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return x, y, path


def python_steps(folder: Path, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The bundle trained by onnxruntime-Python as the JS harness trains it: the contract's
    names only, each next/<name> fed back as <name>, BATCH rows a step in order."""
    contract = read_contract(str(folder))
    state = read_state(str(folder))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / contract["files"]["train_step"]), options)
    names = [o.name for o in session.get_outputs()]
    features, target = (next(b["name"] for b in contract["batch"] if b["role"] == r)
                        for r in ("features", "target"))
    for start in range(0, STEPS * BATCH, BATCH):
        feeds = {features: x[start:start + BATCH], target: y[start:start + BATCH], **state}
        out = dict(zip(names, session.run(None, feeds)))
        state.update({name: out[nxt] for nxt, name in contract["train_step"]["updates"].items()})
    return state


def assert_same_state(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


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
    assert_one_line_error(cli("import-state", bundle, short, "-o", tmp_path / "a.onnx"),
                          "bytes", "not a state of this bundle")
    nan = tmp_path / "nan.bin"
    blob = bytearray((bundle / "state.bin").read_bytes())
    blob[0:4] = np.array([np.nan], "<f4").tobytes()
    nan.write_bytes(bytes(blob))
    assert_one_line_error(cli("import-state", bundle, nan, "-o", tmp_path / "b.onnx"), "NaN")
    assert_one_line_error(cli("import-state", tmp_path, short, "-o", tmp_path / "c.onnx"),
                          "not a bundle")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "bundle.json").write_text("{not json")
    assert_one_line_error(cli("import-state", broken, "-o", tmp_path / "d.onnx"), "JSON")
    assert_one_line_error(cli("import-state", bundle, "-o", bundle / "state.bin"), "input")
    assert not (tmp_path / "a.onnx").exists()


def test_export_bundle_errors(bundle, tmp_path):
    (tmp_path / "other.txt").write_text("keep me")
    assert_one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path), "other files")
    assert (tmp_path / "other.txt").read_text() == "keep me"
    assert_one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path / "x", "-o",
                              tmp_path / "m.onnx"), "--bundle")
    assert_one_line_error(cli("export", "iris_mlp", "--bundle", tmp_path / "y", "--trainable",
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


# ---- outside Python: onnxruntime-web under Node and in headless Chromium -------------------
@functools.cache
def _missing_js() -> str | None:
    if shutil.which("node") is None:
        return "node (Node.js 18+)"
    if not (JS / "node_modules" / "onnxruntime-web" / "package.json").exists():
        return "onnxruntime-web (run `npm ci` in js/)"
    return None


def run_node(*args: str) -> dict:
    done = subprocess.run(["node", *args], cwd=JS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_node_harness_matches_python(bundle, rows, tmp_path):
    if _missing_js():
        pytest.skip(f"needs {_missing_js()}")
    x, y, csv = rows
    out = tmp_path / "node.bin"
    report = run_node("bundle-train.mjs", str(bundle), str(csv), str(out), "--steps",
                      str(STEPS), "--batch-size", str(BATCH))
    assert report["steps"] == STEPS and len(report["losses"]) == STEPS
    trained = python_steps(bundle, x, y)
    assert_same_state(read_state(str(bundle), str(out)), trained)
    # its evaluation (eval.onnx, all rows) is the Python one of the same state
    session = ort.InferenceSession(str(bundle / "eval.onnx"))
    weights = {n: trained[n] for n in read_contract(str(bundle))["eval"]["weights"]}
    loss, correct = session.run(["loss", "correct"], {"input": x, "target": y, **weights})
    assert report["final"] == {"loss": pytest.approx(float(loss), rel=1e-5),
                               "correct": float(correct)}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


def test_headless_chromium_matches_python(bundle, rows, tmp_path):
    if _missing_js():
        pytest.skip(f"needs {_missing_js()}")
    if not (JS / "node_modules" / "playwright-core" / "package.json").exists():
        pytest.skip("needs playwright-core (run `npm ci` in js/)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    x, y, csv = rows
    site = tmp_path / "site"
    site.mkdir()
    (site / "js").symlink_to(JS)
    (site / "bundle").symlink_to(bundle)
    shutil.copy(csv, site / "data.csv")
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = (f"http://127.0.0.1:{server.server_port}/js/browser.html?bundle=../bundle/"
               f"&data=../data.csv&steps={STEPS}&batch={BATCH}")
        out = tmp_path / "browser.bin"
        shot = tmp_path / "page.png"
        report = run_node("browser-train.mjs", url, str(out), CHROMIUM, str(shot))
    finally:
        server.shutdown()
        server.server_close()
    assert report["steps"] == STEPS
    assert report["final"]["loss"] < report["losses"][0]
    assert report["curvePixels"] > 200  # the page drew its loss curve
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_same_state(read_state(str(bundle), str(out)), python_steps(bundle, x, y))


def test_readme_js_loop_trains(bundle, rows, tmp_path):
    """The README's JavaScript loop, run as written, then fed the same batches: the state it
    writes back equals onnxruntime-Python's."""
    if _missing_js():
        pytest.skip(f"needs {_missing_js()}")
    import re
    readme = (JS.parent / "README.md").read_text(encoding="utf-8")
    (loop,) = re.findall(r"```js\n(.*?)```", readme, re.S)
    x, y, _ = rows
    (tmp_path / "node_modules").symlink_to(JS / "node_modules")
    (tmp_path / "iris_bundle").symlink_to(bundle)
    (tmp_path / "rows.json").write_text(json.dumps({"x": x.tolist(), "y": y.tolist()}))
    driver = f"""
const data = JSON.parse(await readFile('rows.json', 'utf8'));
for (let s = 0; s < {STEPS * BATCH}; s += {BATCH}) {{
  const xs = data.x.slice(s, s + {BATCH});
  await train(Float32Array.from(xs.flat()), data.y.slice(s, s + {BATCH}), xs.length);
}}
"""
    marker = "// ... call train(x, y, rows) per batch"
    assert marker in loop
    script = loop.replace(marker, driver + marker) + \
        "\nawait (await import('node:fs/promises')).writeFile('trained.bin', trained);\n"
    (tmp_path / "loop.mjs").write_text(script)
    done = subprocess.run(["node", "loop.mjs"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_state(read_state(str(bundle), str(tmp_path / "trained.bin")),
                      python_steps(bundle, x, y))


def test_torch_export_fine_tuned_from_a_bundle_in_node(tmp_path, rows):
    """A model irkit did not write (torch.onnx.export, legacy exporter), its last layer made
    trainable: the bundle trains under onnxruntime-web as in onnxruntime-Python."""
    torch = pytest.importorskip("torch")
    import warnings
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    src = tmp_path / "torch_mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 4),), str(src), dynamo=False, opset_version=17,
                          input_names=["measurements"], output_names=["scores"],
                          dynamic_axes={"measurements": {0: "N"}, "scores": {0: "N"}})
    folder = tmp_path / "torch_bundle"
    result = cli("export", src, "--bundle", folder, "--data", "iris", "--loss",
                 "cross_entropy", "--trainable", "2.weight,2.bias")
    assert result.exit_code == 0, result.output
    contract = read_contract(str(folder))
    assert [b["name"] for b in contract["batch"] if b["role"] == "features"] == ["measurements"]
    assert [e["name"] for e in contract["state"] if e["role"] == "param"] == [
        "2.weight", "2.bias"]
    x, y, csv = rows
    want = python_steps(folder, x, y)
    assert not np.allclose(want["2.weight"], read_state(str(folder))["2.weight"])
    if _missing_js():
        pytest.skip(f"needs {_missing_js()} for the Node half")
    out = tmp_path / "node.bin"
    run_node("bundle-train.mjs", str(folder), str(csv), str(out), "--steps", str(STEPS),
             "--batch-size", str(BATCH))
    assert_same_state(read_state(str(folder), str(out)), want)
