"""`irkit evaluate` and `irkit predict` on models irkit did not write (torch.onnx.export) and
on irkit's own: the same numbers as a plain onnxruntime session and numpy give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_cli import assert_one_line_error, cli

from irkit.data import load_dataset

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # legacy exporter


def _torch_mlp(out_activation: str | None, outputs: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, outputs)]
    if out_activation == "softmax":
        layers.append(torch.nn.Softmax(dim=1))
    elif out_activation == "log_softmax":
        layers.append(torch.nn.LogSoftmax(dim=1))
    net = torch.nn.Sequential(*layers)
    ds = load_dataset("iris")
    x = torch.tensor((ds.x - ds.x.mean(0)) / ds.x.std(0))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):  # a little training: predictions neither random nor perfect
        opt.zero_grad()
        if outputs == 1:
            loss = torch.nn.functional.mse_loss(net(x)[:, 0], torch.tensor(ds.x[:, 3]))
        else:
            z = net(x)
            z = z.log() if out_activation == "softmax" else z
            loss = torch.nn.functional.cross_entropy(z, torch.tensor(ds.y))
        loss.backward()
        opt.step()
    return net


def _export(net, path: Path, dynamic: bool = True) -> Path:
    net.eval()
    torch.onnx.export(net, (torch.zeros(1, 4),), str(path), dynamo=False,
                      input_names=["features"], output_names=["scores"],
                      dynamic_axes={"features": {0: "n"}, "scores": {0: "n"}} if dynamic
                      else None)
    return path


@pytest.fixture
def iris_csv(tmp_path, monkeypatch) -> Path:
    """Iris standardised (the torch nets have no scaling layer) as a CSV with labels."""
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("iris")
    x = (ds.x - ds.x.mean(0)) / ds.x.std(0)
    rows = ["a,b,c,d,label"] + [",".join([*(f"{v:.9g}" for v in r), str(int(y))])
                                for r, y in zip(x, ds.y)]
    (tmp_path / "iris_std.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "iris_std.csv"


def _ort_scores(path: Path, csv: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = table[:, :4].astype(np.float32)
    scores = np.concatenate([session.run(None, {"features": x[i:i + 1]})[0]
                             for i in range(len(x))])  # row by row: works for any batch dim
    return scores.astype(np.float64), table[:, 4].astype(np.int64)


def _json(*args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("activation", [None, "softmax", "log_softmax"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_evaluate_torch_classifier_matches_onnxruntime(iris_csv, activation, dynamic):
    path = _export(_torch_mlp(activation), iris_csv.parent / "net.onnx", dynamic)
    scores, y = _ort_scores(path, iris_csv)
    if activation == "softmax":
        logp = np.log(scores)
    else:
        logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    got = _json("evaluate", "net.onnx", "--data", str(iris_csv))
    predicted = scores.argmax(axis=1)
    assert got["task"] == "classify" and got["samples"] == 150
    assert got["loss"] == pytest.approx(-logp[np.arange(150), y].mean(), rel=1e-5)
    assert got["accuracy"] == pytest.approx((predicted == y).mean())
    assert 0.5 < got["accuracy"] < 1.0  # a meaningful test: neither random nor perfect
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (y, predicted), 1)
    assert got["confusion"] == confusion.tolist()
    for k, row in enumerate(got["per_class"]):
        precision = confusion[k, k] / confusion[:, k].sum()
        recall = confusion[k, k] / confusion[k].sum()
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    pred = _json("predict", "net.onnx", "--data", str(iris_csv))
    assert pred["labels"] == predicted.tolist()
    np.testing.assert_allclose(pred["probabilities"], np.exp(logp), atol=2e-6)


def test_evaluate_and_predict_a_torch_regressor(iris_csv):
    path = _export(_torch_mlp(None, outputs=1), iris_csv.parent / "reg.onnx")
    table = np.loadtxt(iris_csv, delimiter=",", skiprows=1)
    target = load_dataset("iris").x[:, 3].astype(np.float64)
    lines = ["a,b,c,d,width"] + [",".join([*(f"{v:.9g}" for v in r[:4]), f"{t:g}"])
                                 for r, t in zip(table, target)]
    csv = iris_csv.parent / "reg.csv"
    csv.write_text("\n".join(lines) + "\n")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"features": table[:, :4].astype(np.float32)})[0][:, 0]
    got = _json("evaluate", "reg.onnx", "--data", str(csv), "--label-column", "width")
    assert got["task"] == "regress"
    assert got["mse"] == pytest.approx(((out - target) ** 2).mean(), rel=1e-5)
    assert got["mae"] == pytest.approx(np.abs(out - target).mean(), rel=1e-5)
    result = cli("predict", "reg.onnx", "--data", str(csv), "--label-column", "width",
                 "-o", "out.csv")
    assert result.exit_code == 0, result.output
    written = np.loadtxt(iris_csv.parent / "out.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(written, out, rtol=1e-5)


def test_predict_irkit_model_names_classes_and_reads_unlabelled_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("train", "iris_mlp", "-o", "m.onnx", "--epochs", "30").exit_code == 0
    ds = load_dataset("iris")
    rows = ["a,b,c,d"] + [",".join(map(str, r)) for r in ds.x]  # no label column
    (tmp_path / "flowers.csv").write_text("\n".join(rows) + "\n")
    assert cli("predict", "m.onnx", "--data", "flowers.csv", "-o", "p.json").exit_code == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    session = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: ds.x})[0].argmax(axis=1)
    assert doc["classes"] == ["setosa", "versicolor", "virginica"]
    assert doc["labels"] == want.tolist()
    assert doc["predicted"] == [doc["classes"][k] for k in want]
    csv = cli("predict", "m.onnx", "--data", "flowers.csv").stdout.splitlines()
    assert csv[0] == "class,label,prob_setosa,prob_versicolor,prob_virginica"
    assert [line.split(",")[1] for line in csv[1:]] == [str(k) for k in want]


def test_evaluate_the_validation_part_repeats_training_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", "iris_mlp", "-o", "m.onnx", "--epochs", "20", "--json")
    final = json.loads(result.stdout)["final"]
    got = _json("evaluate", "m.onnx", "--data", "iris", "--split", "val")
    assert got["samples"] == 30
    assert got["loss"] == pytest.approx(final["val_loss"], rel=1e-4)
    assert got["accuracy"] == pytest.approx(final["val_accuracy"])


def test_evaluate_and_predict_bad_input_is_one_line(iris_csv):
    _export(_torch_mlp(None), iris_csv.parent / "net.onnx")
    (iris_csv.parent / "nolabel.csv").write_text("a,b,c,d\n1,2,3,4\n")
    assert_one_line_error(cli("evaluate", "net.onnx", "--data", "nolabel.csv"), "labels")
    (iris_csv.parent / "label7.csv").write_text("a,b,c,d,label\n1,2,3,4,7\n")
    assert_one_line_error(cli("evaluate", "net.onnx", "--data", "label7.csv"), "label 7",
                          "3 classes")
    (iris_csv.parent / "wide.csv").write_text("a,b,c,d,e\n1,2,3,4,5\n")
    assert_one_line_error(cli("predict", "net.onnx", "--data", "wide.csv"), "net.onnx")
    assert_one_line_error(cli("predict", "net.onnx", "--data", str(iris_csv), "-o", "p.txt"),
                          ".csv or .json")
    assert_one_line_error(cli("predict", "nosuch.onnx", "--data", str(iris_csv)),
                          "nosuch.onnx")


def test_predict_ignores_a_label_column_of_names(iris_csv):
    _export(_torch_mlp(None), iris_csv.parent / "net.onnx")
    lines = iris_csv.read_text().splitlines()
    names = ["setosa", "versicolor", "virginica"]
    named = [lines[0]] + [",".join([*r.split(",")[:4], names[int(r.split(",")[4])]])
                          for r in lines[1:]]
    (iris_csv.parent / "named.csv").write_text("\n".join(named) + "\n")
    a = _json("predict", "net.onnx", "--data", "named.csv")
    b = _json("predict", "net.onnx", "--data", str(iris_csv))
    assert a["labels"] == b["labels"] and a["rows"] == 150


def test_predict_reads_data_through_the_same_caps(tmp_path):
    """`irkit predict`'s feature reader (a CSV without labels) refuses a gzip bomb as
    load_dataset does: the same reader, the same ratio cap."""
    import gzip

    from irkit.cli.predictor import read_features
    from irkit.safe_io import FileSafetyError
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,b,c,d\n" + b"1,2,3,4\n" * ((80 << 20) // 8)))
    with pytest.raises(FileSafetyError, match="times its size"):
        read_features(str(path), labels=False)
