"""MNIST from the standard IDX files, kept in a cache folder and downloaded when missing.

The folder is `$IRKIT_DATA/mnist` (IRKIT_DATA defaults to ~/.cache/irkit). Each file may be
there gzipped (`train-images-idx3-ubyte.gz`, as distributed) or not. A missing file is
downloaded from the mirrors below and checked against its SHA-256 before it is kept; with
IRKIT_OFFLINE=1, or when every mirror fails, a one-line DataError says which files to place
where. `mnist` is the 60,000 training images, `mnist-test` the 10,000 test images.

IDX format: two zero bytes, a type code (0x08 unsigned byte ... 0x0E float64), the number of
dimensions, each dimension as a big-endian uint32, then the values, big-endian, row-major.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from irkit.data.dataset import Dataset, make_dataset
from irkit.data.files import read_data_file
from irkit.errors import DataError
from irkit.safe_io import check_element_count, write_atomic

# SHA-256 and size of the gzipped files as the mirrors serve them
MNIST_FILES = {
    "train-images-idx3-ubyte": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    "train-labels-idx1-ubyte": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    "t10k-images-idx3-ubyte": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    "t10k-labels-idx1-ubyte": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
PARTS = {"mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "mnist-test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TIMEOUT_S = 30


def data_home() -> str:
    """The cache folder for downloaded datasets: $IRKIT_DATA, else ~/.cache/irkit."""
    return os.path.abspath(os.path.expanduser(os.environ.get("IRKIT_DATA") or
                                              os.path.join("~", ".cache", "irkit")))


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """The array in an IDX file's bytes; DataError for a bad header or a truncated body."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: not an IDX file (it must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02X}; expected one of "
                        f"{', '.join(f'0x{c:02X}' for c in IDX_TYPES)}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    count = 1
    for d in dims:
        count *= d
    check_element_count(count, name)
    dtype = np.dtype(IDX_TYPES[code])
    start, size = 4 + 4 * ndim, count * dtype.itemsize
    if len(raw) - start != size:
        problem = "is truncated" if len(raw) - start < size else "has trailing bytes"
        raise DataError(f"{name}: {problem}: shape {tuple(dims)} needs {size} data bytes, the "
                        f"file has {len(raw) - start}; download it again")
    return np.frombuffer(raw, dtype, count, start).reshape(dims)


def read_idx(path: str) -> np.ndarray:
    """The array in an IDX file (gzipped if its name ends in .gz), within the data caps."""
    return parse_idx(read_data_file(path, "IDX file"), path)


def _local(folder: str, stem: str) -> str | None:
    for path in (os.path.join(folder, stem), os.path.join(folder, stem + ".gz")):
        if os.path.exists(path):
            return path
    return None


def _download(stem: str, folder: str, opener: Callable) -> str:
    """Fetch `stem`.gz from the first mirror that serves the right bytes; keep it in `folder`.
    Raises OSError (with every mirror's reason) when none does."""
    sha, size = MNIST_FILES[stem]
    reasons = []
    for mirror in MIRRORS:
        url = mirror + stem + ".gz"
        try:
            with opener(url, timeout=TIMEOUT_S) as response:
                body = response.read(size + 1)
        except (OSError, ValueError) as e:
            reasons.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        import hashlib  # here: hashlib and urllib cost 20 ms at start-up when imported early
        if hashlib.sha256(body).hexdigest() != sha:
            reasons.append(f"{url}: wrong SHA-256")
            continue
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, stem + ".gz")
        write_atomic(path, body)
        return path
    raise OSError("; ".join(reasons))


def _urlopen(url: str, timeout: float):
    import urllib.request
    return urllib.request.urlopen(url, timeout=timeout)


def mnist_files(part: str = "mnist", opener: Callable = _urlopen) -> list[str]:
    """Paths of the image and label files of `part` (mnist, mnist-test), downloaded if
    missing; DataError saying what to place where if they cannot be had."""
    folder = os.path.join(data_home(), "mnist")
    paths, missing = {}, []
    for stem in PARTS[part]:
        paths[stem] = _local(folder, stem)
        if paths[stem] is None:
            missing.append(stem)
    reasons = ["IRKIT_OFFLINE is set"] if missing and os.environ.get("IRKIT_OFFLINE") else []
    if missing and not reasons:
        for stem in list(missing):
            try:
                paths[stem] = _download(stem, folder, opener)
                missing.remove(stem)
            except OSError as e:
                reasons.append(f"download failed: {e}")
    if missing:
        names = " and ".join(f"{s}.gz" for s in missing)
        raise DataError(f"{part}: place {names} (gzipped or not; from {MIRRORS[0]}) in "
                        f"{folder} ($IRKIT_DATA/mnist; set IRKIT_DATA to choose another "
                        f"folder); {'; '.join(reasons)}")
    return [paths[s] for s in PARTS[part]]


def load_mnist(part: str = "mnist", opener: Callable = _urlopen) -> Dataset:
    """MNIST's training (`mnist`) or test (`mnist-test`) images as rows of 784 pixels
    (0-255) with labels 0-9."""
    image_path, label_path = mnist_files(part, opener)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{image_path}, {label_path}: expected images of shape (n, rows, "
                        f"columns) and labels of shape (n,), got {images.shape} and "
                        f"{labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has "
                        f"{len(labels)} labels; the files do not belong together")
    x = images.reshape(len(images), -1)
    ds = make_dataset(x, labels, part, [f"p{i}" for i in range(x.shape[1])])
    if ds.classes is not None and len(ds.classes) < 10:  # a subset may lack the last digits
        ds.classes = [str(d) for d in range(10)]
    return ds
