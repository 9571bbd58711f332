"""Use a trained model: predictions and figures for ANY ONNX classifier or regressor.

`OnnxPredictor` runs a model file on a plain onnxruntime session (first input, first output,
in batches; a model with a fixed batch size runs in chunks of it). Whether the model
classifies or regresses comes from irkit's metadata when the file has it (`irkit.train`'s
loss, `irkit.classes`), else from the output: one score per class (N, C) with C >= 2
classifies, anything else regresses. Softmax outputs and logits are both understood: a row
of non-negative scores that sums to 1 is read as probabilities, anything else as logits; the
predicted class is the argmax either way.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np

from irkit.errors import DataError, IrkitError, ModelFileError, escape, json_text, ort_message
from irkit.signature import META_CLASSES, META_SETTINGS
from irkit.train.scores import log_probabilities

BATCH = 1024


class OnnxPredictor:
    """An ONNX file on onnxruntime: `predictor(x)` -> the first output for each row of x."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from irkit.runtimes.onnxruntime import make_session, resolve_device
        from irkit.runtimes.ort_values import float_dtype
        detached: dict = {}  # large external weights, read into arrays (models beyond 2 GB)
        proto = _checked_proto(path, detached)  # ends with the detached weights restored
        self.path = path
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        arrays = {n: a for n, a in detached.items() if a is not None}
        try:
            self.session = make_session(proto.SerializeToString(), resolve_device(device),
                                        initializers=arrays)
        except Exception as e:  # onnxruntime's own exception types
            raise ModelFileError(f"{path}: onnxruntime cannot load the model "
                                 f"({ort_message(e)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{path}: the model has {len(inputs)} inputs "
                                 f"({', '.join(i.name for i in inputs)}); irkit feeds one")
        self.input = inputs[0]
        self.input_dtype = float_dtype(self.input.type)
        if self.input_dtype is None:
            raise ModelFileError(f"{path}: the input {self.input.name!r} is {self.input.type}; "
                                 "irkit feeds float features")
        self.output = self.session.get_outputs()[0]
        self.scores_are = _scores_are(proto, self.output.name, bool(self.settings))

    @property
    def classes(self) -> list[str] | None:
        """Class names recorded in the file (irkit.classes), or None."""
        text = self.metadata.get(META_CLASSES)
        if not text:
            return None
        if text.lstrip().startswith("["):  # a JSON list (names that hold commas)
            try:
                names = json.loads(text)
            except (json.JSONDecodeError, RecursionError):  # damaged, or nested too deeply
                return None
            return [str(n) for n in names] if isinstance(names, list) else None
        return text.split(",")

    @property
    def settings(self) -> dict:
        """The training settings recorded in the file (irkit.train), or {}."""
        from irkit.train.settings import from_json
        return from_json(self.metadata.get(META_SETTINGS))

    def _shaped(self, x: np.ndarray) -> np.ndarray:
        """x in the input's dtype and per-sample shape (flat rows are reshaped when the sizes
        agree, e.g. 64 columns for an 8x8 image input)."""
        x = np.asarray(x, dtype=self.input_dtype)
        dims = self.input.shape[1:] if self.input.shape else []
        if dims and all(isinstance(d, int) for d in dims) and tuple(x.shape[1:]) != tuple(dims):
            if int(np.prod(dims)) != int(np.prod(x.shape[1:])):
                raise DataError(f"{self.path}: the model takes samples of shape {tuple(dims)}, "
                                f"the data has {x.shape[1]} features per row")
            x = x.reshape(len(x), *dims)
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from irkit.runtimes import ort_values
        from irkit.runtimes.ort_values import float_dtype
        x = self._shaped(x)
        first = self.input.shape[0] if self.input.shape else None
        size = first if isinstance(first, int) and first > 0 else BATCH
        parts = []
        for i in range(0, len(x), size):
            chunk = x[i:i + size]
            pad = size - len(chunk) if size == first else 0
            if pad:  # a fixed batch size: fill the last chunk and drop the filler after
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            try:
                out = ort_values.run(self.session, [self.output.name],
                                     {self.input.name: chunk})[0]
            except Exception as e:
                raise DataError(f"{self.path}: onnxruntime could not run the model on the data "
                                f"({ort_message(e)})") from None
            parts.append(out[:len(out) - pad])
        if not parts:
            raise DataError("the data has no rows")
        out = np.concatenate(parts)
        if ort_values.newer_type(out.dtype) and float_dtype(self.output.type) is not None:
            # bfloat16, float8, float4 scores: float32 holds every value exactly
            out = out.astype(np.float32)
        return self._finite(out, x)

    def _finite(self, out: np.ndarray, x: np.ndarray) -> np.ndarray:
        """`out`, unless a row of it is NaN or infinite (a prediction, and a score, that would
        be nonsense): DataError naming the row."""
        if out.dtype.kind in "fc" and not np.isfinite(out).all():
            bad = ~np.isfinite(out.reshape(len(out), -1))
            row = int(np.nonzero(bad.any(axis=1))[0][0])
            big = float(np.abs(x[row]).max()) if x[row].size else 0.0
            raise DataError(f"{self.path}: the model's output for row {row + 1} is NaN or "
                            f"infinite (its largest feature is {big:.3g}); scale the data as "
                            "the model was trained, or check the model")
        return out


