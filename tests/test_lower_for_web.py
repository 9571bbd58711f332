"""`irkit export --bundle DIR --target web` and its pass, LowerForWebPass, on the Python side:
the lowered step computes what the default one computes (onnxruntime-Python, step for step),
keeps no int64 arithmetic or op WebGPU lacks, is read back by irkit (load_model, import-state)
through int64 casts, and refuses what it cannot lower in one line. Every bundle's init.onnx
gives its initial state. onnxruntime-web's side (Node, WebGPU placement in headless Chromium)
is in test_bundle_js.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bundle_cases import assert_same_state, irkit_fit, python_steps
from cli_checks import cli, one_line_error
from irkit.passes.lower_for_web import LowerForWebPass

from irkit import ops
from irkit.data import load_dataset
from irkit.errors import UnsupportedOpError
from irkit.ir import Graph
from irkit.onnx_io import from_onnx
from irkit.train.bundle import read_contract, read_state

# ops onnxruntime-web 1.31's WebGPU provider has no kernel for (js/profile-step.mjs --webgpu)
CPU_ONLY = {"OneHot", "Size", "LogSoftmax", "SoftmaxCrossEntropyLoss", "Mod"}
DROPOUT_MLP = """[model]
name = "dropout_mlp"
scaling = "standard"
layers = [
  { type = "dense", units = 8, activation = "relu" },
  { type = "dropout", rate = 0.25, seed = 3 },
  { type = "dense", units = 3 },
]
[data]
dataset = "iris"
val_split = 0.0
[train]
loss = "sparse_categorical_crossentropy"
optimizer = "adam"
lr = 0.01
batch_size = 16
seed = 0
accumulate = 2
"""


def iris_rows(steps: int = 20, batch: int = 16):
    ds = load_dataset("iris")
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(ds.y)), steps * batch))
    return ds.x[order].astype(np.float32), ds.y[order].astype(np.int64)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """(default bundle, web bundle) of the Iris MLP, of it with one-hot targets
    (categorical cross-entropy: LogSoftmax, two ArgMax compared) and of an MLP with Dropout's
    hash mask (whose step count and element count the pass lowers too), with gradient
    accumulation."""
    root = tmp_path_factory.mktemp("web")
    (root / "dropout_mlp.toml").write_text(DROPOUT_MLP)
    made = {}
    for name, source, more in (("iris", "iris_mlp", []),
                               ("onehot", "iris_mlp", ["--loss", "categorical_crossentropy"]),
                               ("dropout", root / "dropout_mlp.toml", [])):
        for target in ("default", "web"):
            folder = root / f"{name}_{target}"
            result = cli("export", source, "--bundle", folder, "--target", target, *more)
            assert result.exit_code == 0, result.output
            made[name, target] = folder
    return made


def test_web_contract_and_graph(bundles):
    folder = bundles["iris", "web"]
    contract = read_contract(str(folder))
    assert contract["target"] == "web"
    assert read_contract(str(bundles["iris", "default"]))["target"] == "default"
    dtypes = {b["name"]: b["dtype"] for b in contract["batch"]}
    assert dtypes == {"input": "float32", "target": "int32"}
    assert {e["name"]: e["dtype"] for e in contract["state"]}["opt/step"] == "int32"
    for folder, name in [(bundles[b, "web"], f) for b in ("iris", "onehot", "dropout")
                         for f in ("train_step.onnx", "eval.onnx")]:
        model = onnx.load(folder / name)
        onnx.checker.check_model(model, full_check=True)
        graph = from_onnx(model)
        assert not {n.op_type for n in graph.nodes} & CPU_ONLY, name
        # int64 is left only where ONNX wants it: shapes, axes, ArgMax's index (gathered)
        for node in graph.nodes:
            for out in node.outputs:
                if out.dtype == np.int64:
                    assert node.op_type in ("Shape", "ArgMax"), node
                    assert all(u.op_type in ("Expand", "Gather") for u, _ in out.uses), node
        assert not LowerForWebPass(["target", "opt/step"])(graph).modified  # nothing left


@pytest.mark.parametrize("name", ["iris", "onehot", "dropout"])
def test_web_step_computes_the_default_step(bundles, name):
    """onnxruntime-Python on the web bundle, 20 steps: every state tensor equals the default
    bundle's (1e-5 relative), the step count included (int32 against int64)."""
    x, y = iris_rows()
    if name == "onehot":
        y = np.eye(3, dtype=np.float32)[y]
    web = python_steps(bundles[name, "web"], x, y.astype(np.int32), 20, 16)
    default = python_steps(bundles[name, "default"], x, y, 20, 16)
    assert web["opt/step"].dtype == np.int32 and int(web["opt/step"]) == 20
    assert_same_state({k: v.astype(np.int64) if k == "opt/step" else v for k, v in web.items()},
                      default)


