"""Issue 23: one decompression guard for every container irkit reads (.csv.gz, .npz members
compressed with deflate or bzip2, IDX .gz): bombs are refused on their decompressed size before
it is allocated, in one line, within 1 GiB of address space; and bad datasets that ended in
"unexpected" errors are one line naming the problem."""

from __future__ import annotations

import bz2
import gzip
import io
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from irkit.cli import main
from irkit.data import load_dataset, read_idx
from irkit.errors import DataError
from irkit.safe_io import FileSafetyError, read_decompressed

MiB = 1 << 20


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return f.getvalue()


def _deflated_zeros(header: bytes, nbytes: int) -> bytes:
    """Raw deflate of `header` + `nbytes` zero bytes, built from one repeated flushed block
    (deflating a GiB of zeros would take seconds)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(MiB)
    first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    return first + again * (nbytes // MiB) + c.compress(bytes(nbytes % MiB)) + c.flush()


def _write_zip(path: Path, members: dict[str, tuple[int, bytes, int, int]]) -> None:
    """A zip written by hand: name -> (method, compressed bytes, crc32, uncompressed size)."""
    out, central = bytearray(), bytearray()
    for name, (method, data, crc, size) in members.items():
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0,
                               len(out)) + name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    path.write_bytes(bytes(out + central + end))


def _zero_npz(path: Path, nbytes: int, shape: tuple, right_crc: bool = True) -> Path:
    header = _npy_header(shape)
    crc = 0
    if right_crc:
        crc = zlib.crc32(header)
        for _ in range(nbytes // MiB):
            crc = zlib.crc32(bytes(MiB), crc)
    rows = shape[0]
    y = _npy_header((rows,), "<i8")
    _write_zip(path, {"x.npy": (8, _deflated_zeros(header, nbytes), crc, len(header) + nbytes),
                      "y.npy": (8, _deflated_zeros(y, rows * 8), zlib.crc32(y + bytes(rows * 8)),
                                len(y) + rows * 8)})
    return path


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def irkit_process(*args, cwd):
    exe = shutil.which("irkit")
    command = [exe] if exe else [sys.executable, "-m", "irkit.cli"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, preexec_fn=_limits)


def one_line(done, *words):
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("irkit: error: ") and "unexpected" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    _zero_npz(folder / "zeros256.npz", 256 * MiB, (2 * MiB, 32))
    _zero_npz(folder / "zeros1g.npz", 1024 * MiB, (8 * MiB, 32), right_crc=False)
    _zero_npz(folder / "wide.npz", 256 * MiB, (1, 64 * MiB))
    header = _npy_header((6 * MiB, 1))
    data = header + bytes(24 * MiB)
    _write_zip(folder / "bz2.npz", {
        "x.npy": (12, bz2.compress(data, 9), zlib.crc32(data), len(data)),
        "y.npy": (8, _deflated_zeros(_npy_header((6 * MiB,), "<i1"), 6 * MiB),
                  zlib.crc32(_npy_header((6 * MiB,), "<i1") + bytes(6 * MiB)),
                  len(_npy_header((6 * MiB,), "<i1")) + 6 * MiB)})
    (folder / "normal.csv.gz").write_bytes(gzip.compress(
        b"a,b,c,d,label\n" + b"1,2,3,4,0\n" * (64 * MiB // 10), 9))
    (folder / "short.csv.gz").write_bytes(gzip.compress(b"a,label\n" + b"1,0\n" * (16 * MiB),
                                                        9))
    idx = b"\0\0\x08\x03" + struct.pack(">III", 60000, 28, 28)
    (folder / "images-idx3-ubyte.gz").write_bytes(gzip.compress(idx + bytes(60000 * 28 * 28),
                                                                1))
    return folder


@pytest.mark.parametrize("name", ["zeros256.npz", "zeros1g.npz", "wide.npz", "bz2.npz",
                                  "normal.csv.gz", "short.csv.gz"])
def test_bombs_are_refused_in_one_line_within_1_gib(bombs, name, tmp_path):
    assert (bombs / name).stat().st_size < (2 if name == "zeros1g.npz" else 1) * MiB  # deflate
    # grows at most about 1032 times
    done = irkit_process("train", "iris_mlp", "--data", bombs / name, "--epochs", "1", "-o",
                         tmp_path / "out.onnx", cwd=tmp_path)
    one_line(done, "compression bomb", "IRKIT_MAX_GZIP_RATIO")
    assert not (tmp_path / "out.onnx").exists()


def test_an_idx_gz_bomb_is_refused(bombs):
    with pytest.raises(FileSafetyError, match="compression bomb"):
        read_idx(str(bombs / "images-idx3-ubyte.gz"))


def test_the_guard_stops_reading_at_the_cap():
    class Endless:
        served = 0

        def read(self, n):
            self.served += n
            return bytes(n)
    stream = Endless()
    with pytest.raises(FileSafetyError, match="compression bomb"):
        read_decompressed(stream, 1000, "endless")
    assert stream.served <= (16 + 1) * MiB + 1
    with pytest.raises(FileSafetyError, match="more than the 10 bytes it declares"):
        read_decompressed(Endless(), 1000, "liar", declared=10)


def test_a_member_whose_declared_size_lies_is_refused(tmp_path):
    header = _npy_header((3, 4))
    data = header + bytes(48)
    path = tmp_path / "liar.npz"
    _write_zip(path, {"x.npy": (0, data, zlib.crc32(data), len(data) + 100),
                      "y.npy": (0, data, zlib.crc32(data), len(data))})
    with pytest.raises(DataError, match="declares"):
        load_dataset(str(path))


def test_compressed_npz_and_gz_that_are_not_bombs_still_load(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 4)).astype(np.float32), np.arange(300) % 3
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.x.flags.writeable
    rows = "".join(f"{a:.3f},{b:.3f},{c:.3f},{d:.3f},{k}\n" for (a, b, c, d), k in zip(x, y))
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(("a,b,c,d,label\n" + rows).encode()))
    np.testing.assert_allclose(load_dataset(str(tmp_path / "d.csv.gz")).x, x, atol=1e-3)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_in_process(result, *words):
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "unexpected" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("rows", [4, 500_000])
def test_a_csv_with_only_the_label_column_is_refused(tmp_path, rows):
    path = tmp_path / "labels.csv"
    path.write_text("label\n" + "0\n1\n" * (rows // 2))
    _one_line_in_process(_invoke("train", "iris_mlp", "--data", path, "--epochs", "1", "-o",
                                 tmp_path / "o.onnx"), "feature column")


def test_a_2d_y_in_an_npz_is_refused_for_class_labels(tmp_path):
    np.savez(tmp_path / "y2.npz", x=np.ones((30, 4), np.float32),
             y=np.eye(3, dtype=np.int64)[np.arange(30) % 3])
    _one_line_in_process(_invoke("train", "iris_mlp", "--data", tmp_path / "y2.npz", "--epochs",
                                 "1", "-o", tmp_path / "o.onnx"), "labels of shape (30, 3)")


def test_short_rows_parse_in_numpy_not_per_row(tmp_path):
    """4 MiB of 2-cell rows: one float per row in x, line numbers still in messages."""
    raw = b"a,label\n" + b"1,0\n" * MiB + b"2,x,3\n"
    from irkit.data.files import parse_csv
    with pytest.raises(DataError, match=rf"line {MiB + 2}: 3 cells"):
        parse_csv(raw, "t.csv")
    ds = parse_csv(b"a,label\r\n\r\n 1.5 ,0\r\n  \r\n2,1\r\n\n", "t.csv")
    np.testing.assert_array_equal(ds.x[:, 0], [1.5, 2])
    np.testing.assert_array_equal(ds.y, [0, 1])
    with pytest.raises(DataError, match="line 5, column 'a'"):
        parse_csv(b"a,label\n1,0\n\n2,1\nzz,0\n", "t.csv")
