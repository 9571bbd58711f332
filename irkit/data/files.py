"""Dataset files from strangers: CSV (optionally gzipped) and .npz, read within the caps.

Every file is read through `irkit.safe_io.read_capped` (regular files only, size cap first);
whatever is compressed (a .gz, an .npz member: deflate, bzip2, lzma) is decompressed through
`irkit.safe_io.read_decompressed` (streamed, counted against the data cap and the ratio rule,
refused before it grows past them), and a table's or array's element count is checked before
it is allocated. Pickled arrays are refused.

A CSV is parsed in numpy, not row by row in Python: cell counts, blank lines and line
numbers are found on the bytes, and numpy's C reader parses the numbers, so memory stays a
few times the file's size however short its rows.
"""

from __future__ import annotations

import gzip
import io
import lzma
import zipfile
import zlib

import numpy as np

from irkit.data.dataset import Dataset, class_names, make_dataset
from irkit.errors import DataError
from irkit.safe_io import (
    FileSafetyError,
    check_decompressed_size,
    check_element_count,
    read_capped,
    read_decompressed,
)

_UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
               NotImplementedError)


def gunzip_capped(raw: bytes, name: str) -> bytes:
    """The decompressed bytes of a gzip stream, refused once they pass the data cap, or the
    ratio cap (a gzip bomb) when that is lower."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            return read_decompressed(f, len(raw), name)
    except FileSafetyError:
        raise
    except _UNREADABLE as e:
        raise DataError(f"{name}: not a readable gzip file ({e})") from None


def read_data_file(path: str, what: str = "dataset") -> bytes:
    """A dataset file's bytes (decompressed if it ends in .gz), within the caps."""
    raw = read_capped(path, "data", what)
    return gunzip_capped(raw, path) if path.endswith(".gz") else raw


def read_text(path: str) -> str:
    """A text dataset file (decompressed if .gz), within the caps, decoded as UTF-8."""
    return _text(read_data_file(path), path)


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start}); give a UTF-8 CSV file"
                        ) from None


def _cell(text: str) -> str:
    return text.strip().strip('"').strip()


class _Table:
    """A CSV's lines found on its bytes: where each non-blank line starts and ends, its line
    number, and its commas; the header is the first of them."""

    def __init__(self, raw: bytes, name: str):
        _text(raw, name)  # UTF-8 check; the numbers are parsed from the bytes below
        raw = raw.removeprefix(b"\xef\xbb\xbf")
        if b"\r" in raw:
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not raw.endswith(b"\n"):
            raw += b"\n"
        self.raw, self.name = raw, name
        a = np.frombuffer(raw, np.uint8)
        ends = np.flatnonzero(a == 10)
        starts = np.concatenate([[0], ends[:-1] + 1])
        filled = np.add.reduceat((a > 32) & (a != 127), starts, dtype=np.int64) > 0
        commas = np.add.reduceat(a == 44, starts, dtype=np.int64)
        del a
        keep = np.flatnonzero(filled)
        self.blank_inside = len(keep) and keep[-1] - keep[0] + 1 != len(keep)
        self.starts, self.ends = starts[keep], ends[keep]
        self.lines = keep + 1  # 1-based line numbers
        self.commas = commas[keep]

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, i: int) -> str:
        return self.raw[self.starts[i]:self.ends[i]].decode("utf-8-sig")

    def body(self) -> io.StringIO:
        """The data lines (all but the header), blank lines left out, for numpy's reader."""
        if self.blank_inside:
            text = b"\n".join(self.raw[s:e] for s, e in zip(self.starts[1:], self.ends[1:]))
        else:
            text = self.raw[self.starts[1]:self.ends[-1]] if len(self) > 1 else b""
        return io.StringIO(text.decode("utf-8-sig"))


class _Labels:
    """The label cells as written, read on demand (for messages), by data row."""

    def __init__(self, table: _Table, li: int):
        self.table, self.li = table, li

    def __getitem__(self, i: int) -> str:
        return _cell(self.table.line(int(i) + 1).split(",", self.li + 1)[self.li])

    def __len__(self) -> int:
        return len(self.table) - 1