def test_irkit_reads_a_web_bundle(bundles, tmp_path):
    """load_model(DIR) of a web bundle trains as irkit's own training of the default bundle;
    import-state of a web state file is a training file irkit resumes."""
    x, y = iris_rows()
    folder = bundles["iris", "web"]
    assert_same_state(irkit_fit(folder, x, y, 2, 16), irkit_fit(bundles["iris", "default"],
                                                                 x, y, 2, 16))
    trained = python_steps(folder, x, y.astype(np.int32), 20, 16)
    contract = read_contract(str(folder))
    blob = bytearray(contract["state_bytes"])
    for e in contract["state"]:
        blob[e["offset"]:e["offset"] + e["length"]] = trained[e["name"]].tobytes()
    (tmp_path / "trained.bin").write_bytes(bytes(blob))
    out = tmp_path / "resumed.onnx"
    result = cli("import-state", folder, tmp_path / "trained.bin", "-o", out)
    assert result.exit_code == 0, result.output
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert stored["opt/step"].dtype == np.int64 and int(stored["opt/step"]) == 20
    np.testing.assert_array_equal(stored["dense_1.W"], trained["dense_1.W"])
    result = cli("train", out, "--data", "iris", "--epochs", "1", "-o", tmp_path / "more.onnx")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("target", ["default", "web"])
def test_init_graph_gives_the_initial_state(bundles, target):
    """init.onnx has no inputs; run, its outputs are state.bin's tensors; it stores them in
    state.bin (external data), not a second time."""
    folder = bundles["iris", target]
    assert read_contract(str(folder))["files"]["init"] == "init.onnx"
    session = ort.InferenceSession(str(folder / "init.onnx"))
    assert session.get_inputs() == []
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {})))
    want = read_state(str(folder))
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    model = onnx.load(folder / "init.onnx", load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert (folder / "init.onnx").stat().st_size < 4096


def test_unlowerable_integer_ops_are_refused():
    g = Graph("step")
    t = g.add_input("target", np.int64, ("N",))
    g.outputs = [ops.ReduceSum(t, keepdims=0)]
    with pytest.raises(UnsupportedOpError, match="ReduceSum.*'target'.*default target"):
        LowerForWebPass(["target"])(g)


def test_target_needs_a_bundle(tmp_path):
    one_line_error(cli("export", "iris_mlp", "-o", tmp_path / "m.onnx", "--target", "web"),
                   "--target", "--bundle")
    result = cli("export", "iris_mlp", "--bundle", tmp_path / "b", "--target", "gpu")
    assert result.exit_code != 0 and "gpu" in result.output
    assert not (tmp_path / "b").exists()


def test_schema_accepts_web_bundles(bundles):
    jsonschema = pytest.importorskip("jsonschema")
    from bundle_cases import ROOT
    schema = json.loads((ROOT / "irkit" / "train" / "bundle.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for folder in bundles.values():
        doc = json.loads((folder / "bundle.json").read_text())
        assert not list(validator.iter_errors(doc)), folder
    doc = json.loads((bundles["iris", "web"] / "bundle.json").read_text())
    doc["target"] = "gpu"
    assert list(validator.iter_errors(doc))


def test_web_bundle_at_opset_13(tmp_path):
    """The lowering adds no op newer than the default graph's (Shape's start/end are opset 15,
    which onnx's converter cannot take down)."""
    result = cli("export", "iris_mlp", "--bundle", tmp_path / "b", "--target", "web",
                 "--opset", "13")
    assert result.exit_code == 0, result.output
    model = onnx.load(tmp_path / "b" / "train_step.onnx")
    assert model.opset_import[0].version == 13
    ort.InferenceSession(str(tmp_path / "b" / "train_step.onnx"))


def _run_ort(graph: Graph, feeds: dict) -> list[np.ndarray]:
    from irkit.onnx_io import model_bytes
    session = ort.InferenceSession(model_bytes(graph), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_training_batch_norm_lowers_to_its_definition():
    """Case 9: a training-mode BatchNormalization (WebGPU refuses training_mode) as plain ops
    gives onnxruntime's outputs: the normalized batch and both running statistics."""
    rng = np.random.default_rng(0)
    g = Graph("bn")
    x = g.add_input("x", np.float32, ("N", 3, 4, 5))
    params = [g.add_initializer(n, v.astype(np.float32)) for n, v in (
        ("scale", rng.normal(size=3)), ("bias", rng.normal(size=3)),
        ("mean", rng.normal(size=3)), ("var", rng.uniform(0.5, 2, size=3)))]
    g.outputs = list(ops.BatchNormalization(x, *params, epsilon=1e-3, momentum=0.8,
                                            training_mode=1))
    feeds = {"x": (rng.normal(size=(6, 3, 4, 5)) * 3 + 1).astype(np.float32)}
    want, names = _run_ort(g, feeds), [v.name for v in g.outputs]
    assert LowerForWebPass()(g).modified
    assert not any(n.op_type == "BatchNormalization" for n in g.nodes)
    assert [v.name for v in g.outputs] == names
    for got, expected in zip(_run_ort(g, feeds), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
