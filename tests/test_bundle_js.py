"""Training bundles outside Python, on stock onnxruntime-web (WASM): the harness js/ under Node
and the browser page examples/web/ in headless Chromium (Debian's chromium, driven by
playwright-core) train the Iris MLP and the digits CNN (conv, BatchNorm, MaxPool, Dropout's hash
mask, Adam's flat update) from a bundle alone and end within 1e-5 (relative) of irkit's own
training on the same batches; so do `--target web` bundles, and js/profile-step.mjs --webgpu
shows their steps placed whole on onnxruntime-web's WebGPU provider (SwiftShader's adapter in
headless Chromium).

They need node, `npm ci` in js/ and, for the page, chromium (.ci/run installs them); without
them they skip and name what is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from bundle_cases import (
    CHROMIUM,
    JS,
    ROOT,
    assert_same_state,
    irkit_fit,
    missing_browser,
    missing_js,
    png_pixels,
    python_steps,
    read_csv,
    run_node,
    write_csv,
)
from cli_checks import cli

from irkit.data import load_dataset
from irkit.train.bundle import read_contract, read_state

# (sample, steps, batch): Iris: 2 epochs of its 150 rows (the last batch of each has 6);
# digits: one epoch of 640 rows
# (steps, batch). digits: 4 steps. Its BatchNorm trains on batch statistics, and from the 5th
# Adam step on, float32 summation-order differences between onnxruntime-web's WASM kernels, the
# native ones and the web lowering's plain ops reach gradients near zero, whose sign Adam's
# m / sqrt(v) turns into differences of about lr (measured: 1e-4 at step 5, 4e-3 at step 20)
CASES = {"iris": (20, 16), "digits": (4, 32)}


def _serve_module():
    spec = importlib.util.spec_from_file_location("serve", ROOT / "examples" / "web" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The page's site as `python examples/web/serve.py` builds it (samples included)."""
    if missing_js():
        pytest.skip(f"needs {missing_js()}")
    return Path(_serve_module().build_site(str(tmp_path_factory.mktemp("site") / "site")))