def parse_csv(raw: bytes, name: str, label_column: str = "label") -> Dataset:
    """A CSV table with a header row: every column but `label_column` is a numeric feature;
    the label column holds class numbers, class names or regression targets."""
    table = _Table(raw, name)
    if len(table) < 2:
        raise DataError(f"{name}: needs a header row and at least one data row")
    header = [_cell(h) for h in table.line(0).split(",")]
    _check_separator(table.line(0), name)
    if label_column not in header:
        raise DataError(f"{name}: no column {label_column!r} in the header; name the target "
                        "column 'label' or pass --label-column NAME")
    if len(header) < 2:
        raise DataError(f"{name}: the only column is the label {label_column!r}; a dataset "
                        "needs at least one feature column beside it")
    wrong = np.flatnonzero(table.commas[1:] != len(header) - 1)
    if len(wrong):
        i = int(wrong[0]) + 1
        raise DataError(f"{name}, line {table.lines[i]}: {table.commas[i] + 1} cells, the "
                        f"header has {len(header)}; give every row one cell per column")
    rows = table.lines[1:]
    check_element_count(len(rows) * len(header), f"{name}: the table")
    li = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != li]
    x = _features(table, rows, header, li, name)
    texts = _Labels(table, li)
    try:
        y = np.loadtxt(table.body(), delimiter=",", dtype=np.float64, ndmin=1, usecols=[li],
                       quotechar='"')
    except ValueError:  # numbers numpy's reader does not take (' "1"'), or class names
        cells = [texts[i] for i in range(len(texts))]
        try:
            y = np.array(cells, dtype=np.float64)
        except ValueError:
            y, classes = class_names(cells, name, rows)
            return make_dataset(x, y, name, features, rows, classes=classes)
    return make_dataset(x, y, name, features, rows, texts)


SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _check_separator(header: str, name: str) -> None:
    """DataError when the header has no comma but another separator: irkit reads
    comma-separated files (a ';' file, as European spreadsheets write, would be one column)."""
    if "," in header:
        return
    for sep, word in SEPARATORS.items():
        if sep in header:
            raise DataError(f"{name}: the header has no commas but {header.count(sep)} "
                            f"{word}s: the file looks {sep!r}-separated; irkit reads "
                            "comma-separated CSV: save it with commas (e.g. pandas.read_csv("
                            f"path, sep={sep!r}).to_csv(new_path, index=False))")


def _features(table: _Table, rows: np.ndarray, header: list[str], li: int,
              name: str) -> np.ndarray:
    """The feature columns as float32; a bad or non-finite cell is named by line and column."""
    cols = [i for i in range(len(header)) if i != li]
    try:
        x = np.loadtxt(table.body(), delimiter=",", dtype=np.float32, ndmin=2, usecols=cols,
                       quotechar='"')
    except ValueError as e:
        _name_bad_cell(table, header, cols, name)
        raise DataError(f"{name}: {str(e).splitlines()[0]}; every feature must be a number"
                        ) from None
    bad = ~np.isfinite(x)  # float32 parsing: values beyond its range are inf here
    if bad.any():
        r = int(np.argmax(bad.any(axis=1)))
        c = cols[int(np.argmax(bad[r]))]
        text = _cell(table.line(r + 1).split(",")[c])
        raise DataError(f"{name}, line {rows[r]}, column {header[c]!r}: {text[:30]!r} is NaN, "
                        "inf or beyond float32's range; clean or impute the data first")
    return x


def _name_bad_cell(table: _Table, header: list[str], cols: list[int], name: str) -> None:
    """Raise a DataError naming the first cell that is not a number (if Python agrees)."""
    for i in range(1, len(table)):
        cells = table.line(i).split(",")
        for c in cols:
            try:
                float(_cell(cells[c]))
            except ValueError:
                shown = _cell(cells[c])[:30]
                raise DataError(f"{name}, line {table.lines[i]}, column {header[c]!r}: "
                                f"{shown!r} is not a number; every feature must be a number"
                                ) from None


