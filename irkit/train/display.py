"""How a Model and a History look: the summary table, short reprs, and the rich displays
Jupyter shows (`_repr_html_`): a Model's summary as a table, a History's curves as a picture
with its last epochs as a table.

The functions read the objects through their public attributes, so this module imports
neither the model nor the trainer.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from irkit.errors import IrkitError

HISTORY_ROWS = 5  # the last epochs a History's table shows


def summary_rows(model: Any) -> list[tuple[str, str, int, bool]]:
    """(name, shape, count, trainable) per weight of `model`."""
    weights = model.source.weights()
    trainable = set(model.source.trainable())
    return [(n, "x".join(map(str, w.shape)) or "scalar", int(np.size(w)), n in trainable)
            for n, w in weights.items()]


def _totals(rows) -> str:
    total = sum(r[2] for r in rows)
    n_train = sum(r[2] for r in rows if r[3])
    return f"total {total} weights: {n_train} trainable, {total - n_train} fixed"


def summary_text(model: Any) -> str:
    """The summary table as text: a line per weight, then the totals."""
    rows = summary_rows(model)
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f'Model "{model.name}"', f"{'weight':{width}}  {'shape':>14}  {'count':>9}  "
             "trainable"]
    lines += [f"{n:{width}}  {s:>14}  {c:>9}  {'yes' if t else 'no'}" for n, s, c, t in rows]
    return "\n".join(lines + [_totals(rows)])


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rows_or_none(model: Any):
    try:
        return summary_rows(model)
    except IrkitError:  # not built yet: the input shape comes with fit (or input_shape=)
        return None


def model_repr(model: Any) -> str:
    """One line: name, weights, how it is compiled."""
    rows = _rows_or_none(model)
    total = sum(r[2] for r in rows) if rows is not None else 0
    weights = (f"{len(rows)} weights ({total} numbers)" if rows is not None else
               "not built (the input shape comes with fit, or pass input_shape=)")
    s = model.settings
    how = f"{s.optimizer}, {s.loss}, lr {s.lr:g}" if model._compiled else "not compiled"
    return f'<irkit.Model "{model.name}": {weights}; {how}>'


def model_html(model: Any) -> str:
    """The summary as an HTML table, with the totals and the training state."""
    rows = _rows_or_none(model)
    if rows is None:
        return f"<div>{html.escape(model_repr(model))}</div>"
    table = _table(["weight", "shape", "count", "trainable"],
                   [[n, s, c, "yes" if t else "no"] for n, s, c, t in rows])
    state = html.escape(model_repr(model).split("; ", 1)[1].rstrip(">"))
    trained = f"; trained {model.history.epochs} epochs" if model.history else ""
    return (f"<div><b>irkit.Model {html.escape(repr(model.name))}</b> "
            f"({state}{trained})<br>{table}{html.escape(_totals(rows))}</div>")


def history_repr(history: Any) -> str:
    """One line: epochs, the last figures, the best epoch."""
    last = "  ".join(f"{k} {v[-1]:.4g}" for k, v in history.history.items() if v)
    best = (f"; best epoch {history.best_epoch} ({history.monitor} "
            f"{history.best_value:.4g})" if history.best_epoch is not None else "")
    return f"<irkit History: {history.epochs} epochs; last: {last}{best}>"


def history_html(history: Any) -> str:
    """The curves as an embedded PNG (when matplotlib is there) and the last epochs' table."""
    if not history.epochs:
        return "<div>irkit History: no epochs</div>"
    keys = list(history.history)
    first = max(history.epochs - HISTORY_ROWS, 0)
    rows = [[e + 1] + [f"{history.history[k][e]:.4f}" for k in keys]
            for e in range(first, history.epochs)]
    picture = ""
    try:
        from irkit.train.plot import plot_png
        png = base64.b64encode(plot_png(history)).decode("ascii")
        picture = f"<img src='data:image/png;base64,{png}' alt='training curves'><br>"
    except Exception:  # noqa: BLE001 - a display falls back to the table, never fails
        picture = ""
    return (f"<div>{picture}{html.escape(history_repr(history))}"
            f"{_table(['epoch'] + keys, rows)}</div>")
