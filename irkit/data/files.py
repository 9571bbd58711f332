"""Dataset files from strangers: CSV (optionally gzipped) and .npz, read within the caps.

Every file is read through `irkit.safe_io.read_capped` (regular files only, size cap first);
a .gz is decompressed as a stream up to the same cap (IRKIT_MAX_DATA_BYTES), and a table's
or array's element count is checked before it is allocated. Pickled arrays are refused.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib

import numpy as np

from irkit.data.dataset import Dataset, class_names, make_dataset
from irkit.errors import DataError
from irkit.safe_io import FileSafetyError, check_element_count, limit, read_capped

# a .gz may always grow to this size; beyond it, to IRKIT_MAX_GZIP_RATIO times its own size
# (real CSVs compress 3-20x; a 407 KB bomb of 200 MB took gigabytes to parse)
GZIP_FLOOR = 64 << 20


def gunzip_capped(raw: bytes, name: str) -> bytes:
    """The decompressed bytes of a gzip stream, refused once they pass the data cap, or the
    ratio cap (a gzip bomb) when that is lower."""
    by_ratio = max(limit("gzip_ratio") * len(raw), GZIP_FLOOR)
    cap = min(limit("data"), by_ratio)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(cap + 1)  # decompresses at most cap + 1 bytes, whatever the ratio
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: not a readable gzip file ({e})") from None
    if len(out) > cap and cap == by_ratio:
        raise FileSafetyError(f"{name}: decompresses to more than {cap} bytes, over "
                              f"{limit('gzip_ratio')} times its size (a gzip bomb?); raise "
                              "IRKIT_MAX_GZIP_RATIO if you trust it")
    if len(out) > cap:
        raise FileSafetyError(f"{name}: decompresses to more than {cap} bytes, over the limit "
                              "for a dataset; raise IRKIT_MAX_DATA_BYTES if you trust it")
    return out


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


def parse_csv(raw: bytes, name: str, label_column: str = "label") -> Dataset:
    """A CSV table with a header row: every column but `label_column` is a numeric feature;
    the label column holds class numbers, class names or regression targets."""
    numbered = [(i, ln) for i, ln in enumerate(_text(raw, name).splitlines(), 1) if ln.strip()]
    if len(numbered) < 2:
        raise DataError(f"{name}: needs a header row and at least one data row")
    header = [_cell(h) for h in numbered[0][1].split(",")]
    _check_separator(numbered[0][1], name)
    if label_column not in header:
        raise DataError(f"{name}: no column {label_column!r} in the header; name the target "
                        "column 'label' or pass --label-column NAME")
    rows = [i for i, _ in numbered[1:]]
    lines = [ln for _, ln in numbered[1:]]
    del numbered
    for lineno, ln in zip(rows, lines):
        if ln.count(",") != len(header) - 1:
            raise DataError(f"{name}, line {lineno}: {ln.count(',') + 1} cells, the header has "
                            f"{len(header)}; give every row one cell per column")
    check_element_count(len(lines) * len(header), f"{name}: the table")
    li = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != li]
    x = _features(lines, rows, header, li, name)
    texts = [_cell(ln.split(",", li + 1)[li]) for ln in lines]
    try:
        y = np.array(texts, dtype=np.float64)
    except ValueError:  # not all numbers: class names
        y, classes = class_names(texts, name, rows)
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


def _features(lines: list[str], rows: list[int], header: list[str], li: int,
              name: str) -> np.ndarray:
    """The feature columns as float32; a bad or non-finite cell is named by line and column."""
    cols = [i for i in range(len(header)) if i != li]
    if not cols:
        return np.zeros((len(lines), 0), np.float32)
    try:
        x = np.loadtxt(lines, delimiter=",", dtype=np.float32, ndmin=2, usecols=cols,
                       quotechar='"')
    except ValueError as e:
        _name_bad_cell(lines, rows, header, cols, name)
        raise DataError(f"{name}: {str(e).splitlines()[0]}; every feature must be a number"
                        ) from None
    bad = ~np.isfinite(x)  # float32 parsing: values beyond its range are inf here
    if bad.any():
        r = int(np.argmax(bad.any(axis=1)))
        c = cols[int(np.argmax(bad[r]))]
        text = _cell(lines[r].split(",")[c])
        raise DataError(f"{name}, line {rows[r]}, column {header[c]!r}: {text[:30]!r} is NaN, "
                        "inf or beyond float32's range; clean or impute the data first")
    return x


def _name_bad_cell(lines: list[str], rows: list[int], header: list[str], cols: list[int],
                   name: str) -> None:
    """Raise a DataError naming the first cell that is not a number (if Python agrees)."""
    for lineno, ln in zip(rows, lines):
        cells = ln.split(",")
        for c in cols:
            try:
                float(_cell(cells[c]))
            except ValueError:
                shown = _cell(cells[c])[:30]
                raise DataError(f"{name}, line {lineno}, column {header[c]!r}: {shown!r} is not "
                                "a number; every feature must be a number") from None


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
            keys = [m[:-4] for m in z.namelist() if m.endswith(".npy")]
            if len(keys) > MAX_NPZ_ARRAYS:
                raise DataError(f"{path}: {len(keys)} arrays, over {MAX_NPZ_ARRAYS}; give x "
                                "(or one array per model input) and y")
            arrays = {k: _npz_array(z, k, path) for k in keys}
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as e:
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


def _npz_array(z: zipfile.ZipFile, key: str, path: str) -> np.ndarray:
    """Array `key` of an open .npz: header read first, element count and bytes capped."""
    member = f"{key}.npy"
    if member not in z.namelist():
        raise DataError(f"{path}: an .npz dataset needs arrays named 'x' and 'y' (no {key!r})")
    fmt = np.lib.format
    try:
        with z.open(member) as f:
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            shape, _, dtype = read_header(f)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: {key} is not a readable array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects (a pickle); irkit does not load "
                        "pickles, save plain numeric or string arrays")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    check_element_count(count, f"{path}: {key}")
    if count * dtype.itemsize > limit("data"):
        raise FileSafetyError(f"{path}: {key} would take {count * dtype.itemsize} bytes, over "
                              "the limit for a dataset; raise IRKIT_MAX_DATA_BYTES if you trust it")
    try:
        with z.open(member) as f:
            return fmt.read_array(f, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: {key} is not a readable array ({e})") from None
