"""The lab's notebooks (examples/lab/*.ipynb) run in a Jupyter kernel through nbclient, with
the kernel started in the clone's root as a learner's would be: no error output, fit's
progress one display per run, pictures present (irkit's and a plain `plt.plot` after them),
and the lesson's figures above their floors.

Needs nbclient, nbformat and ipykernel (`pip install -e ".[notebook]"`); skipped without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason='pip install -e ".[notebook]" (nbclient)')
nbformat = pytest.importorskip("nbformat", reason='pip install -e ".[notebook]" (nbformat)')
pytest.importorskip("ipykernel", reason='pip install -e ".[notebook]" (ipykernel)')

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "examples" / "lab"
RESULT = "IRKIT-TEST-RESULT "

# per notebook: a test-only cell appended to it (it prints the figures) and the floors
FIGURES = {
    "01_tensors_and_gradients.ipynb": "{'w': float(w), 'b': float(b)}",
    "02_iris_one_and_multi_layer.ipynb":
        "{name: m.evaluate(*m.last_validation)['accuracy'] for name, m in "
        "(('linear', linear), ('mlp', mlp))}",
    "03_mnist.ipynb": "{name: m.evaluate(*m.last_validation)['accuracy'] for name, m in "
                      "(('linear', linear), ('mlp', mlp))}",
    "04_overfitting.ipynb": "{'loss': history.history['loss'], 'val_loss': "
                            "history.history['val_loss'], 'stopped': stopped_history.epochs}",
    "05_five_points.ipynb": "{name: float(error(p, scaled(x_val), y_val)) for name, p in "
                            "results.items()}",
}


class CountingClient(nbclient.NotebookClient):
    """NotebookClient that counts, per cell, the display updates the kernel sent (nbclient
    applies them to the display they name: the saved notebook keeps one output)."""

    def __init__(self, nb, **kwargs) -> None:
        super().__init__(nb, **kwargs)
        self.updates: dict[int, int] = {}

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] == "update_display_data":
            self.updates[cell_index] = self.updates.get(cell_index, 0) + 1
        return super().process_message(msg, cell, cell_index)


def run(nb, cwd: Path = ROOT) -> CountingClient:
    """Execute `nb` in a fresh kernel whose working folder is `cwd` (PYTHONPATH left out:
    the kernel imports what a learner's would); the client keeps the update counts."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    client = CountingClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": cwd}})
    client.execute(env=env)
    return client


def outputs(nb, kind: str | None = None) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if kind is None or o.output_type == kind]


def result(nb) -> dict:
    for o in outputs(nb, "stream"):
        for line in o.text.splitlines():
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
    raise AssertionError("the notebook printed no result")


def check_floors(name: str, figures: dict) -> None:
    if name.startswith("01"):
        assert abs(figures["w"] - 2) < 0.2 and abs(figures["b"] - 1) < 0.2, figures
    elif name.startswith("02"):
        assert figures["linear"] >= 0.95 and figures["mlp"] >= 0.95, figures
    elif name.startswith("03"):
        assert figures["linear"] >= 0.88 and figures["mlp"] >= 0.93, figures
    elif name.startswith("04"):
        loss, val = figures["loss"], figures["val_loss"]
        low = val.index(min(val))
        assert len(val) - 1 - low >= 5, val           # validation loss rose 5+ epochs
        assert val[-1] > val[low] and min(loss[low + 1:]) < loss[low], (loss, val)
        assert figures["stopped"] < len(val)          # EarlyStopping ended the second run
    else:
        assert figures["polynomial"] > 10 * figures["line"], figures


