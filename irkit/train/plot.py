"""Training curves: a PNG (matplotlib, a dependency of irkit) or a text chart.

Both read a history: a `History`, its `to_dict()`, the JSON `irkit train --json` prints, or a
checkpoint folder's history.json. The PNG has a loss panel and, for classifiers, an accuracy
panel, each with the training and the validation curve, and the best epoch marked.
"""

from __future__ import annotations

import io
import math
from typing import Any

from irkit.errors import IrkitError
from irkit.train.histories import checked_history
from irkit.version import install_hint

PANELS = (("loss", "loss"), ("accuracy", "accuracy"))


def _curves(history: Any) -> tuple[dict[str, list[float]], int | None]:
    """The checked curves (non-finite figures as NaN: gaps) and the best epoch."""
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if isinstance(history, dict) and "history" not in history:
        history = {"history": history}  # the curves alone
    doc = checked_history(history)
    if not any(math.isfinite(v) for v in doc["history"].get("loss", [])):
        raise IrkitError("the history has no epochs to plot (no finite training loss)")
    return doc["history"], doc["best_epoch"]


def require_matplotlib() -> None:
    """IrkitError (one line, the fix) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise IrkitError(f"plots need matplotlib: pip install matplotlib (a dependency of "
                         f"irkit: {install_hint()} brings it)") from None


def _figure(size: tuple[float, float]):
    """A matplotlib Figure drawn by the Agg canvas itself: irkit never calls
    `matplotlib.use` nor pyplot, so a notebook's backend (inline plots) stays as it was."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


FORMATS = ("png", "svg", "pdf")


def plot_png(history: Any, title: str | None = None, fmt: str = "png") -> bytes:
    """The curves as PNG (or `fmt`: svg, pdf) bytes: a loss panel, and an accuracy panel
    when there is accuracy."""
    curves, best = _curves(history)
    panels = [(key, label) for key, label in PANELS if curves.get(key)]
    fig = _figure((5.5 * len(panels), 4))
    try:
        axes = fig.subplots(1, len(panels), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            _panel(ax, curves, key, label, best)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=100)
    except (ValueError, OverflowError) as e:  # figures near float's limits (1e308) break
        # matplotlib's axis transforms (numpy's LinAlgError "Singular matrix" among them)
        raise IrkitError(f"matplotlib cannot draw these curves ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); the largest figure is "
                         f"{_largest(curves):.3g}, and figures near 1e308 are out of its "
                         "range") from None
    return buffer.getvalue()


def _largest(curves: dict[str, list[float]]) -> float:
    return max((abs(v) for vs in curves.values() for v in vs if math.isfinite(v)), default=0.0)


def _panel(ax, curves: dict, key: str, label: str, best: int | None) -> None:
    for name, style, what in ((key, "-", "training"), (f"val_{key}", "-", "validation")):
        values = curves.get(name)
        if values:
            ax.plot(range(1, len(values) + 1), values, style, label=f"{what} {label}")
    if best is not None:
        ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best}")
        val = curves.get(f"val_{key}")
        if val and best <= len(val):
            ax.plot([best], [val[best - 1]], "o", color="black")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_format(path: str) -> str:
    """The image format of `path` by its suffix (png, svg, pdf); IrkitError otherwise."""
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in FORMATS:
        raise IrkitError(f"{path}: name a .png, .svg or .pdf file for the curves")
    return fmt


def save_png(history: Any, path: str, title: str | None = None) -> None:
    """Write the curves to `path` atomically, as PNG (or SVG/PDF by the suffix)."""
    from irkit.safe_io import write_atomic
    write_atomic(path, plot_png(history, title, plot_format(path)))


def text_chart(history: Any, key: str = "loss", width: int = 60, height: int = 12) -> str:
    """A terminal chart of `key` (`*` training, `o` validation, `|` the best epoch; NaN and
    infinite figures are left out: gaps)."""
    curves, best = _curves(history)
    series = [(c, curves[n]) for c, n in (("*", key), ("o", f"val_{key}")) if curves.get(n)]
    if not series:
        raise IrkitError(f"the history has no {key!r} figures")
    finite = [v for _, vs in series for v in vs if math.isfinite(v)]
    if not finite:
        raise IrkitError(f"the history's {key!r} figures are all NaN or infinite")
    lo, hi = min(finite), max(finite)
    span = (hi / 2 - lo / 2) or 1.0  # halves: hi - lo may overflow to inf (1e308 - -1e308)
    epochs = max(len(vs) for _, vs in series)
    cols = min(width, epochs)
    grid = [[" "] * cols for _ in range(height)]

    def col(epoch: int) -> int:  # 1-based epoch -> column
        return 0 if epochs == 1 else round((epoch - 1) * (cols - 1) / (epochs - 1))
    if best is not None and 1 <= best <= epochs:
        for row in grid:
            row[col(best)] = "|"
    for mark, values in series:
        for i, v in enumerate(values):
            if math.isfinite(v):
                grid[round((hi / 2 - v / 2) / span * (height - 1))][col(i + 1)] = mark
    lines = [f"{hi:>10.4g} +" + "".join(grid[0])]
    lines += ["           |" + "".join(row) for row in grid[1:-1]]
    lines += [f"{lo:>10.4g} +" + "".join(grid[-1])]
    lines.append(" " * 12 + f"epoch 1{'':{max(cols - 8 - len(str(epochs)), 1)}}{epochs}")
    legend = ", ".join(f"{m} {'validation' if i else 'training'} {key}"
                       for i, (m, _) in enumerate(series))
    lines.append(" " * 12 + legend + (f", | best epoch {best}" if best else ""))
    return "\n".join(lines)
