"""A dataset in memory, and the checks every source goes through before it becomes one.

Labels decide the task: integer-valued targets in one column are class numbers 0..C-1 (at
most MAX_CLASSES), strings are class names (numbered in sorted order), other numbers are
regression targets. Every check runs before anything is built from the values, and every
message names the file and, where the data came from a file, the file's line or index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from irkit.errors import DataError

# more classes than this is a mistake (a stray 1e9 label), not a classification problem
MAX_CLASSES = 100_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Dataset:
    """Features, targets and what they mean."""

    x: np.ndarray | dict[str, np.ndarray]  # a dict: one array per model input, by name
    y: np.ndarray | None                    # None: no targets (a loss the model computes)
    name: str
    feature_names: list[str] = field(default_factory=list)
    classes: list[str] | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def __repr__(self) -> str:
        task = (f"{self.num_classes} classes" if self.classes is not None else "regression")
        return (f"<irkit Dataset {self.name!r}: x {tuple(self.x.shape)} {self.x.dtype}, "
                f"y {tuple(self.y.shape)}; {task}>")

    def _repr_html_(self) -> str:
        """Jupyter's display: shapes, classes with their counts, the first rows."""
        import html
        head = html.escape(repr(self))
        classes = ""
        if self.classes is not None:
            counts = np.bincount(np.asarray(self.y, np.int64).ravel(),
                                 minlength=len(self.classes))
            shown = ", ".join(f"{html.escape(str(c))} ({n})"
                              for c, n in zip(self.classes[:20], counts[:20]))
            more = f", ... {len(self.classes) - 20} more" if len(self.classes) > 20 else ""
            classes = f"<br>classes: {shown}{more}"
        x = self.x.reshape(len(self.x), -1)
        names = (self.feature_names or [f"x{i}" for i in range(x.shape[1])])[:8]
        cells = "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>y</th>"
        rows = "".join("<tr>" + "".join(f"<td>{v:.4g}</td>" for v in x[i, :len(names)])
                       + f"<td>{html.escape(self._label(i))}</td></tr>"
                       for i in range(min(len(x), 5)))
        more = f" (first {len(names)} of {x.shape[1]} features)" if x.shape[1] > 8 else ""
        return (f"<div>{head}{classes}<table><tr>{cells}</tr>{rows}</table>"
                f"first {min(len(x), 5)} of {len(x)} rows{more}</div>")

    def _label(self, i: int) -> str:
        y = np.asarray(self.y[i]).ravel()
        if self.classes is not None and y.size == 1:
            return str(self.classes[int(y[0])])
        return ", ".join(f"{v:.4g}" for v in y[:4])


def _where(name: str, i: int, rows: Sequence[int] | None, what: str = "row") -> str:
    """`file, line N` for data read from a text file, else `file, row i` (0-based index)."""
    return f"{name}, line {rows[i]}" if rows is not None else f"{name}, {what} {i}"


def check_finite(x: np.ndarray, name: str, rows: Sequence[int] | None = None,
                 columns: Sequence[str] | None = None) -> None:
    """DataError naming the first row with NaN or inf (or a value beyond float32's range).

    `rows` maps row indices to the file's line numbers (header counted), `columns` names the
    columns, so the message points into the file the user has."""
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return  # integers are always finite
    bad = ~np.isfinite(a) | (np.abs(a) > _FLOAT32_MAX)
    if not bad.any():
        return
    flat = bad.reshape(len(bad), -1)
    row = int(np.argmax(flat.any(axis=1)))
    if rows is None and columns is None:
        raise DataError(f"{name}: NaN or inf in row {row}; clean or impute the data first")
    col = int(np.argmax(flat[row]))
    value = a.reshape(len(a), -1)[row, col]
    where = _where(name, row, rows)
    column = f"column {columns[col]!r}" if columns is not None else f"feature {col}"
    raise DataError(f"{where}, {column}: {float(value):g} is NaN, inf or beyond float32's range; "
                    "clean or impute the data first")


