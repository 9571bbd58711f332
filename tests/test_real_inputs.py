"""Real inputs and targets (issue 18, item 5): .npz features keep their shape, integer inputs
stay integers, several inputs by name, per-token cross-entropy with ignore_index and token
accuracy, a loss the model computes (`output:NAME`), from Python and the command line, on
onnxruntime and the numpy reference runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from irkit.cli import main
from irkit.errors import DataError
from irkit.onnx_io import from_onnx
from irkit.train.model import Model

V, E, T = 7, 5, 6


def _model(nodes, inputs, outputs, weights, name="m"):
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in weights.items()]
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def token_model():
    """(input_ids, attention_mask) int64 (N, T) -> logits (N, T, V): a masked embedding and a
    projection, as a language model's head is."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "last"], ["m3"]),
             helper.make_node("Mul", ["h", "m3"], ["hm"]),
             helper.make_node("MatMul", ["hm", "w"], ["logits"])]
    return _model(nodes, [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", T])
                          for n in ("input_ids", "attention_mask")],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", T, V])],
                  {"emb": rng.normal(size=(V, E)).astype(np.float32),
                   "w": rng.normal(size=(E, V)).astype(np.float32),
                   "last": np.array([-1], np.int64)}, "tokens")


def cnn_model():
    """images (N, 1, 4, 4) -> Conv -> Relu -> Flatten -> Gemm -> scores (N, 3)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["images", "k", "kb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["scores"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                        ["N", 1, 4, 4])],
                  [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
                  {"k": rng.normal(size=(2, 1, 3, 3)).astype(np.float32) * 0.5,
                   "kb": np.zeros(2, np.float32),
                   "w": rng.normal(size=(3, 32)).astype(np.float32) * 0.3,
                   "b": np.zeros(3, np.float32)}, "cnn")


def loss_model():
    """(x (N, 4), labels (N, 2)) -> (prediction (N, 2), loss: the model's own MSE, a scalar)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["prediction"]),
             helper.make_node("Sub", ["prediction", "labels"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["loss"], keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                          helper.make_tensor_value_info("labels", TensorProto.FLOAT,
                                                        ["N", 2])],
                  [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N", 2]),
                   helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
                  {"w": rng.normal(size=(4, 2)).astype(np.float32)}, "own_loss")


def token_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(n, T))
    mask = np.ones((n, T), np.int64)
    mask[:, 4:] = 0
    labels = (ids + 1) % V  # learnable: the next id
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask}, labels


def image_data(n=60, seed=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32) * 0.3
    x[np.arange(n), 0, y, y] += 2.0  # the class shows on the diagonal
    return x, y