def _checked_proto(path: str, detached: dict | None = None):
    """The model file, read within the caps and checked as irkit checks every file it imports
    (structure, tensors, attributes, onnx's node schemas and shape inference, the sizes
    running it would make) before onnxruntime sees it; a ModelFileError that names the file.
    `detached`: see load_proto; the proto returned has them as initializers again, their data
    external in a file that is never read (for add_external_initializers)."""
    from irkit.onnx_io import load_proto
    proto = load_proto(path, detached=detached)  # the caps that need no onnx import come first
    from irkit.onnx_io import check_run_sizes, check_schemas, restore_detached, validate_model
    try:
        validate_model(proto)
        check_schemas(proto)
        restore_detached(proto, detached or {})  # initializers again (data kept apart)
        check_run_sizes(proto)
    except IrkitError as e:
        raise type(e)(f"{path}: {e}") from None
    return proto


def _scores_are(proto, output: str, from_irkit: bool) -> str | None:
    """'probabilities' when the output comes out of a Softmax or Sigmoid, 'logits' when out
    of anything else in a model irkit trained (its losses take logits); None: look at the
    values."""
    producer = next((n for n in proto.graph.node if output in n.output), None)
    if producer is not None and producer.op_type in ("Softmax", "Sigmoid"):
        return "probabilities"
    return "logits" if from_irkit else None


def task_of(predictor: OnnxPredictor, scores: np.ndarray, y: np.ndarray | None = None) -> str:
    """'classify' or 'regress' (see the module docstring)."""
    loss = predictor.settings.get("loss")
    if loss is not None:
        from irkit.train.losses import loss_names
        return "classify" if loss in loss_names(classification=True) else "regress"
    if predictor.classes:
        return "classify"
    if scores.ndim == 2 and scores.shape[1] >= 2:
        if y is not None and y.dtype.kind == "f" and not np.all(y == np.round(y)):
            return "regress"
        return "classify"
    return "regress"


