"""fit's progress: a bar on stderr in a terminal, one display updated in place in Jupyter.

In a notebook (an IPython kernel), `fit` shows ONE output per run, on stdout, updated as it
trains: the epoch, the batch progress, the latest figures, and at the end a closing line (the
overfitting report and whose weights the model holds). Elsewhere `ProgressLogger` writes its
bar and lines on stderr. `verbose`: 0 nothing, 1 progress per batch, 2 per epoch (Keras).
"""

from __future__ import annotations

import html
import sys
import time

from irkit.train.callbacks import Callback, ProgressLogger
from irkit.train.report import closing_line

UPDATE_EVERY_S = 0.25  # a notebook display is redrawn at most this often within an epoch
BAR_WIDTH = 30


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (ipykernel): IPython is imported and its shell
    has a kernel. A terminal IPython counts as a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_callback(epochs: int, batches: int, verbose: int) -> Callback:
    """The progress callback `fit(verbose=...)` adds: a notebook display or a terminal bar."""
    if in_notebook():
        return NotebookProgress(epochs, batches, verbose)
    return ProgressLogger(epochs, batches, verbose)


class NotebookProgress(Callback):
    """One IPython display per fit, updated in place (text/plain and text/html)."""

    def __init__(self, epochs: int, batches: int, verbose: int = 1) -> None:
        self.epochs, self.batches, self.verbose = epochs, max(batches, 1), verbose
        self.handle = None
        self.epoch, self.done, self.shown_at = 0, 0, 0.0
        self.loss: float | None = None
        self.logs: dict[str, float] = {}
        self.closing = ""

    def on_train_begin(self, logs: dict) -> None:
        from IPython.display import display
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.epoch, self.done = epoch, 0

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        self.done += 1
        self.loss = logs.get("loss")
        now = time.monotonic()
        if self.verbose == 1 and now - self.shown_at >= UPDATE_EVERY_S:
            self._show(now)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.done, self.logs = self.batches, dict(logs)
        self._show(time.monotonic())

    def on_train_end(self, logs: dict) -> None:
        self.closing = closing_line(self.model, self.epochs)
        self._show(time.monotonic())

    def _show(self, now: float) -> None:
        self.shown_at = now
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)

    def _bundle(self) -> dict[str, str]:
        filled = BAR_WIDTH * self.done // self.batches
        head = f"epoch {self.epoch + 1}/{self.epochs}"
        batch = f"{self.done}/{self.batches}"
        figures = "  ".join(f"{k} {v:.4f}" for k, v in self.logs.items())
        if not figures and self.loss is not None:
            figures = f"loss {self.loss:.4f}"
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        text = f"{head} [{bar}] {batch}  {figures}".rstrip()
        if self.closing:
            text += "\n" + self.closing
        page = (f"<div><code>{html.escape(head)}</code> <progress value='{self.done}' "
                f"max='{self.batches}' style='width:12em'></progress> "
                f"<code>{html.escape(batch)}&nbsp; {html.escape(figures)}</code>")
        if self.closing:
            page += f"<br><span>{html.escape(self.closing)}</span>"
        return {"text/plain": text, "text/html": page + "</div>"}
