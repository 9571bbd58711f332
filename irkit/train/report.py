"""The closing report of a training run: did the model overfit, and which epoch was kept.

    validation loss bottomed at epoch 12 (0.0612) and rose 41% by epoch 40: the model
    overfits; kept epoch 12

The report reads a history (a `History`, its `to_dict()`, or the JSON that `irkit train
--json` prints) and says one of: the model overfits (validation loss rose more than
`RISE_THRESHOLD` above its minimum by the last epoch while training loss went lower still),
training is unstable (both rose), it stopped early, it is still improving, or it did not
overfit; and which epoch's weights the model holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# validation loss this fraction above its minimum at the last epoch counts as overfitting,
# when the rise is sustained (this many epochs after the minimum) or large against what the
# run gained before the minimum (a wiggle of a tiny loss in the last epoch is noise)
RISE_THRESHOLD = 0.05
SUSTAINED_EPOCHS = 3
# another epoch's validation accuracy this much above the kept epoch's is worth a note
ACCURACY_NOTE = 0.01


@dataclass(frozen=True)
class OverfittingReport:
    """What `overfitting_report` found; `text` is the one-line summary."""

    overfits: bool
    curve: str                  # the curve judged: val_loss, or loss without validation data
    lowest_epoch: int | None    # 1-based epoch of the curve's minimum
    lowest: float | None
    last_epoch: int
    rise: float | None          # (last - lowest) / lowest
    stopped_early: int | None   # the epoch training stopped at, if before the planned end
    kept_epoch: int | None      # whose weights the model holds
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _figures(history: Any) -> tuple[dict[str, list[float]], int | None, str]:
    """The checked curves (irkit.train.trainer.checked_history), best epoch and monitor."""
    from irkit.train.trainer import checked_history
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if isinstance(history, dict) and "history" not in history:
        history = {"history": history}  # the curves alone
    doc = checked_history(history)
    return doc["history"], doc["best_epoch"], doc["monitor"]


def _kept(best: int | None, last: int, keep_best: bool, monitor: str) -> tuple[int, str]:
    if keep_best and best is not None:
        why = "" if monitor == "val_loss" else f" (best {monitor})"
        return best, f"kept epoch {best}{why}"
    return last, f"kept the last epoch ({last})"


def _better_accuracy(curves: dict, kept: int | None, monitor: str) -> str:
    """A note when another epoch had clearly higher validation accuracy than the kept one
    (the lowest loss and the highest accuracy need not fall on the same epoch)."""
    acc = curves.get("val_accuracy")
    if not acc or kept is None or monitor == "val_accuracy" or kept > len(acc) \
            or not math.isfinite(acc[kept - 1]):
        return ""
    top = max((i for i in range(len(acc)) if math.isfinite(acc[i])), key=acc.__getitem__)
    if acc[top] - acc[kept - 1] < ACCURACY_NOTE:
        return ""
    return (f"; epoch {top + 1} had higher validation accuracy ({acc[top]:.4f} vs "
            f"{acc[kept - 1]:.4f}): --monitor val_accuracy keeps that one")


def _verdict(name: str, low_epoch: int, lowest: float, last: int, rise: float,
             overfits: bool, unstable: bool, kept_text: str) -> str:
    what = "validation loss" if name == "val_loss" else "training loss (no validation data)"
    head = f"{what} bottomed at epoch {low_epoch} ({lowest:.4g})"
    if overfits:
        return (f"{head} and rose {100 * rise:.0f}% by epoch {last}: the model overfits; "
                f"{kept_text}")
    if unstable:
        return (f"{head} and rose {100 * rise:.0f}% by epoch {last}, training loss too: "
                f"unstable training (try a lower learning rate); {kept_text}")
    if low_epoch == last:
        return f"{what} was still falling at epoch {last}: no overfitting; more epochs may help"
    return (f"{head} and was {100 * rise:.0f}% above it at epoch {last}: no clear "
            f"overfitting; {kept_text}")


def overfitting_report(history: Any, epochs_planned: int | None = None,
                       keep_best: bool = True) -> OverfittingReport:
    """Judge `history` (History, its dict, or `irkit train --json` output). `epochs_planned`:
    the epoch the run was to end at (to tell an early stop); `keep_best`: whether the model
    holds the best epoch's weights (History.best_epoch) or the last epoch's."""
    curves, best, monitor = _figures(history)
    name = "val_loss" if curves.get("val_loss") else "loss"
    values = [float(v) for v in curves.get(name, [])]
    last = len(values)
    finite = [i for i in range(last) if math.isfinite(values[i])]  # NaN: a gap
    if not finite:
        return OverfittingReport(False, name, None, None, last, None, None, None,
                                 "no epochs were trained" if not last else
                                 f"no epoch has a finite {name}")
    low = min(finite, key=values.__getitem__)
    lowest, low_epoch, end = values[low], low + 1, values[finite[-1]]
    rise = (end - lowest) / abs(lowest) if lowest else 0.0
    stopped = last if epochs_planned is not None and last < epochs_planned else None
    kept, kept_text = _kept(best, last, keep_best, monitor)
    train = curves.get("loss", [])
    # training loss went lower after the validation minimum: the model kept fitting the
    # training data while getting worse on new data (if it rose too, training is unstable)
    later = [v for v in train[low + 1:] if math.isfinite(v)]
    train_fell = len(train) == last and bool(later) and min(later) < train[low]
    gained = max(values[i] for i in finite if i <= low) - lowest
    real = rise > RISE_THRESHOLD and (last - low_epoch >= SUSTAINED_EPOCHS or
                                      end - lowest > RISE_THRESHOLD * gained)
    overfits = name == "val_loss" and real and train_fell
    unstable = name == "val_loss" and real and not train_fell
    text = _verdict(name, low_epoch, lowest, last, rise, overfits, unstable, kept_text)
    if stopped is not None:
        text = f"stopped early at epoch {stopped} of {epochs_planned}; {text}"
    text += _better_accuracy(curves, kept, monitor)
    return OverfittingReport(overfits, name, low_epoch, lowest, last, rise, stopped, kept, text)