@dataclass
class Predictions:
    """What `predict` returns: per-row classes (and probabilities) or output values."""

    task: str
    outputs: np.ndarray                    # the model's first output, as it gave it
    labels: np.ndarray | None = None       # predicted class index (classify)
    probabilities: np.ndarray | None = None
    classes: list[str] | None = None
    scores_are: str | None = None          # probabilities or logits

    def rows(self) -> tuple[list[str], list[list]]:
        """A header and rows for a CSV file."""
        if self.task == "classify":
            header = ["class", "label"] + [f"prob_{c}" for c in self.classes]
            return header, [[self.classes[k], int(k), *map(float, p)]
                            for k, p in zip(self.labels, self.probabilities)]
        out = self.outputs.reshape(len(self.outputs), -1)
        header = ["output"] if out.shape[1] == 1 else [f"output_{i}" for i in range(
            out.shape[1])]
        return header, [list(map(float, r)) for r in out]

    def to_dict(self) -> dict:
        if self.task == "classify":
            return {"task": self.task, "classes": self.classes, "scores_are": self.scores_are,
                    "predicted": [self.classes[k] for k in self.labels],
                    "labels": [int(k) for k in self.labels],
                    "probabilities": self.probabilities.round(6).tolist(),
                    # the model's own outputs, as Python's Model.predict(x) returns them
                    "outputs": self.outputs.reshape(len(self.outputs), -1).tolist()}
        return {"task": self.task, "outputs": self.outputs.reshape(
            len(self.outputs), -1).tolist()}

    def to_csv(self, terminal: bool = False) -> str:
        """The rows as CSV (the csv module quotes commas, quotes and newlines); a text cell
        that a spreadsheet would run as a formula (= + - @ tab CR first) gets a leading '
        (OWASP's rule against CSV injection): class names come from files. For a terminal
        (`terminal`: printed on stdout) every non-printable character of a text cell (ESC,
        CR, LF, BEL, ...) is written as an escape, so a name cannot drive the terminal."""
        import csv
        header, rows = self.rows()
        out = io.StringIO()
        plain = csv.writer(out, lineterminator="\n")
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for row in [header, *rows]:
            cells = [f"{v:.6g}" if isinstance(v, float) else _cell(v, terminal) for v in row]
            # the csv module quotes a cell holding LF (the line terminator) but not one
            # holding a lone CR, which readers take as a line break: such a row is all quoted
            (quoted if any("\r" in c for c in cells) else plain).writerow(cells)
        return out.getvalue()


def _cell(value, terminal: bool = False) -> str:
    text = escape(value) if terminal else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _class_names(predictor: OnnxPredictor, width: int,
                 data_classes: list[str] | None = None) -> list[str]:
    for names in (predictor.classes, data_classes):
        if names and len(names) == width:
            return list(names)
    return [str(i) for i in range(width)]


def predict(predictor: OnnxPredictor, x: np.ndarray, task: str | None = None,
            data_classes: list[str] | None = None) -> Predictions:
    """Run the model on x; classes (argmax) and probabilities for a classifier."""
    scores = predictor(x)
    return predict_from_scores(predictor, scores, task or task_of(predictor, scores),
                               data_classes)


def predict_from_scores(predictor: OnnxPredictor, scores: np.ndarray, task: str,
                        data_classes: list[str] | None = None) -> Predictions:
    """Predictions from the model's outputs `scores` for `task` (classify or regress)."""
    if task == "regress":
        return Predictions(task, scores)
    logp, kind = log_probabilities(scores, predictor.scores_are)
    width = logp.shape[1]
    return Predictions(task, scores, logp.argmax(axis=1), np.exp(logp),
                       _class_names(predictor, width, data_classes), kind)