def check_labels(y: np.ndarray, num_classes: int, name: str) -> None:
    """DataError if an integer label is outside 0..num_classes-1."""
    if y.dtype.kind in "iu" and len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.max()) if y.max() >= num_classes else int(y.min())
        raise DataError(f"{name}: label {bad} is out of range for {num_classes} classes; "
                        f"labels must be 0..{num_classes - 1}")


def _class_numbers(y: np.ndarray, name: str, rows: Sequence[int] | None,
                   texts: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer-valued labels as int64 and their class list, range-checked before either is
    built (a label of 1e9 must not become a list of 1e9 names)."""
    low, high = y.min(), y.max()
    if low >= 0 and high < MAX_CLASSES:
        y = y.astype(np.int64)
        return y, [str(i) for i in range(int(high) + 1)]
    i = int(np.argmax(y < 0)) if low < 0 else int(np.argmax(y >= MAX_CLASSES))
    shown = texts[i] if texts is not None else _number(y[i])
    kind = "negative class label" if y[i] < 0 else "class label"
    raise DataError(f"{_where(name, i, rows, 'y index')}: {kind} {shown} is out of range; "
                    f"class labels are 0..C-1 with at most {MAX_CLASSES} classes")


def _number(v) -> str:
    """A label as the number it is (1e+12, not a wrapped int64)."""
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):g}"


def class_names(labels: Sequence[str], name: str, rows: Sequence[int] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """String labels -> (int64 class numbers, class names in sorted order)."""
    labels = [str(s) for s in labels]
    for i, s in enumerate(labels):
        if not s:
            raise DataError(f"{_where(name, i, rows)}: the label is empty; give every row one")
    classes = sorted(set(labels))
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{name}: {len(classes)} different labels, over {MAX_CLASSES} classes; "
                        "is the right column the label?")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[s] for s in labels], dtype=np.int64), classes


def make_dataset(x: np.ndarray | dict[str, np.ndarray], y: np.ndarray, name: str,
                 features: list[str], rows: Sequence[int] | None = None,
                 texts: Sequence[str] | None = None, classes: list[str] | None = None,
                 cast: bool = True) -> Dataset:
    """Check features and targets and build the Dataset (float32 features; with `cast`
    False, features keep their type, e.g. token ids, and may be a dict of arrays by input
    name). Integer targets of more than one axis (labels per token) stay int64.

    `rows`: the file's line number of each row; `texts`: the labels as written in the file
    (for messages); `classes`: names for labels already numbered (string labels)."""
    arrays = x.values() if isinstance(x, dict) else [x]
    n = len(next(iter(arrays)))
    if n != len(y):
        raise DataError(f"{name}: {n} feature rows but {len(y)} targets; give one target "
                        "per row")
    for a in arrays:
        if np.ndim(a) == 2 and np.shape(a)[1] == 0:
            raise DataError(f"{name}: no features (x has shape {np.shape(a)}); give each row at "
                            "least one feature")
        if np.asarray(a).dtype.kind not in "iub":
            check_finite(a, name, rows, features if rows is not None else None)
    x32 = x if not cast else np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if classes is not None:
        return Dataset(x32, y.astype(np.int64), name, features, classes)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{name}: targets of type {y.dtype} are neither numbers nor class names")
    if y.dtype.kind in "iu" and y.ndim > 1:
        return Dataset(x32, y.astype(np.int64), name, features, None)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        i = int(np.argmax(~np.isfinite(y.reshape(len(y), -1)).any(axis=1)))
        raise DataError(f"{_where(name, i, rows, 'y index')}: the target is NaN or inf")
    if len(y) and y.ndim == 1 and (y.dtype.kind in "iu" or np.all(y == np.round(y))):
        y, classes = _class_numbers(y, name, rows, texts)
        return Dataset(x32, y, name, features, classes)
    return Dataset(x32, y.astype(np.float32), name, features, None)
