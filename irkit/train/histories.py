"""What a history document must hold before irkit charts, judges or resumes it.

A history comes from `History.to_dict()`, `irkit train --json`, a checkpoint folder's
history.json or a training file's metadata: files from strangers, so every figure is checked
once, here (`checked_history`), and non-finite figures become NaN, a gap in the curves.
"""

from __future__ import annotations

import math
from typing import Any

from irkit.errors import DataError, escape, printable


def _figure(value: Any, where: str) -> float:
    """A number of a history (null, NaN and infinities: NaN, a gap in the curves)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where} is {escape(repr(value)[:40])}, not a number; a history "
                        "holds numbers (or null) only")
    value = float(value)
    return value if math.isfinite(value) else math.nan


def checked_history(doc: Any, where: str = "the history") -> dict:
    """A history document (`History.to_dict()`, `irkit train --json`, a history.json) with its
    figures checked, as a new dict: `history` maps names to lists of numbers (null, NaN and
    infinities become NaN: gaps), `best_epoch` is an epoch of the run or null, `best_value` a
    number or null, `monitor` a name, `start_loss` (the starting weights' loss) a number or
    null. A DataError names `where`, the key and the epoch."""
    if not isinstance(doc, dict) or not isinstance(doc.get("history", {}), dict):
        raise DataError(f"{where}: no `history` object of figures (irkit train --json writes one)")
    curves = {}
    for key, values in doc.get("history", {}).items():
        name = f"{where}: {printable(key)}"
        if not isinstance(values, list):
            raise DataError(f"{name} is not a list of per-epoch numbers")
        curves[str(key)] = [_figure(v, f"{name}, epoch {i + 1},") for i, v in enumerate(values)]
    epochs = max(map(len, curves.values()), default=0)
    best, value = doc.get("best_epoch"), doc.get("best_value")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int)
                             or not 1 <= best <= epochs):
        raise DataError(f"{where}: best_epoch {escape(repr(best)[:40])} is no epoch of the run "
                        f"(1 to {epochs}) nor null")
    monitor = doc.get("monitor", "val_loss")
    if not isinstance(monitor, str):
        raise DataError(f"{where}: monitor {escape(repr(monitor)[:40])} is not a figure's name")
    value = _figure(value, f"{where}: best_value")  # NaN: none recorded
    start = _figure(doc.get("start_loss"), f"{where}: start_loss")
    return {**doc, "history": curves, "best_epoch": best,
            "best_value": None if math.isnan(value) else value, "monitor": monitor,
            "start_loss": None if math.isnan(start) else start}


__all__ = ["checked_history"]
