"""The must-hold model table of issue 18: ResNet-18, MobileNetV2, a BERT classifier with its
attention mask, a GPT-2 LM and a ViT (tests/torch_models.py, tiny sizes, perturbed random
weights), each written by both torch exporters with a dynamic batch and its loss as output.

For every cell: the import round-trips (`irkit export`) to a file that onnxruntime runs as it
runs the original (1e-5); `irkit grad` of the loss gives torch autograd's gradient for every
torch parameter at batch 1 and 4 (the export's example batch is 2); what trains by default is
exactly torch's parameters (names and count, `irkit inspect` included); `irkit train` on an
.npz of the model's own inputs (shapes and dtypes, labels by name, `--loss output:loss`) lowers
the loss, writes an inference-mode model, keeps `--freeze`d tensors fixed, and a resumed run
is bit-identical to a straight one.

How each exporter is asked: legacy (TorchScript, opset 17) in training mode without constant
folding, so BatchNorm trains as under torch's `train()` and its weights stay torch's (folding
would fuse them into the convolutions); dynamo (opset 18+) in eval mode and unoptimized
(`optimize=False`). The dynamo exporter writes inference BatchNorm even for a train-mode
module; `irkit train` trains it on batch statistics all the same (`--batchnorm train`, the
default; tests/test_batchnorm_modes.py checks k SGD steps against torch's `model.train()`).

The dynamo exporter's default (OPTIMIZED: its optimizer on) is in the table too: round trip,
gradients, what trains and its count, the notes of `irkit inspect`, CLI training to an
inference model. What its optimizer does and what irkit does about it:

- GPT-2's tied embedding is written twice (the table for the Gather, a folded transposed copy
  for the LM head); irkit ties the copy back at import (a Transpose of the table), so the
  table's gradient is torch's wte.grad (the sum of both uses) and one tensor trains.
- BERT's position_embeddings and GPT-2's wpe, gathered at the fixed positions 0..T-1 of the
  static sequence length, become a constant of those T rows. That constant is added to
  computed embeddings, so it trains: it is exactly torch's rows 0..T-1, and its gradient is
  torch's for those rows (checked); the rows beyond T are not in the file, and a model
  exported for length T only runs at T anyway.
- BatchNorm is folded into the convolutions (ResNet, MobileNetV2): the Conv weights and new
  biases are products of the conv's and the BatchNorm's parameters and running statistics.
  They train (a convolution with frozen, merged BatchNorm), but they are not torch's
  parameters, and BatchNorm cannot train on batch statistics: what cannot hold there is
  "the trained tensors are exactly torch's parameters" and torch's gradients for the conv and
  BatchNorm parameters (FOLDED names them; the test checks that the file's own metadata, which
  `irkit inspect` prints with the fix `optimize=False`, names exactly those).
- For the same reasons no optimized row runs the freeze/resume cell: FREEZE patterns name
  torch parameters some of which are folded away, and resume does not depend on the export.

The transformer rows also check gradient checkpointing (item 6); item 2 (a legacy BERT
differentiated at batch 1, run at 4 and 7) is
test_legacy_bert_differentiated_at_batch_1_runs_at_4_and_7. Each (model, exporter) is
exported once per session.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_checks import cli
from irkit.passes.analysis import figures
from irkit.passes.checkpoint_activations import RECOMPUTE
from irkit.runtimes.memory import measure_peak
from irkit.runtimes.onnxruntime import make_session

from irkit.onnx_io import load, to_onnx
from irkit.train.loading import load_model
from irkit.train.sources import choose_trainable

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
tm = pytest.importorskip("tests.torch_models")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from bench_checkpoint import step_feeds  # noqa: E402
from bench_checkpoint_table import step_graph  # noqa: E402

EXPORTERS = ("dynamo", "legacy")
CELLS = [pytest.param(kind, exporter, id=f"{kind}-{exporter}")
         for kind in tm.KINDS for exporter in EXPORTERS]
# the dynamo exporter's default (its optimizer on): round trip, gradients of the torch
# parameters the file still holds, what trains; FOLDED are those the optimizer folded away
OPTIMIZED = [pytest.param(kind, "optimized", id=f"{kind}-optimized") for kind in tm.KINDS]
FOLDED = {"resnet": r"net\.(conv1|bn1|layers\..*)\.(weight|bias)",
          "mobilenet": r"net\.(stem|blocks|head)\..*",
          "bert": r"net\.bert\.embeddings\.position_embeddings\.weight",
          "gpt2": r"net\.transformer\.wpe\.weight", "vit": "(?!)"}
FREEZE = {"resnet": "net.conv1.*", "mobilenet": "net.stem.*", "vit": "net.patch.*",
          "bert": "net.bert.embeddings.word_embeddings.*", "gpt2": "net.transformer.wpe.*"}


@dataclass
class Cell:
    """One (model, exporter) of the table: the torch module, its export and what maps them."""

    kind: str
    exporter: str
    module: torch.nn.Module
    rows: dict[str, np.ndarray]          # 7 rows of the model's own inputs
    path: str
    pieces: dict[str, list] = field(default_factory=dict)  # torch parameter -> initializers
    folded_rows: dict[str, str] = field(default_factory=dict)  # parameter -> its rows folded
    grad_path: str | None = None  # `irkit grad` of the loss for every parameter, once made

    def grad_model(self) -> str:
        """The path of `irkit grad --of loss --wrt <every parameter's initializers>`."""
        if self.grad_path is None:
            wrt = sorted({n for pieces in self.pieces.values() for n, _ in pieces}
                         | set(self.folded_rows.values()))
            out = self.path.replace(".onnx", ".grad.onnx")
            result = cli("grad", self.path, "--of", "loss", "--wrt", ",".join(wrt), "-o", out)
            assert result.exit_code == 0, result.output
            self.grad_path = out
        return self.grad_path

    @property
    def training(self) -> bool:
        return self.exporter == "legacy"

    def inputs(self, batch: int) -> dict[str, np.ndarray]:
        return {k: v[:batch] for k, v in self.rows.items()}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """cell(kind, exporter) -> Cell, each exported once for this module."""
    folder, cells = tmp_path_factory.mktemp("table"), {}

    def cell(kind: str, exporter: str) -> Cell:
        if (kind, exporter) not in cells:
            if kind in ("bert", "gpt2"):
                pytest.importorskip("transformers")
            module, rows = tm.make(kind, batch=7, dropout=0.0)
            path = str(folder / f"{kind}-{exporter}.onnx")
            legacy = exporter == "legacy"
            tm.export(module, {k: v[:2] for k, v in rows.items()}, path, dynamo=not legacy,
                      training=legacy, optimize=exporter == "optimized")
            c = Cell(kind, exporter, module, rows, path)
            inits = {n: v.const for n, v in load(path).initializers.items()}
            c.pieces = tm.parameters_in(module, inits)
            c.folded_rows = _rows_in(module, inits) if exporter == "optimized" else {}
            cells[kind, exporter] = c
        return cells[kind, exporter]
    return cell


def _rows_in(module, initializers: dict[str, np.ndarray]) -> dict[str, str]:
    """torch parameter -> the initializer holding its rows 0..SEQ-1 as (1, SEQ, D): a position
    embedding the optimizer folded into the rows a static sequence length reads."""
    found = {}
    for pname, param in module.named_parameters():
        rows = param.detach().numpy()[None, :tm.SEQ]
        for name, a in initializers.items():
            if param.ndim == 2 and a.shape == rows.shape and np.array_equal(a, rows):
                found[pname] = name
    return found


def _run(path: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


@pytest.mark.parametrize("kind, exporter", CELLS + OPTIMIZED)
def test_round_trip_runs_as_the_original(table, tmp_path, kind, exporter):
    c = table(kind, exporter)
    out = tmp_path / "rt.onnx"
    result = cli("export", c.path, "-o", out)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    for batch in (1, 4):
        want, got = _run(c.path, c.inputs(batch)), _run(str(out), c.inputs(batch))
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, exporter", CELLS)
def test_what_trains_is_exactly_torchs_parameters(table, kind, exporter):
    c = table(kind, exporter)
    params = dict(c.module.named_parameters())
    assert sorted(c.pieces) == sorted(params), "torch parameters missing from the export"
    graph = load(c.path)
    want = {n for pieces in c.pieces.values() for n, _ in pieces}
    assert set(choose_trainable(graph)) == want
    count = sum(p.numel() for p in params.values())
    result = cli("inspect", c.path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["parameters"] == count and info["notes"] == []  # nothing folded or untied
    assert load_model(c.path).count_params() == count


@pytest.mark.parametrize("kind, exporter", CELLS + OPTIMIZED)
def test_grad_equals_torch_autograd_at_batch_1_and_4(table, kind, exporter):
    c = table(kind, exporter)
    missing = {n for n, _ in c.module.named_parameters() if n not in c.pieces}
    folded = {n for n in missing if re.fullmatch(FOLDED[kind], n)}
    assert missing == (folded if exporter == "optimized" else set()), sorted(missing)
    for batch in (1, 4):
        feeds = c.inputs(batch)
        got = _run(c.grad_model(), feeds)
        want = _assert_torch_gradients(c.module, c.pieces, feeds, got, c.training)
        for pname, name in c.folded_rows.items():  # a folded position embedding's rows: torch's
            true = want[pname][:tm.SEQ]
            error = np.abs(got[f"{name}_grad"][0] - true).max()
            assert error <= 1e-4 * np.abs(true).max(), f"batch {batch}, {pname}: {error:.3g}"


def _assert_torch_gradients(module, pieces: dict, feeds: dict, got: dict,
                            training: bool) -> dict[str, np.ndarray]:
    """irkit's loss and gradients (`got`) are torch autograd's on `feeds`: per parameter within
    1e-4 of its largest entry, or of the largest gradient of all where its own is zero (but
    for float32 noise: a conv bias before BatchNorm, attention's key bias); torch's
    gradients."""
    loss, want = tm.torch_gradients(module, feeds, training=training)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5, atol=1e-6)
    largest = max(np.abs(w).max() for w in want.values())
    batch = len(next(iter(feeds.values())))
    for pname, ps in pieces.items():
        grad = tm.gradient_of(ps, got)
        true = want.get(pname, np.zeros_like(grad))
        scale = np.abs(true).max()
        if scale <= 1e-6 * largest:
            scale = largest
        error = np.abs(grad - true).max()
        assert error <= 1e-4 * scale, f"batch {batch}, {pname}: {error:.3g} > {scale:.3g}e-4"
    return want


def _learnable(kind: str, rows: dict[str, np.ndarray], n: int = 48) -> dict[str, np.ndarray]:
    """`n` rows of the model's own inputs (shapes, dtypes, names) with a pattern to learn: the
    class is the bright channel (images), whether token 5 occurs (BERT), the next id is id + 1
    (GPT-2)."""
    rng = np.random.default_rng(1)
    shape = lambda k: (n, *rows[k].shape[1:])  # noqa: E731
    if kind in tm.VISION:
        labels = rng.integers(0, tm.CLASSES, n)
        x = (0.3 * rng.standard_normal(shape("x"))).astype(np.float32)
        x[np.arange(n), labels] += 1.0
        return {"x": x, "labels": labels}
    if kind == "gpt2":
        return {"input_ids": (np.arange(tm.SEQ)[None] + rng.integers(0, tm.VOCAB, (n, 1)))
                % tm.VOCAB}
    ids = rng.integers(6, tm.VOCAB, shape("input_ids"))
    mask = (np.arange(tm.SEQ)[None] < rng.integers(3, tm.SEQ + 1, (n, 1))).astype(np.int64)
    labels = rng.integers(0, 2, n)
    ids[labels == 1, 0] = 5
    ids[mask == 0] = 0  # the pad token
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _train(*args, notes: bool = False) -> dict | tuple[dict, list[str]]:
    """The history of `irkit train` (and its notes, with `notes`)."""
    result = cli("train", *args, "--loss", "output:loss", "--optimizer", "adam", "--lr", "0.01",
                 "--batch-size", "8", "--keep-last", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    return (found["history"], found["notes"]) if notes else found["history"]


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _assert_inference_mode(path, c: Cell) -> None:
    """No training-mode BatchNorm or Dropout is left, and the loss of 4 rows at once is the
    mean of their losses one at a time (training-mode BatchNorm would make them differ)."""
    for node in onnx.load(str(path)).graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("training_mode", 0) == 0, node.name
        assert node.op_type != "BatchNormalization" or len(node.output) == 1, node.name
    feeds = c.inputs(4)
    whole = _run(str(path), feeds)["loss"]
    one = np.mean([_run(str(path), {k: v[i:i + 1] for k, v in feeds.items()})["loss"]
                   for i in range(4)])
    np.testing.assert_allclose(whole, one, rtol=1e-5)


@pytest.mark.parametrize("kind, exporter", CELLS)
def test_cli_trains_freezes_resumes_and_writes_an_inference_model(table, tmp_path, kind,
                                                                   exporter):
    c = table(kind, exporter)
    np.savez(tmp_path / "d.npz", **_learnable(kind, c.rows))
    data, frozen = ["--data", tmp_path / "d.npz"], FREEZE[kind]
    straight = _train(c.path, *data, "-o", tmp_path / "a.onnx", "--epochs", "2",
                      "--freeze", frozen)
    assert straight["loss"][-1] < straight["loss"][0], straight["loss"]
    _assert_inference_mode(tmp_path / "a.onnx", c)
    before, after = _weights(c.path), _weights(tmp_path / "a.onnx")
    names = {n for pieces in c.pieces.values() for n, _ in pieces}
    fixed = {n for n in names if fnmatch.fnmatchcase(n, frozen)}
    assert fixed, f"--freeze {frozen} matches no parameter"
    for name in names:
        assert np.array_equal(before[name], after[name]) == (name in fixed), name
    _train(c.path, *data, "-o", tmp_path / "b.onnx", "--epochs", "1", "--freeze", frozen,
           "--save-training", tmp_path / "t.onnx")
    resumed = _train(tmp_path / "t.onnx", *data, "-o", tmp_path / "c.onnx", "--epochs", "1")
    assert resumed["loss"] == straight["loss"]
    resumed_weights = _weights(tmp_path / "c.onnx")
    assert all(np.array_equal(resumed_weights[n], after[n]) for n in names)


def _replacements(c: Cell) -> set[str]:
    """What trains in place of the parameters an optimized export folded: the folded
    convolutions' weights and biases (BatchNorm inside), a position embedding's rows."""
    graph = load(c.path)
    convs = {v.name for n in graph.nodes if n.op_type == "Conv" for v in n.inputs[1:]
             if v is not None and v.name in graph.initializers}
    return convs | set(c.folded_rows.values())


@pytest.mark.parametrize("kind, exporter", OPTIMIZED)
def test_an_optimized_export_trains_what_holds_torchs_parameters(table, tmp_path, kind,
                                                                 exporter):
    """The exporter's default: what trains is torch's parameters the file still holds (a tied
    table once) and what holds the folded ones; inspect names what was folded, by the file's
    own metadata, and the fix; `irkit train` lowers the loss, writes an inference model, and
    trains a tied table as one tensor."""
    c = table(kind, exporter)
    folded = sorted(n for n, _ in c.module.named_parameters() if n not in c.pieces)
    want = {n for pieces in c.pieces.values() for n, _ in pieces} | _replacements(c)
    assert set(choose_trainable(load(c.path))) == want
    graph = load(c.path)
    count = sum(graph.initializers[n].const.size for n in want)
    info = json.loads(cli("inspect", c.path, "--json").stdout)
    assert info["parameters"] == count == load_model(c.path).count_params()
    notes = {n.split(":")[0]: n for n in info["notes"]}
    assert ("folded" in notes) == bool(folded)
    if folded:  # what the file's metadata says is what is missing by value
        assert sorted(json.loads(graph.metadata["irkit.folded"])) == folded
        assert f"folded {len(folded)} torch parameter" in notes["folded"]
        assert "optimize=False" in notes["folded"]
    tied = c.pieces.get("net.transformer.wte.weight", [])  # GPT-2's table: one tensor now
    assert ("tied" in notes) == (kind == "gpt2") == (len(tied) == 1)
    np.savez(tmp_path / "d.npz", **_learnable(kind, c.rows))
    history, said = _train(c.path, "--data", tmp_path / "d.npz", "-o", tmp_path / "a.onnx",
                           "--epochs", "2", notes=True)
    assert said == info["notes"]  # irkit train prints the notes inspect prints
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    _assert_inference_mode(tmp_path / "a.onnx", c)
    before, after = _weights(c.path), _weights(tmp_path / "a.onnx")
    for name, _ in tied:  # one tensor trained; the head reads its Transpose, no copy
        assert not np.array_equal(before[name], after[name])
        assert not any(np.array_equal(a, after[name].T) for a in after.values())


def test_legacy_bert_differentiated_at_batch_1_runs_at_4_and_7(tmp_path):
    """Item 2: BERT's default position ids are a (1, T) buffer sliced to the sequence length,
    so the sliced value has unknown dims; exported (legacy, constant folding, eval) at batch 1
    and differentiated there, the gradient graph runs at batch 4 and 7 and equals torch's,
    without position_ids passed."""
    pytest.importorskip("transformers")
    module, rows = tm.make("bert", batch=7)
    path = str(tmp_path / "bert.onnx")
    tm.export(module, {k: v[:1] for k, v in rows.items()}, path, dynamo=False)
    assert [i.name for i in onnx.load(path).graph.input] == list(rows)  # no position_ids
    inits = {n: v.const for n, v in load(path).initializers.items()}
    pieces = tm.parameters_in(module, inits)
    wrt = sorted({n for ps in pieces.values() for n, _ in ps})
    out = tmp_path / "grad.onnx"
    result = cli("grad", path, "--of", "loss", "--wrt", ",".join(wrt), "-o", out)
    assert result.exit_code == 0, result.output
    for batch in (1, 4, 7):
        feeds = {k: v[:batch] for k, v in rows.items()}
        _assert_torch_gradients(module, pieces, feeds, _run(str(out), feeds), training=False)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="measuring memory needs Linux /proc")
@pytest.mark.parametrize("kind, exporter", [p for p in CELLS if p.values[0] not in tm.VISION[:2]])
def test_checkpointing_the_transformers_keeps_the_step_and_lowers_the_peak(table, kind,
                                                                           exporter):
    """Item 6: the train step of each transformer row (`irkit train --loss output:loss`),
    checkpointed as `--recompute sqrt` does, recomputes activations between its layers (cut
    points beside the attention mask and shapes), computes the same loss and update (to
    float32 rounding: onnxruntime fuses the copies on their own; SGD, whose update is linear
    in the gradient) and has a measured peak at least 5% lower at batch 256. irkit's estimate
    of the bytes live (`peak_bytes`) is within 25% of those measured (onnxruntime without its
    arena: runtimes.memory, case 3), plain and checkpointed."""
    c, batch = table(kind, exporter), 256
    (plain, _), (checkpointed, count) = (step_graph(c.path, s, batch, "sgd")
                                         for s in ("none", "sqrt"))
    assert count >= 2 and any(n.name.startswith(RECOMPUTE) for n in checkpointed.nodes)
    checkpointed.verify()
    names = {v.name for v in plain.inputs}
    feeds = {**step_feeds(plain, batch),
             **{k: v for k, v in _learnable(kind, c.rows, batch).items() if k in names}}
    models = [to_onnx(g).SerializeToString() for g in (plain, checkpointed)]
    want, got = (make_session(m).run(None, feeds) for m in models)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(np.abs(a).max(), 1e-3))
    peaks = [measure_peak(m, feeds, runs=1)["steady_bytes"] for m in models]
    assert peaks[1] < 0.95 * peaks[0], peaks
    for graph, model in zip((plain, checkpointed), models):
        live = measure_peak(model, feeds, runs=1, memory_pattern=False, arena=False,
                            memory_reuse=graph is plain)  # as OrtStepRunner runs each
        estimate = figures(graph, default=batch).peak.peak_bytes
        assert 0.8 <= estimate / live["steady_bytes"] <= 1.25, (estimate, live)