MAX_NPZ_ARRAYS = 64  # arrays in one .npz dataset (one per model input, and y)


def load_npz(path: str) -> Dataset:
    """An .npz dataset: array `x` (one sample per row, any shape: (N, F), (N, C, H, W),
    (N, T)) or, for a model of several inputs, one array per input named after it
    (`input_ids`, `attention_mask`; an input may be named x), and targets `y` (absent for a
    loss the model computes). Shapes and integer types are kept; no pickles; sizes checked
    before reading."""
    raw = read_capped(path, "data", "dataset")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            infos = [i for i in z.infolist() if i.filename.endswith(".npy")]
            if len(infos) > MAX_NPZ_ARRAYS:
                raise DataError(f"{path}: {len(infos)} arrays, over {MAX_NPZ_ARRAYS}; give x "
                                "(or one array per model input) and y")
            check_decompressed_size(sum(i.file_size for i in infos), len(raw), path)
            arrays = {i.filename[:-4]: _npz_array(z, i, path) for i in infos}
    except (FileSafetyError, DataError):
        raise
    except (*_UNREADABLE, ValueError) as e:  # zipfile raises ValueError for bad offsets
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    y = arrays.pop("y", None)
    if not arrays:
        raise DataError(f"{path}: an .npz dataset needs arrays named 'x' and 'y' (or one "
                        "array per model input, named after it)")
    _check_npz_rows(arrays, y, path)
    single = list(arrays) == ["x"]  # else every array is a model input of its name
    x = arrays["x"] if single else arrays
    features = [f"x{i}" for i in range(x.shape[1])] if single and x.ndim == 2 else []
    if y is not None and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y is None:
        return Dataset(x, None, path, features)
    if y.dtype.kind in "US":
        labels, classes = class_names([str(v) for v in y], path)
        return make_dataset(x, labels, path, features, classes=classes, cast=False)
    return make_dataset(x, y, path, features, cast=False)


def _check_npz_rows(arrays: dict[str, np.ndarray], y: np.ndarray | None, path: str) -> None:
    """DataError unless every array is numeric with one row per sample, as many as y's."""
    for key, a in arrays.items():
        if a.ndim == 0:
            raise DataError(f"{path}: {key} must have one row per sample, not be a scalar")
        if a.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} has type {a.dtype}; features must be numbers")
    if y is not None and y.ndim == 0:
        raise DataError(f"{path}: y must have one row per sample, not be a scalar")
    counts = {k: len(a) for k, a in arrays.items()} | ({"y": len(y)} if y is not None else {})
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{k} {n}" for k, n in counts.items())
        raise DataError(f"{path}: the arrays have different numbers of rows ({shown}); give "
                        "one row per sample in each")


def _npz_array(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> np.ndarray:
    """The array in member `info`: its .npy header read first (no objects, element count
    capped, the member's declared size equal to what the header needs), then its data
    decompressed through the guard, to exactly that size."""
    key, fmt = info.filename.removesuffix(".npy"), np.lib.format
    with z.open(info) as f:
        try:
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: {key} is not a readable array ({e})") from None
        if dtype.hasobject:
            raise DataError(f"{path}: {key} holds Python objects (a pickle); irkit does not "
                            "load pickles, save plain numeric or string arrays")
        count = int(np.prod(shape, dtype=object)) if shape else 1
        check_element_count(count, f"{path}: {key}")
        nbytes = count * dtype.itemsize
        if info.file_size != f.tell() + nbytes:
            raise DataError(f"{path}: {key} declares {info.file_size} bytes, but its shape "
                            f"{tuple(shape)} of {dtype} needs {f.tell() + nbytes}; the file "
                            "is damaged")
        data = read_decompressed(f, info.compress_size, f"{path}: {key}", declared=nbytes)
    array = np.frombuffer(data, dtype, count) if count else np.zeros(0, dtype)
    return array.reshape(shape, order="F" if fortran else "C")
