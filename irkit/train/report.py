"""The closing report of a training run: did the model overfit, and which epoch was kept.

    validation loss bottomed at epoch 12 (0.0612) and rose 41% by epoch 40: the model
    overfits; kept epoch 12

The report reads a history (a `History`, its `to_dict()`, or the JSON that `irkit train
--json` prints) and says one of: training diverges (the training loss grew instead of falling,
see `diverging`), the model overfits (validation loss rose more than `RISE_THRESHOLD` above
its minimum by the last epoch, or rose `STEADY_EPOCHS` epochs in a row, while training loss
went lower still), training is unstable
(both rose), it stopped early, it is still improving, or it did not overfit; and which
epoch's weights the model holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from irkit.train.histories import checked_history

# validation loss this fraction above its minimum at the last epoch counts as overfitting,
# when the rise is sustained (this many epochs after the minimum) or large against what the
# run gained before the minimum (a wiggle of a tiny loss in the last epoch is noise)
RISE_THRESHOLD = 0.05
SUSTAINED_EPOCHS = 3
# ... or, whatever its size, when it rose in every one of at least this many epochs after
# its minimum (what early stopping with patience 5 sees: the lesson's sign of overfitting)
STEADY_EPOCHS = 5
# divergence (no NaN needed): the training loss reached DIVERGE_RATIO times the loss the run
# started from, or ended above that start after having been under half its last value. The
# start is the starting weights' loss (History.start_loss; the first epoch's in older
# histories), taken as at least 1 as the trainer does: noise near 0 is no divergence.
DIVERGE_RATIO = 10.0
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
    diverges: bool = False      # the training loss grew instead of falling (see `diverging`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _figures(history: Any) -> tuple[dict[str, list[float]], int | None, str, float | None]:
    """The checked curves (irkit.train.histories.checked_history: NaN marks a gap), the best
    epoch, the monitored figure and the starting loss."""
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if isinstance(history, dict) and "history" not in history:
        history = {"history": history}  # the curves alone
    doc = checked_history(history)
    return doc["history"], doc["best_epoch"], doc["monitor"], doc.get("start_loss")


def diverging(train: list[float], start: float | None = None) -> str:
    """Why the training losses `train` (one per epoch) show a diverging run, or "": the loss
    reached DIVERGE_RATIO times the start (`start`, the starting weights' loss, else the
    first epoch's; at least 1), or ended above the start after falling under half the end."""
    epochs = [i for i in range(len(train)) if math.isfinite(train[i])]  # NaN: a gap
    if not epochs:
        return ""
    base = max(float(start) if start is not None and math.isfinite(start)
               else train[epochs[0]], 1.0)
    peak = max(epochs, key=train.__getitem__)
    low = min(epochs, key=train.__getitem__)
    end = epochs[-1]
    if train[peak] > DIVERGE_RATIO * base:
        return (f"training loss reached {train[peak]:.4g} at epoch {peak + 1}, "
                f"{train[peak] / base:.0f} times the {base:.4g} it started from")
    if train[end] > base and 2 * train[low] < train[end]:
        return (f"training loss rose from {train[low]:.4g} at epoch {low + 1} to "
                f"{train[end]:.4g} at epoch {end + 1}, above the {base:.4g} it started from")
    return ""


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


def overfitting_report(history: Any, epochs_planned: int | None = None,
                       keep_best: bool = True) -> OverfittingReport:
    """Judge `history` (History, its dict, or `irkit train --json` output). `epochs_planned`:
    the epoch the run was to end at (to tell an early stop); `keep_best`: whether the model
    holds the best epoch's weights (History.best_epoch) or the last epoch's."""
    curves, best, monitor, start = _figures(history)
    name = "val_loss" if curves.get("val_loss") else "loss"
    values = [float(v) for v in curves.get(name, [])]
    last = len(values)
    finite = [i for i in range(last) if math.isfinite(values[i])]  # NaN: a gap
    if not finite:
        return OverfittingReport(False, name, None, None, last, None, None, None,
                                 "no epochs were trained" if not last else
                                 f"no epoch has a finite {name}")
    low = min(finite, key=values.__getitem__)
    lowest = values[low]
    rise = (values[finite[-1]] - lowest) / abs(lowest) if lowest else 0.0
    stopped = last if epochs_planned is not None and last < epochs_planned else None
    kept, kept_text = _kept(best, last, keep_best, monitor)
    train = [float(v) for v in curves.get("loss", [])]
    diverges = diverging(train, start)
    if diverges:
        text = (f"{diverges}: training diverges, the figures are not to be trusted (lower the "
                f"learning rate or scale the data); {kept_text}")
        overfits = False
    else:
        overfits, text = _verdict(values, train, low, rise, name, kept_text)
    if stopped is not None:
        text = f"stopped early at epoch {stopped} of {epochs_planned}; {text}"
    text += _better_accuracy(curves, kept, monitor) if not diverges else ""
    return OverfittingReport(overfits, name, low + 1, lowest, last, rise, stopped, kept, text,
                             bool(diverges))


def _verdict(values: list[float], train: list[float], low: int, rise: float, name: str,
             kept_text: str) -> tuple[bool, str]:
    """(overfits, text) for a run that did not diverge: `values` is the judged curve, `low`
    the index of its minimum and `rise` the last epoch's rise over it."""
    last, lowest, low_epoch = len(values), values[low], low + 1
    end = next(v for v in reversed(values) if math.isfinite(v))  # NaN: a gap
    # training loss went lower after the validation minimum: the model kept fitting the
    # training data while getting worse on new data (if it rose too, training is unstable)
    later = [v for v in train[low + 1:] if math.isfinite(v)]
    train_fell = len(train) == last and bool(later) and min(later) < train[low]
    gained = max(v for v in values[:low + 1] if math.isfinite(v)) - lowest
    steady = last - low_epoch >= STEADY_EPOCHS and all(
        a < b for a, b in zip(values[low:], values[low + 1:]))
    real = steady or rise > RISE_THRESHOLD and (last - low_epoch >= SUSTAINED_EPOCHS or
                                                end - lowest > RISE_THRESHOLD * gained)
    overfits = name == "val_loss" and real and train_fell
    what = "validation loss" if name == "val_loss" else "training loss (no validation data)"
    head = f"{what} bottomed at epoch {low_epoch} ({lowest:.4g})"
    if overfits:
        return True, (f"{head} and rose {100 * rise:.0f}% by epoch {last}: the model overfits; "
                      f"{kept_text}")
    if name == "val_loss" and real:
        return False, (f"{head} and rose {100 * rise:.0f}% by epoch {last}, training loss too: "
                       f"unstable training (try a lower learning rate); {kept_text}")
    if low_epoch == last:
        return False, (f"{what} was still falling at epoch {last}: no overfitting; more epochs "
                       "may help")
    return False, (f"{head} and was {100 * rise:.0f}% above it at epoch {last}: no clear "
                   f"overfitting; {kept_text}")


def closing_line(model, epochs_planned: int) -> str:
    """What `fit`'s progress ends with: the overfitting report of `model.history` and, when
    the model holds another epoch's weights than the last (irkit's default, unlike Keras'),
    which and how to get the last's. "" before any epoch."""
    history = getattr(model, "history", None)
    if history is None or not history.epochs:
        return ""
    settings = getattr(model, "fit_settings", None) or getattr(model, "settings", None)
    keep_best = getattr(settings, "keep_best", True)
    text = overfitting_report(history, epochs_planned, keep_best).text
    last, best = history.epochs, history.best_epoch
    if keep_best and best is not None and best != last:
        text += (f". Restored epoch {best}'s weights (best {history.monitor}), not epoch "
                 f"{last}'s: pass keep_best=False (irkit train --keep-last) for the last "
                 "epoch's")
    return text