def read_features(source: str, label_column: str = "label", labels: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Features, labels and class names of a bundled dataset or a .csv/.csv.gz/.npz file.
    A CSV without the label column, or any CSV when `labels` is False, gives features only
    (the label column, if present, is left out unread: it may hold names)."""
    from irkit.data import BUNDLED, load_dataset
    if source in BUNDLED or source.endswith(".npz") or not os.path.exists(source):
        ds = load_dataset(source, label_column=label_column)
        return ds.x, ds.y, ds.classes
    from irkit.data.files import read_text
    text = read_text(source)
    header = [h.strip() for h in text.split("\n", 1)[0].split(",")]
    if label_column in header and labels:
        ds = load_dataset(source, label_column=label_column)
        return ds.x, ds.y, ds.classes
    columns = [i for i, h in enumerate(header) if h != label_column]
    guess = _label_guess(text, header, columns)
    if labels and guess is not None:
        raise DataError(f"{source}: no column {label_column!r} in the header; if {guess!r} "
                        f"holds the labels, pass --label-column {guess}")
    try:
        x = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2, skiprows=1,
                       usecols=columns)
    except ValueError as e:
        hint = f" (if {guess!r} holds the labels, pass --label-column {guess})" if guess else ""
        raise DataError(f"{source}: {str(e).splitlines()[0]}; every feature cell must be a "
                        f"number{hint}") from None
    if not np.isfinite(x).all():
        raise DataError(f"{source}: NaN or inf in the features; clean the data first")
    x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        row, column = (int(i[0]) for i in np.nonzero(~np.isfinite(x32)))
        raise DataError(f"{source}: row {row + 1}, feature {column + 1}: {x[row, column]:g} is "
                        "beyond float32's range (about 3.4e38); scale the data first")
    return x32, None, None


def _label_guess(text: str, header: list[str], columns: list[int]) -> str | None:
    """The column that looks like labels in a CSV without the label column: the first whose
    cell in the first data row is not a number (class names), else None."""
    lines = text.split("\n", 2)
    cells = lines[1].split(",") if len(lines) > 1 else []
    for i in columns:
        if i < len(cells) and i < len(header):
            try:
                float(cells[i].strip().strip('"'))
            except ValueError:
                return header[i]
    return None


def write_predictions(predictions: Predictions, path: str) -> None:
    """Write predictions as CSV or JSON (by the file's suffix), atomically."""
    from irkit.safe_io import write_atomic
    if path.endswith(".json"):
        write_atomic(path, json_text(predictions.to_dict(), indent=1).encode())
    else:
        write_atomic(path, predictions.to_csv().encode())


def _model_labels(y: np.ndarray, classes: list[str], data_classes: list[str] | None
                  ) -> np.ndarray:
    """Integer labels in the model's class order (data class names mapped by name when the
    data's own order differs), checked against the number of classes."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == len(classes) and len(classes) > 1:
        y = y.argmax(axis=1)  # one-hot targets
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise DataError("the model classifies, the data's targets are not class labels; pass "
                        "--task regress for a regressor")
    y = y.astype(np.int64).reshape(-1)
    if data_classes and data_classes != classes and set(data_classes) <= set(classes):
        y = np.array([classes.index(data_classes[k]) for k in y], np.int64)
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        bad = int(y.max()) if y.max() >= len(classes) else int(y.min())
        raise DataError(f"label {bad} is out of range for the model's {len(classes)} classes")
    return y


def classification_figures(pred: Predictions, y: np.ndarray,
                           data_classes: list[str] | None = None) -> dict:
    """Loss (cross-entropy), accuracy, per-class precision/recall/F1 and the confusion
    matrix (rows: true class, columns: predicted)."""
    classes = pred.classes
    y = _model_labels(y, classes, data_classes)
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, pred.labels), 1)
    # probabilities of 1 (saturated scores) give a loss of 0.0, never -0.0 or below
    logp = np.log(np.clip(pred.probabilities[np.arange(len(y)), y], 1e-300, 1.0))
    per_class = []
    for i, name in enumerate(classes):
        tp, predicted, actual = confusion[i, i], confusion[:, i].sum(), confusion[i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": name, "precision": float(precision), "recall": float(recall),
                          "f1": float(f1), "support": int(actual)})
    return {"task": "classify", "samples": int(len(y)), "loss": max(0.0, float(-logp.mean())),
            "accuracy": float(np.trace(confusion) / max(len(y), 1)),
            "macro_f1": float(np.mean([c["f1"] for c in per_class])),
            "scores_are": pred.scores_are, "classes": classes, "per_class": per_class,
            "confusion": confusion.tolist()}


def regression_figures(pred: Predictions, y: np.ndarray) -> dict:
    """Mean squared error (the loss), mean absolute error and R^2."""
    out = pred.outputs.reshape(len(pred.outputs), -1).astype(np.float64)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if y.shape != out.shape:
        raise DataError(f"the model gives {out.shape[1]} values per row, the data's targets "
                        f"have {y.shape[1]}")
    err = out - y
    total = ((y - y.mean(axis=0)) ** 2).sum()
    return {"task": "regress", "samples": int(len(y)), "loss": float((err ** 2).mean()),
            "mse": float((err ** 2).mean()), "mae": float(np.abs(err).mean()),
            "r2": float(1 - (err ** 2).sum() / total) if total else None}


def evaluate(predictor: OnnxPredictor, x: np.ndarray, y: np.ndarray, task: str | None = None,
             data_classes: list[str] | None = None) -> dict:
    """The figures of `predictor` on (x, y): classification or regression (see above)."""
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} rows, y has {len(y)}; they must match")
    scores = predictor(x)
    task = task or task_of(predictor, scores, np.asarray(y))
    pred = predict_from_scores(predictor, scores, task, data_classes)
    if task == "regress":
        return regression_figures(pred, y)
    return classification_figures(pred, y, data_classes)