def case_data(site: Path, sample: str, tmp: Path):
    """The sample bundle, the rows to train on (the sample's data.csv for Iris, the first 640
    rows of it for digits) as arrays and as CSV, and the epochs they make."""
    steps, batch = CASES[sample]
    folder = site / "samples" / sample
    classes = read_contract(str(folder))["classes"]
    x, y = read_csv(folder / "data.csv", classes)
    if len(y) > steps * batch:
        x, y = x[:steps * batch], y[:steps * batch]
    csv = write_csv(tmp / f"{sample}.csv", x, y, classes)
    epochs = -(-steps // -(-len(y) // batch))
    assert epochs * -(-len(y) // batch) == steps  # whole epochs: fit compares step for step
    return folder, x, y, csv, epochs


def assert_matches_irkit(folder: Path, state_file: Path, x, y, epochs: int, batch: int):
    """The trained state the JS side wrote equals irkit's fit on the same batches (weights,
    to 1e-5 relative) and onnxruntime-Python's steps on the bundle (every state tensor)."""
    got = read_state(str(folder), str(state_file))
    want = irkit_fit(folder, x, y, epochs, batch)
    assert_same_state(got, want, names=list(want))
    steps = int(got["opt/step"])
    assert_same_state(got, python_steps(folder, x, y, steps, batch))
    assert not np.allclose(got[next(iter(want))], read_state(str(folder))[next(iter(want))])


@pytest.mark.parametrize("sample", list(CASES))
def test_node_harness_matches_irkit(site, sample, tmp_path):
    folder, x, y, csv, epochs = case_data(site, sample, tmp_path)
    steps, batch = CASES[sample]
    out = tmp_path / "node.bin"
    report = run_node("bundle-train.mjs", folder, csv, out, "--steps", steps,
                      "--batch-size", batch)
    assert report["steps"] == steps and len(report["losses"]) == steps
    assert_matches_irkit(folder, out, x, y, epochs, batch)
    # its evaluation (eval.onnx, all rows) is the Python one of the same state
    contract, trained = read_contract(str(folder)), read_state(str(folder), str(out))
    session = ort.InferenceSession(str(folder / "eval.onnx"))
    weights = {n: trained[n] for n in contract["eval"]["weights"]}
    loss, correct = session.run(["loss", "correct"], {"input": x, "target": y, **weights})
    assert report["final"] == {"loss": pytest.approx(float(loss), rel=1e-5),
                               "correct": float(correct)}


def web_bundle(sample: str, folder: Path) -> Path:
    """The sample's bundle (examples/web/serve.py SAMPLES) exported with --target web."""
    recipe, dataset, freeze = _serve_module().SAMPLES[sample]
    source = recipe
    if freeze:
        source = folder.parent / f"{sample}.onnx"
        assert cli("build", recipe, "-o", source).exit_code == 0
    result = cli("export", source, "--bundle", folder, "--data", dataset, "--target", "web",
                 *(["--freeze", freeze] if freeze else []))
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("sample", list(CASES))
def test_node_harness_trains_web_bundles_as_irkit(site, sample, tmp_path):
    """--target web (int32 targets and step count, cross-entropy in plain ops, no op the WebGPU
    provider lacks): the Node harness, its initial state from init.onnx, ends within 1e-5 of
    irkit's own training of the default bundle on the same batches."""
    folder, x, y, csv, epochs = case_data(site, sample, tmp_path)
    steps, batch = CASES[sample]
    web, out = web_bundle(sample, tmp_path / "web"), tmp_path / "node.bin"
    report = run_node("bundle-train.mjs", web, csv, out, "--steps", steps, "--batch-size", batch)
    assert report["init"] is True and report["steps"] == steps
    got = read_state(str(web), str(out))
    assert got["opt/step"].dtype == np.int32 and int(got["opt/step"]) == steps
    want = irkit_fit(folder, x, y, epochs, batch)
    assert_same_state(got, want, names=list(want))
    assert_same_state(got, python_steps(web, x, y, steps, batch))
    if sample == "iris":  # the state from state.bin's layout instead of init.onnx: the same
        again = tmp_path / "layout.bin"
        report = run_node("bundle-train.mjs", web, csv, again, "--steps", steps,
                          "--batch-size", batch, "--no-init")
        assert report["init"] is False and again.read_bytes() == out.read_bytes()


def synthetic_losses(folder: Path, steps: int, batch: int) -> list[float]:
    """onnxruntime-Python's losses on js/profile-step.mjs's synthetic batch (the same each
    step: features (i % 17) / 17, labels i % classes), each next state fed back."""
    contract = read_contract(str(folder))
    classes = len(contract["classes"] or [0, 1])
    feeds = {}
    for b in contract["batch"]:
        shape = [d if isinstance(d, int) and d > 0 else batch for d in b["shape"]]
        i = np.arange(int(np.prod(shape)))
        values = i % classes if b["dtype"].startswith("int") else (i % 17) / 17
        feeds[b["name"]] = values.astype(b["dtype"]).reshape(shape)
    state, losses = read_state(str(folder)), []
    session = ort.InferenceSession(str(folder / contract["files"]["train_step"]))
    names = [o.name for o in session.get_outputs()]
    for _ in range(steps):
        out = dict(zip(names, session.run(None, {**feeds, **state})))
        state.update({n: out[k] for k, n in contract["train_step"]["updates"].items()})
        losses.append(float(out[contract["train_step"]["loss"]]))
    return losses


def webgpu_cpu_nodes(folder: Path, steps: int = 4) -> list[str] | None:
    """The nodes of the bundle's step that onnxruntime-web's WebGPU provider hands to the CPU
    (js/profile-step.mjs --webgpu: SwiftShader's adapter in headless Chromium), its losses
    checked against onnxruntime-Python's; None when Chromium offers no WebGPU adapter."""
    report = run_node("profile-step.mjs", folder, "--webgpu", "--chromium", CHROMIUM,
                      "--steps", steps, "--batch", 16)
    if report.get("adapter") is None:
        return None
    assert report["counts"].get("WebGpuExecutionProvider", 0) > 0, report
    cpu = report["placed"].get("CPUExecutionProvider", [])
    assert len(cpu) == report["counts"].get("CPUExecutionProvider", 0), report
    # SwiftShader's float math is not the CPU's: 6e-6 apart seen on the Iris MLP
    np.testing.assert_allclose(report["losses"], synthetic_losses(folder, steps, 16), rtol=1e-4)
    return cpu


def test_webgpu_runs_web_bundles_whole(site, tmp_path):
    """The default Iris bundle's step hands its int64 and cross-entropy nodes to the CPU; with
    --target web, the digits CNN's step and one with Dropout's hash mask, LayerNormalization,
    pooling and Adam's flat update of ten tensors run on WebGPU whole. Every step's loss is
    onnxruntime-Python's on the same batch (1e-4 relative)."""
    if missing_browser():
        pytest.skip(f"needs {missing_browser()}")
    default = webgpu_cpu_nodes(site / "samples" / "iris")
    if default is None:
        pytest.skip("Chromium offers no WebGPU adapter (SwiftShader) here")
    assert {n.split("(")[0] for n in default} >= {"OneHot", "Size", "LogSoftmax"}, default
    assert webgpu_cpu_nodes(web_bundle("digits", tmp_path / "digits")) == []
    (tmp_path / "web_ops.toml").write_text(WEB_OPS)
    assert cli("build", tmp_path / "web_ops.toml", "-o", tmp_path / "web_ops.onnx").exit_code == 0
    assert cli("export", tmp_path / "web_ops.onnx", "--bundle", tmp_path / "ops", "--data",
               "digits", "--optimizer", "adam", "--target", "web").exit_code == 0
    assert webgpu_cpu_nodes(tmp_path / "ops") == []


def test_webgpu_trains_a_web_bundle_near_irkit(site, tmp_path):
    """js/webgpu-train.mjs: the Iris web bundle trained 20 steps on WebGPU (SwiftShader in
    headless Chromium), its state kept on the GPU between steps, ends near irkit's weights:
    SwiftShader's float math is not the CPU's (3.3e-6 apart at most seen), so 1e-5 absolute
    here, where WASM gives 1e-5 relative."""
    if missing_browser():
        pytest.skip(f"needs {missing_browser()}")
    folder, x, y, csv, epochs = case_data(site, "iris", tmp_path)
    steps, batch = CASES["iris"]
    web, out = web_bundle("iris", tmp_path / "web"), tmp_path / "gpu.bin"
    report = run_node("webgpu-train.mjs", web, csv, out, "--steps", steps, "--batch-size", batch,
                      "--chromium", CHROMIUM)
    if report["adapter"] is None:
        pytest.skip("Chromium offers no WebGPU adapter (SwiftShader) here")
    assert report["steps"] == steps
    got, want = read_state(str(web), str(out)), irkit_fit(folder, x, y, epochs, batch)
    assert int(got["opt/step"]) == steps
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(got["dense_1.W"], read_state(str(web))["dense_1.W"])


@pytest.fixture(scope="module")
def server(site):
    """The site served over http on a free port, as serve.py serves it."""
    if missing_browser():
        pytest.skip(f"needs {missing_browser()}")
    import http.server
    handler = functools.partial(_serve_module().Handler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def curve_columns(shot: Path, colour: tuple[int, int, int]) -> int:
    """How many pixel columns of the screenshot hold the colour (a curve across the canvas
    covers hundreds; the legend's square and text a few dozen)."""
    pixels = png_pixels(shot)[:, :, :3].astype(int)
    near = (np.abs(pixels - np.array(colour)).sum(axis=2) < 60)
    return int(near.any(axis=0).sum())


@pytest.mark.parametrize("sample,upload", [("iris", False), ("digits", True)])
def test_browser_page_trains_plots_and_predicts(server, site, sample, upload, tmp_path):
    """The page, driven as a person would (sample bundle, for digits an uploaded CSV, Train,
    Predict): its weights equal irkit's, its screenshot shows both curves, its prediction is
    model.onnx's with the trained state."""
    folder, x, y, csv, epochs = case_data(site, sample, tmp_path)
    steps, batch = CASES[sample]
    out, shot = tmp_path / "browser.bin", tmp_path / "page.png"
    report = run_node("browser-train.mjs", server, out, "--chromium", CHROMIUM, "--screenshot",
                      shot, "--sample", sample, "--steps", steps, "--batch", batch,
                      *(["--csv", csv] if upload else []))
    assert report["steps"] == steps and report["final"]["loss"] < report["losses"][0]
    assert_matches_irkit(folder, out, x, y, epochs, batch)
    assert report["curvePixels"]["loss"] > 200 and report["curvePixels"]["accuracy"] > 200
    assert curve_columns(shot, (0x1F, 0x77, 0xB4)) > 400   # the loss curve
    assert curve_columns(shot, (0xFF, 0x7F, 0x0E)) > 400   # the accuracy curve
    served = tmp_path / "served"
    served.mkdir()
    for name in ("model.onnx",):
        (served / name).write_bytes((folder / name).read_bytes())
    (served / "state.bin").write_bytes(out.read_bytes())
    scores = ort.InferenceSession(str(served / "model.onnx")).run(None, {"input": x[:1]})[0]
    np.testing.assert_allclose(report["prediction"]["scores"], scores[0], rtol=1e-4, atol=1e-5)
    assert report["prediction"]["index"] == int(np.argmax(scores[0]))


def test_page_is_offline():
    """The page loads nothing from another host: every import and fetch is relative."""
    page = ROOT / "examples" / "web"
    text = (page / "index.html").read_text() + (page / "app.mjs").read_text()
    assert not re.findall(r"https?://", text)
    assert "./vendor/ort.wasm.min.mjs" in text


@pytest.fixture(scope="module")
def iris_bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle") / "iris"
    assert cli("export", "iris_mlp", "--bundle", folder).exit_code == 0
    return folder


def iris_rows(steps: int, batch: int):
    ds = load_dataset("iris")
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(ds.y)), steps * batch))
    return ds.x[order].astype(np.float32), ds.y[order].astype(np.int64), ds.classes


