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
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    curves = history.get("history", history)
    best = history.get("best_epoch") if "history" in history else None
    return curves, best, str(history.get("monitor", "val_loss"))


def _kept(best: int | None, last: int, keep_best: bool, monitor: str) -> tuple[int, str]:
    if keep_best and best is not None:
        why = "" if monitor == "val_loss" else f" (best {monitor})"
        return best, f"kept epoch {best}{why}"
    return last, f"kept the last epoch ({last})"


def _better_accuracy(curves: dict, kept: int | None, monitor: str) -> str:
    """A note when another epoch had clearly higher validation accuracy than the kept one
    (the lowest loss and the highest accuracy need not fall on the same epoch)."""
    acc = curves.get("val_accuracy")
    if not acc or kept is None or monitor == "val_accuracy" or kept > len(acc):
        return ""
    top = max(range(len(acc)), key=acc.__getitem__)
    if acc[top] - acc[kept - 1] < ACCURACY_NOTE:
        return ""
    return (f"; epoch {top + 1} had higher validation accuracy ({acc[top]:.4f} vs "
            f"{acc[kept - 1]:.4f}): --monitor val_accuracy keeps that one")


def overfitting_report(history: Any, epochs_planned: int | None = None,
                       keep_best: bool = True) -> OverfittingReport:
    """Judge `history` (History, its dict, or `irkit train --json` output). `epochs_planned`:
    the epoch the run was to end at (to tell an early stop); `keep_best`: whether the model
    holds the best epoch's weights (History.best_epoch) or the last epoch's."""
    curves, best, monitor = _figures(history)
    name = "val_loss" if curves.get("val_loss") else "loss"
    values = [float(v) for v in curves.get(name, [])]
    last = len(values)
    if not values:
        return OverfittingReport(False, name, None, None, 0, None, None, None,
                                 "no epochs were trained")
    low = min(range(last), key=values.__getitem__)
    lowest, low_epoch = values[low], low + 1
    rise = (values[-1] - lowest) / abs(lowest) if lowest else 0.0
    stopped = last if epochs_planned is not None and last < epochs_planned else None
    kept, kept_text = _kept(best, last, keep_best, monitor)
    train = curves.get("loss", [])
    # training loss went lower after the validation minimum: the model kept fitting the
    # training data while getting worse on new data (if it rose too, training is unstable)
    train_fell = len(train) == last and low + 1 < last and min(train[low + 1:]) < train[low]
    gained = max(values[:low + 1]) - lowest
    real = rise > RISE_THRESHOLD and (last - low_epoch >= SUSTAINED_EPOCHS or
                                      values[-1] - lowest > RISE_THRESHOLD * gained)
    overfits = name == "val_loss" and real and train_fell
    unstable = name == "val_loss" and real and not train_fell
    what = "validation loss" if name == "val_loss" else "training loss (no validation data)"
    head = f"{what} bottomed at epoch {low_epoch} ({lowest:.4g})"
    if overfits:
        text = (f"{head} and rose {100 * rise:.0f}% by epoch {last}: the model overfits; "
                f"{kept_text}")
    elif unstable:
        text = (f"{head} and rose {100 * rise:.0f}% by epoch {last}, training loss too: "
                f"unstable training (try a lower learning rate); {kept_text}")
    elif low_epoch == last:
        text = f"{what} was still falling at epoch {last}: no overfitting; more epochs may help"
    else:
        text = (f"{head} and was {100 * rise:.0f}% above it at epoch {last}: no clear "
                f"overfitting; {kept_text}")
    if stopped is not None:
        text = f"stopped early at epoch {stopped} of {epochs_planned}; {text}"
    text += _better_accuracy(curves, kept, monitor)
    return OverfittingReport(overfits, name, low_epoch, lowest, last, rise, stopped, kept, text)