def check_fit_cells(nb, updates: dict[int, int]) -> None:
    """Each cell that calls fit shows one progress display (not one output per epoch),
    updated in place at least once per epoch, on stdout, ending with the closing line;
    nothing on stderr."""
    fits = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and
            ".fit(" in c.source]
    assert fits
    for index, cell in fits:
        assert updates.get(index, 0) >= 2, (index, updates)  # the display was redrawn
        shown = [o for o in cell.outputs if o.output_type == "display_data"
                 and "epoch" in o.data.get("text/plain", "")]
        assert len(shown) == 1, cell.outputs
        text = shown[0].data["text/plain"]
        assert "[####" in text and "validation loss" in text, text  # bar, closing line
        assert not [o for o in cell.outputs if o.output_type == "stream" and
                    o.name == "stderr"], cell.outputs


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_lab_notebook_runs_and_shows_the_lesson(name):
    nb = nbformat.read(LAB / name, as_version=4)
    code = f"import json; print({RESULT!r} + json.dumps({FIGURES[name]}))"
    nb.cells.append(nbformat.v4.new_code_cell(code))
    client = run(nb)
    errors = outputs(nb, "error")
    assert not errors, [(e.ename, e.evalue) for e in errors]
    assert any("image/png" in o.get("data", {}) for o in outputs(nb)), "no picture"
    if any(".fit(" in c.source for c in nb.cells):
        check_fit_cells(nb, client.updates)
    last_plot = [c for c in nb.cells if "plt." in c.source][-1]
    assert any("image/png" in o.get("data", {}) for o in last_plot.outputs)  # inline still
    check_floors(name, result(nb))


def test_lab_folder_has_the_lesson():
    assert sorted(p.name for p in LAB.glob("*.ipynb")) == sorted(FIGURES)


CELLS = [
    "import irkit, irkit.passes, irkit.runtimes\n"
    "print([m.__file__ for m in (irkit, irkit.passes, irkit.runtimes)])",
    "import numpy as np\nfrom irkit import nn\nfrom irkit.data import load_dataset\n"
    "data = load_dataset('iris')\nmodel = irkit.Sequential([nn.Normalize('standard'), "
    "nn.Dense(3)])\nmodel.compile(optimizer='adam', lr=0.05)\n"
    "history = model.fit(data.x, data.y, epochs=20, batch_size=16)",
    "model", "history", "model.to_graph()", "model.summary()",
    "model.fit(data.x, np.eye(3)[data.y], epochs=1)",
    "digits = load_dataset('mnist5k')\n"
    "mnist = irkit.Sequential([irkit.Input((784,)), nn.Normalize('minmax'), nn.Dense(10)])\n"
    "mnist.compile(optimizer='adam', lr=0.003)\n"
    "mnist_history = mnist.fit(digits.x, digits.y, epochs=3, batch_size=64, seed=0)",
    "mnist_history",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()",
]
FIT_CELLS = (1, 7)


def test_a_notebook_in_the_clone_root_runs_the_clone():
    """A notebook saved in the clone's root imports the clone's irkit, irkit.passes and
    irkit.runtimes; it trains Iris and MNIST, each fit one progress display updated in
    place; Model, History and Graph display richly, irkit's curves and then a plain
    `plt.plot` inline; summary() shows once; an irkit error ends in its one sentence
    without irkit's frames."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = run(nb)
    assert not [c.outputs for c in nb.cells[:6] + nb.cells[7:]
                if any(o.output_type == "error" for o in c.outputs)]
    files = eval(nb.cells[0].outputs[0].text)  # noqa: S307 - a list of paths we printed
    assert [Path(f).parent for f in files] == [ROOT / "irkit", ROOT / "passes",
                                               ROOT / "runtimes"]
    for index in FIT_CELLS:
        (shown,) = nb.cells[index].outputs  # one display, not one output per epoch
        assert shown.output_type == "display_data" and "validation loss" in shown.data[
            "text/plain"], shown
        assert client.updates.get(index, 0) >= 3, (index, client.updates)  # redrawn
    for index in (2, 3, 4, 8):
        (shown,) = nb.cells[index].outputs
        assert "text/html" in shown.data and len(shown.data["text/plain"]) < 300, shown.data
    assert "<svg" in nb.cells[4].outputs[0].data["text/html"]
    for index in (3, 8):  # irkit's curves, as a picture in the History's display
        assert "<img src='data:image/png" in nb.cells[index].outputs[0].data["text/html"]
    (plain,) = nb.cells[9].outputs  # and a plain pyplot figure after them, inline
    assert "image/png" in plain.data, plain
    assert [o.output_type for o in nb.cells[5].outputs] == ["stream"]  # printed once
    (error,) = nb.cells[6].outputs
    assert error.ename == "DataError" and "categorical_crossentropy" in error.evalue
    assert error.traceback[-1] == f"DataError: {error.evalue}"
    assert not [line for line in error.traceback if str(ROOT / "irkit") in line]