def test_readme_js_loop_trains(iris_bundle, tmp_path):
    """The README's JavaScript loop, run as written, then fed the same batches: the state it
    writes back equals onnxruntime-Python's."""
    if missing_js():
        pytest.skip(f"needs {missing_js()}")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (loop,) = re.findall(r"```js\n(.*?)```", readme, re.S)
    steps, batch = 20, 16
    x, y, _ = iris_rows(steps, batch)
    (tmp_path / "node_modules").symlink_to(JS / "node_modules")
    (tmp_path / "iris_bundle").symlink_to(iris_bundle)
    (tmp_path / "rows.json").write_text(json.dumps({"x": x.tolist(), "y": y.tolist()}))
    driver = f"""
const data = JSON.parse(await readFile('rows.json', 'utf8'));
for (let s = 0; s < {steps * batch}; s += {batch}) {{
  const xs = data.x.slice(s, s + {batch});
  await train(Float32Array.from(xs.flat()), data.y.slice(s, s + {batch}), xs.length);
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
    assert_same_state(read_state(str(iris_bundle), str(tmp_path / "trained.bin")),
                      python_steps(iris_bundle, x, y, steps, batch))


def test_torch_export_fine_tuned_from_a_bundle_in_node(tmp_path):
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
    steps, batch = 20, 16
    x, y, classes = iris_rows(steps, batch)
    want = python_steps(folder, x, y, steps, batch)
    assert not np.allclose(want["2.weight"], read_state(str(folder))["2.weight"])
    if missing_js():
        pytest.skip(f"needs {missing_js()} for the Node half")
    csv = write_csv(tmp_path / "iris.csv", x, y, classes)
    out = tmp_path / "node.bin"
    run_node("bundle-train.mjs", folder, csv, out, "--steps", steps, "--batch-size", batch)
    assert_same_state(read_state(str(folder), str(out)), want)
    assert_same_state(read_state(str(folder), str(out)), irkit_fit(folder, x, y, 1, batch),
                      names=["2.weight", "2.bias"])
    web = tmp_path / "torch_web"  # --target web: the same weights from the lowered step
    result = cli("export", src, "--bundle", web, "--data", "iris", "--loss", "cross_entropy",
                 "--trainable", "2.weight,2.bias", "--target", "web")
    assert result.exit_code == 0, result.output
    run_node("bundle-train.mjs", web, csv, out, "--steps", steps, "--batch-size", batch)
    assert_same_state(read_state(str(web), str(out)), want, names=["2.weight", "2.bias"])


WEB_OPS = """# every recipe layer kind not in the samples, for onnxruntime-web's WASM provider
[model]
name = "web_ops"
scaling = "minmax"
layers = [
  { type = "reshape", shape = [1, 8, 8] },
  { type = "conv2d", filters = 8, kernel_size = 3, padding = "same" },
  { type = "avgpool2d", pool_size = 2 },
  { type = "activation", kind = "tanh" },
  { type = "conv2d", filters = 8, kernel_size = 3, padding = "valid", activation = "relu" },
  { type = "globalavgpool2d" },
  { type = "flatten" },
  { type = "layernorm" },
  { type = "dense", units = 16, activation = "sigmoid" },
  { type = "dropout", rate = 0.1, seed = 1 },
  { type = "dense", units = 10 },
]
[data]
dataset = "digits"
val_split = 0.0
[train]
loss = "sparse_categorical_crossentropy"
lr = 0.01
batch_size = 32
seed = 0
"""


@pytest.mark.parametrize("model,optimizer", [("digits_cnn", "sgd"), ("digits_cnn", "rmsprop"),
                                             ("web_ops", "adam"), ("web_ops", "rmsprop")])
def test_step_graphs_run_on_wasm_as_exported(site, model, optimizer, tmp_path):
    """Item 3's finding, kept true: every op of irkit's step graphs (the digits CNN's conv,
    BatchNorm, MaxPool, Dropout hash mask; AvgPool, GlobalAveragePool, LayerNormalization,
    tanh/sigmoid; the three optimizers' updates) runs on onnxruntime-web's WASM provider as
    exported, to onnxruntime-Python's numbers, so `--bundle` needs no web lowering."""
    steps, batch = 5, 32
    source = tmp_path / "model.onnx"
    if model == "web_ops":
        (tmp_path / "web_ops.toml").write_text(WEB_OPS)
        assert cli("build", tmp_path / "web_ops.toml", "-o", source).exit_code == 0
        freeze = []
    else:
        assert cli("build", model, "-o", source).exit_code == 0
        freeze = ["--freeze", "conv2d_2.b"]  # the bias BatchNorm cancels (serve.py SAMPLES)
    folder = tmp_path / "bundle"
    result = cli("export", source, "--bundle", folder, "--data", "digits", "--optimizer",
                 optimizer, *freeze)
    assert result.exit_code == 0, result.output
    _, x, y, csv, _ = case_data(site, "digits", tmp_path)
    out = tmp_path / "node.bin"
    run_node("bundle-train.mjs", folder, csv, out, "--steps", steps, "--batch-size", batch)
    assert_same_state(read_state(str(folder), str(out)), python_steps(folder, x, y, steps, batch))
