"""The lab's commands: use a trained model (evaluate, predict) and look at a run (plot).

`evaluate` and `predict` run ANY ONNX classifier or regressor on a plain onnxruntime session
(irkit.cli.predictor), not only irkit's models.
"""

from __future__ import annotations

import click

from irkit.cli.app import DEVICE, JSON_OPTION, handle_errors, main
from irkit.errors import IrkitError, escape, json_text

TASK = click.Choice(["classify", "regress"])


def _subset(x, y, split: str, predictor, val_split: float | None, seed: int | None):
    """All rows, or the validation (or training) part of the split the model was trained
    with (its recorded val_split and seed unless given)."""
    if split == "all":
        return x, y, None
    from irkit.data import train_val_split
    recorded = predictor.settings
    fraction = val_split if val_split is not None else recorded.get("val_split", 0.2)
    seed = seed if seed is not None else recorded.get("seed", 0)
    if not fraction:
        raise IrkitError("--split: the validation fraction is 0; pass --val-split")
    train, val = train_val_split(len(x), float(fraction), int(seed), y)
    rows = val if split == "val" else train
    return x[rows], y[rows], {"split": split, "val_split": fraction, "seed": seed}


@main.command()
@click.argument("model")
@click.option("--data", required=True, help="Bundled dataset (iris, digits) or a .csv/.npz "
              "file with labels.")
@click.option("--label-column", default="label", show_default=True,
              help="The CSV column holding the targets.")
@click.option("--split", type=click.Choice(["all", "val", "train"]), default="all",
              show_default=True, help="Score all rows, or the validation/training part of the "
              "split the model was trained with (its recorded --val-split and --seed).")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True),
              help="The validation fraction for --split (default: the model's).")
@click.option("--seed", type=click.IntRange(min=0), help="The split's seed (default: the "
              "model's).")
@click.option("--task", type=TASK, help="classify or regress (default: from the model).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@handle_errors
def evaluate(model: str, data: str, label_column: str, split: str, val_split: float | None,
             seed: int | None, task: str | None, device: str, as_json: bool) -> None:
    """Score an ONNX MODEL (irkit's or any classifier/regressor) on labelled data: loss,
    accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true class)."""
    from irkit.cli.predictor import OnnxPredictor, read_features
    from irkit.cli.predictor import evaluate as score
    predictor = OnnxPredictor(model, device)
    x, y, classes = read_features(data, label_column)
    if y is None:
        raise IrkitError(f"{data}: no column {label_column!r}; evaluate needs labels (predict "
                         "does not)")
    x, y, subset = _subset(x, y, split, predictor, val_split, seed)
    figures = {"model": model, "data": data, **(subset or {}),
               **score(predictor, x, y, task, classes)}
    if as_json:
        click.echo(json_text(figures, indent=2))
        return
    click.echo(_describe(_printable_names(figures)))


def _printable_names(f: dict) -> dict:
    """The figures with the names that come from files (classes, paths) escaped for a
    terminal: no ESC, CR, LF or other control character reaches it raw (irkit.errors.escape)."""
    f = {**f, "model": escape(f["model"]), "data": escape(f["data"])}
    if "classes" in f:
        f["classes"] = [escape(c) for c in f["classes"]]
        f["per_class"] = [{**c, "class": escape(c["class"])} for c in f["per_class"]]
    return f


def _describe(f: dict) -> str:
    head = f"{f['model']} on {f['data']}" + (f" ({f['split']} part)" if "split" in f else "")
    if f["task"] == "regress":
        r2 = "n/a" if f["r2"] is None else f"{f['r2']:.4f}"
        return (f"{head}: {f['samples']} samples\nmse {f['mse']:.6g}  mae {f['mae']:.6g}  "
                f"r2 {r2}")
    width = max(len(c) for c in f["classes"] + ["class"])
    lines = [f"{head}: {f['samples']} samples",
             f"loss {f['loss']:.4f}  accuracy {f['accuracy']:.4f}  macro F1 {f['macro_f1']:.4f}",
             "", f"{'class':{width}}  precision  recall      f1  support"]
    lines += [f"{c['class']:{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:6.4f}  "
              f"{c['support']:7d}" for c in f["per_class"]]
    lines += ["", "confusion (rows: true class, columns: predicted)"]
    cell = max(len(str(v)) for row in f["confusion"] for v in row) + 1
    cell = max(cell, *(len(c) + 1 for c in f["classes"]))
    lines.append(" " * width + "".join(f"{c:>{cell}}" for c in f["classes"]))
    lines += [f"{c:{width}}" + "".join(f"{v:>{cell}}" for v in row)
              for c, row in zip(f["classes"], f["confusion"])]
    return "\n".join(lines)


@main.command()
@click.argument("model")
@click.option("--data", required=True, help="Bundled dataset or a .csv/.npz file; a label "
              "column, if present, is ignored.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the predictions to OUT.csv or OUT.json (default: CSV on stdout).")
@click.option("--label-column", default="label", show_default=True,
              help="The CSV column to leave out, if present.")
@click.option("--task", type=TASK, help="classify or regress (default: from the model).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@handle_errors
def predict(model: str, data: str, output: str | None, label_column: str, task: str | None,
            device: str, as_json: bool) -> None:
    """Predict with an ONNX MODEL (irkit's or any classifier/regressor): the class (names
    from the model when it records them) and class probabilities, or the output values."""
    from irkit.cli.predictor import OnnxPredictor, read_features, write_predictions
    from irkit.cli.predictor import predict as run
    from irkit.onnx_io import check_model_outputs
    if output is not None:
        if not output.endswith((".csv", ".json")):
            raise IrkitError(f"-o {output}: name a .csv or .json file")
        check_model_outputs({"-o": output}, [model, data])
    predictor = OnnxPredictor(model, device)
    x, _, classes = read_features(data, label_column, labels=False)
    predictions = run(predictor, x, task, classes)
    if output is not None:
        write_predictions(predictions, output)
    if as_json:
        click.echo(json_text({"model": model, "data": data, "output": output,
                               "rows": int(len(x)), **predictions.to_dict()}))
    elif output is not None:
        click.echo(f"wrote {output}: {len(x)} predictions")
    else:
        click.echo(predictions.to_csv(terminal=True), nl=False)


@main.command()
@click.argument("history")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write a .png (.svg, .pdf) image (needs matplotlib); without it, a text "
              "chart.")
@click.option("--title", help="The PNG's title.")
@JSON_OPTION
@handle_errors
def plot(history: str, output: str | None, title: str | None, as_json: bool) -> None:
    """Training curves of a HISTORY file (what `irkit train --json` prints, or a checkpoint
    folder's history.json): loss and accuracy, training and validation, best epoch marked."""
    from irkit.cli.jobs import read_history
    from irkit.train.plot import plot_format, save_png, text_chart
    from irkit.train.report import overfitting_report
    doc = read_history(history)
    if output is not None:
        from irkit.safe_io import check_outputs
        plot_format(output)
        check_outputs({"-o": output}, [history])
        save_png(doc, output, title)
    report = overfitting_report(doc)
    if as_json:  # the figures, and the file when one was written (no text chart)
        click.echo(json_text({"output": output, "report": report.as_dict()}, indent=2))
        return
    if output is not None:
        click.echo(f"wrote {output}")
    else:
        for key in ("loss", "accuracy"):
            if doc["history"].get(key):
                click.echo(text_chart(doc, key) + "\n")
    click.echo(report.text)


__all__ = ["evaluate", "plot", "predict"]
