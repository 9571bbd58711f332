"""Issue 18 item 6, safety: a command that writes a model never writes over the external data
of the model it reads. A model above the external-data threshold (IRKIT_EXTERNAL_DATA_BYTES,
forced to 0 here) is written with its weights in PATH.data beside it; when that file, or the
output itself, is the input's own external data (torch's dynamo export `model.onnx` with
`model.onnx.data`, the model renamed and the data not), the command is refused in one line
that names both files and the fix, before any work, and every file is left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from irkit.safe_io import FileSafetyError
from tests.cli_checks import cli, one_line_error
from tests.test_large_model import _model


def _renamed(folder: Path, location: str) -> Path:
    """tests.test_large_model's model as in.onnx, its external data in `location`."""
    proto = onnx.load(str(_model(folder)), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder / "model.data", folder / location)
    (folder / "model.onnx").unlink()
    (folder / "in.onnx").write_bytes(proto.SerializeToString())
    return folder / "in.onnx"


TRAIN = ("train", "in.onnx", "--data", "data.npz", "--epochs", "1", "--batch-size", "8")
CASES = [  # (the data's location, the command, the output named in the refusal)
    ("out.onnx.data", (*TRAIN, "-o", "out.onnx"), "out.onnx"),
    ("out.onnx.data", (*TRAIN, "-o", "o.onnx", "--save-training", "out.onnx"), "out.onnx"),
    ("ck/last.onnx.data", (*TRAIN, "-o", "o.onnx", "--checkpoint", "ck"), "last.onnx"),
    ("out.onnx.data", ("grad", "in.onnx", "--of", "logits", "--wrt", "W0", "-o", "out.onnx"),
     "out.onnx"),
    ("out.onnx.data", ("optimize", "in.onnx", "-o", "out.onnx"), "out.onnx"),
    ("out.onnx.data", ("export", "in.onnx", "-o", "out.onnx"), "out.onnx"),
]


@pytest.mark.parametrize("location,command,output", CASES,
                         ids=["train-o", "save-training", "checkpoint", "grad", "optimize",
                              "export"])
def test_output_data_file_is_never_the_inputs_data(tmp_path, monkeypatch, location, command,
                                                   output):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    _renamed(tmp_path, location)
    before = (tmp_path / location).read_bytes()
    line = one_line_error(cli(*command), output, f"{output}.data", "in.onnx",
                          "choose another")
    assert "external data" in line
    assert (tmp_path / location).read_bytes() == before
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "o.onnx").exists()


def test_output_that_is_the_inputs_data_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _renamed(tmp_path, "weights.onnx")  # the data file has a model's name
    before = (tmp_path / "weights.onnx").read_bytes()
    one_line_error(cli(*TRAIN, "-o", "weights.onnx"), "-o weights.onnx",
                   "external data of the input in.onnx", "choose another name")
    assert (tmp_path / "weights.onnx").read_bytes() == before


def test_model_save_and_export_keep_the_source_data(tmp_path, monkeypatch):
    from irkit.train.loading import load_model
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    path = _renamed(tmp_path, "out.onnx.data")
    before = (tmp_path / "out.onnx.data").read_bytes()
    model = load_model(str(path))
    for write in (model.save, model.export):
        with pytest.raises(FileSafetyError, match="out.onnx.data, the external data of the "
                                                  "input .*in.onnx"):
            write(str(tmp_path / "out.onnx"))
    assert (tmp_path / "out.onnx.data").read_bytes() == before
    model.export(str(tmp_path / "other.onnx"))  # any other name is written as before
    assert (tmp_path / "other.onnx.data").exists()


def test_a_plain_rerun_still_overwrites_its_own_outputs(tmp_path, monkeypatch):
    # the input's data is model.data: -o out.onnx (and out.onnx.data) written twice is fine
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRKIT_EXTERNAL_DATA_BYTES", "0")
    _model(tmp_path)
    for _ in range(2):
        r = cli("grad", "model.onnx", "--of", "logits", "--wrt", "W0", "-o", "out.onnx")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "out.onnx.data").exists()