@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_per_token_loss_and_accuracy_are_torch_s_over_counted_tokens(runtime):
    x, labels = token_data()
    model = Model(from_onnx(token_model()))
    model.compile("sgd", lr=0.5, runtime=runtime)
    logits = model.predict(x)
    counted = labels != -100
    # log-softmax over the vocabulary, the label's entry, mean over the tokens that count
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.where(counted, labels, 0)[..., None], -1)[..., 0]
    want_loss = -picked[counted].mean()
    want_acc = (logits.argmax(-1) == labels)[counted].mean()
    got = model.evaluate(x, labels, batch_size=len(labels))
    assert got["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(want_acc, rel=1e-6)
    history = model.fit(x, labels, epochs=15, batch_size=8, verbose=0)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert all(0 <= a <= 1 for a in history["accuracy"] + history["val_accuracy"])
    assert history["accuracy"][-1] > 0.5


def test_per_token_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    x, labels = token_data(8)
    model = Model(from_onnx(token_model()))
    model.compile("sgd", lr=0.1)
    w0 = model.get_weights()
    model.fit(x, labels, epochs=1, batch_size=8, validation_split=0, shuffle=False, verbose=0)
    emb = torch.tensor(w0["emb"], requires_grad=True)
    w = torch.tensor(w0["w"], requires_grad=True)
    h = emb[torch.tensor(x["input_ids"])] * torch.tensor(x["attention_mask"]).float()[..., None]
    loss = torch.nn.functional.cross_entropy((h @ w).reshape(-1, V),
                                             torch.tensor(labels).reshape(-1), ignore_index=-100)
    loss.backward()
    got = model.get_weights()
    for name, t in (("emb", emb), ("w", w)):
        want = t.detach().numpy() - 0.1 * t.grad.numpy()
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


def test_integer_inputs_stay_integers_and_are_checked():
    x, labels = token_data()
    model = Model(from_onnx(token_model()))
    model.compile()
    floats = {k: v.astype(np.float64) for k, v in x.items()}  # whole numbers: accepted
    assert model.predict(floats).shape == (40, T, V)
    with pytest.raises(DataError, match="input 'input_ids' is int64.*fractions"):
        model.predict({**x, "input_ids": x["input_ids"] + 0.5})
    with pytest.raises(DataError, match="needs input 'attention_mask'"):
        model.predict({"input_ids": x["input_ids"]})
    with pytest.raises(DataError, match="has no input named 'token_type_ids'"):
        model.predict({**x, "token_type_ids": x["input_ids"]})
    with pytest.raises(DataError, match="2 inputs .*dict of arrays"):
        model.predict(x["input_ids"])
    with pytest.raises(DataError, match="label 9 is out of range for 7 classes"):
        model.fit(x, np.where(labels == 3, 9, labels), epochs=1, verbose=0)


def test_images_keep_their_shape():
    x, y = image_data()
    model = Model(from_onnx(cnn_model()))
    model.compile("adam", lr=0.05)
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert history["val_accuracy"][-1] >= 0.9
    with pytest.raises(DataError, match="input 'images' has rank 4 .* the data 2"):
        model.predict(x.reshape(len(x), -1))


@pytest.mark.parametrize("runtime", ["onnxruntime", "reference"])
def test_a_loss_the_model_computes(runtime):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    labels = x @ rng.normal(size=(4, 2)).astype(np.float32)
    model = Model(from_onnx(loss_model()))
    model.compile("adam", "output:loss", lr=0.05, runtime=runtime)
    history = model.fit({"x": x, "labels": labels}, None, epochs=20, batch_size=16, verbose=0)
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    assert "accuracy" not in history.history
    with pytest.raises(DataError, match="reads no targets"):
        model.evaluate({"x": x, "labels": labels}, labels)
    other = Model(from_onnx(loss_model()))
    with pytest.raises(DataError, match="output 'prediction' has shape .*scalar"):
        other.compile(loss="output:prediction").fit({"x": x, "labels": labels}, None,
                                                    epochs=1, verbose=0)
    with pytest.raises(DataError, match="no output 'lost'; its outputs: prediction, loss"):
        Model(from_onnx(loss_model())).compile(loss="output:lost").fit(
            {"x": x, "labels": labels}, None, epochs=1, verbose=0)


def _write(tmp_path, name, proto):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return str(path)


def _train(args):
    result = CliRunner().invoke(main, ["train", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_trains_a_cnn_on_npz_images(tmp_path):
    x, y = image_data()
    np.savez(tmp_path / "images.npz", x=x, y=y)
    onnx_path = _write(tmp_path, "cnn.onnx", cnn_model())
    doc = _train([onnx_path, "--data", str(tmp_path / "images.npz"), "-o",
                  str(tmp_path / "out.onnx"), "--epochs", "10", "--lr", "0.05"])
    assert doc["final"]["val_accuracy"] >= 0.9


def test_cli_trains_several_integer_inputs_per_token(tmp_path):
    x, labels = token_data(80)
    np.savez(tmp_path / "tokens.npz", **x, y=labels)
    onnx_path = _write(tmp_path, "tokens.onnx", token_model())
    doc = _train([onnx_path, "--data", str(tmp_path / "tokens.npz"), "-o",
                  str(tmp_path / "out.onnx"), "--epochs", "8", "--lr", "0.05", "--batch-size",
                  "8", "--optimizer", "adamw", "--clip-norm", "1", "--accumulate", "2"])
    history = doc["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert all(0 <= a <= 1 for a in history["accuracy"] + history["val_accuracy"])
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / "out.onnx"))
    assert session.run(None, x)[0].shape == (80, T, V)


def test_cli_loss_output_and_its_errors(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    np.savez(tmp_path / "own.npz", x=x, labels=x[:, :2] * 2)
    np.savez(tmp_path / "half.npz", x=x)
    onnx_path = _write(tmp_path, "own.onnx", loss_model())
    out = str(tmp_path / "out.onnx")
    doc = _train([onnx_path, "--data", str(tmp_path / "own.npz"), "-o", out, "--epochs", "5",
                  "--loss", "output:loss", "--lr", "0.05"])
    assert doc["history"]["loss"][-1] < doc["history"]["loss"][0]
    for data, loss, message in [
            ("own.npz", "mse", "own.npz: no array 'y' (the targets)"),
            ("half.npz", "output:loss", "the model has 2 inputs (x, labels)"),
            ("own.npz", "outputs:loss", "unknown loss 'outputs:loss'")]:
        result = CliRunner().invoke(main, ["train", onnx_path, "--data", str(tmp_path / data),
                                           "-o", out, "--loss", loss])
        assert result.exit_code != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("irkit: error: "), result.stderr
        assert message in lines[0]
