"""irkit.safe_io: capped reads and safe writes (issue 9, "Files from strangers").

Writes go through an exclusive temp file beside the target, are fsynced, then renamed; links,
devices, FIFOs, directories and empty names are refused before any work; a failure leaves no
temp file and the old target; every message names the file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from irkit.safe_io import (
    FileSafetyError,
    check_element_count,
    check_output,
    check_outputs,
    read_capped,
    write_atomic,
)


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---- writing --------------------------------------------------------------------------------
def test_write_atomic_writes_and_replaces(tmp_path):
    out = tmp_path / "m.onnx"
    write_atomic(out, b"one")
    write_atomic(out, b"two")
    assert out.read_bytes() == b"two"
    assert _listing(tmp_path) == ["m.onnx"]


def test_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_mode(tmp_path):
    out = tmp_path / "m.onnx"
    old = os.umask(0o022)
    try:
        write_atomic(out, b"x")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    out.chmod(0o640)
    write_atomic(out, b"y")
    assert out.stat().st_mode & 0o777 == 0o640


def test_symlink_at_target_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out.onnx"
    link.symlink_to(victim)
    with pytest.raises(FileSafetyError, match="symbolic link"):
        write_atomic(link, b"payload")
    assert victim.read_text() == "keep me"
    assert link.is_symlink()


def test_users_own_tmp_file_and_a_symlink_at_out_tmp_are_untouched(tmp_path):
    mine = tmp_path / "out.onnx.tmp"
    mine.write_text("my notes")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".out.onnx.tmp").symlink_to(victim)
    write_atomic(tmp_path / "out.onnx", b"model")
    assert mine.read_text() == "my notes"
    assert victim.read_text() == "keep me"
    assert (tmp_path / "out.onnx").read_bytes() == b"model"


@pytest.mark.parametrize("target, words", [("/dev/null", "not a regular file"),
                                           ("", "empty path")])
def test_devices_and_empty_names_are_refused_up_front(tmp_path, target, words):
    with pytest.raises(FileSafetyError, match=words):
        check_outputs({"-o": target}, [])
    with pytest.raises(FileSafetyError, match=words):
        write_atomic(target, b"x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_directory_and_fifo_targets_are_refused_and_nothing_is_left(tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileSafetyError, match="a directory"):
        write_atomic(folder, b"x")
    with pytest.raises(FileSafetyError, match="not a regular file"):
        write_atomic(fifo, b"x")
    assert _listing(tmp_path) == ["dir", "fifo"]
    assert _listing(folder) == []


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileSafetyError, match="does not exist"):
        check_output(tmp_path / "nope" / "m.onnx")


def test_failure_while_writing_leaves_no_temp_file_and_names_the_file(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(FileSafetyError) as info:
        write_atomic(out, b"new")
    assert str(out) in str(info.value) and "No space left" in str(info.value)
    assert out.read_bytes() == b"old"
    assert _listing(tmp_path) == ["m.onnx"]


def test_file_size_limit_leaves_no_partial_temp_file(tmp_path):
    """A real short write: RLIMIT_FSIZE makes write() fail with EFBIG, as a full disk would."""
    code = ("import sys; from irkit.safe_io import write_atomic\n"
            "write_atomic(sys.argv[1], b'x' * 200000)\n")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    out = tmp_path / "big.onnx"
    done = subprocess.run([sys.executable, "-c", code, str(out)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "FileSafetyError" in done.stderr and str(out) in done.stderr
    assert "File too large" in done.stderr
    assert _listing(tmp_path) == []


def test_outputs_equal_to_an_input_or_each_other_are_refused(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,label\n1,0\n")
    with pytest.raises(FileSafetyError, match="is the input"):
        check_outputs({"-o": str(data)}, [str(data)])
    with pytest.raises(FileSafetyError, match="same file"):
        check_outputs({"-o": str(tmp_path / "x.onnx"),
                       "--save-training": str(tmp_path / "." / "x.onnx")}, [])
    hard = tmp_path / "hard.csv"
    os.link(data, hard)
    with pytest.raises(FileSafetyError, match="is the input"):
        check_outputs({"-o": str(hard)}, [str(data)])
    check_outputs({"-o": str(tmp_path / "a.onnx"), "--save-training": None}, [str(data)])


# ---- reading --------------------------------------------------------------------------------
def test_read_capped_refuses_non_regular_files_and_oversized_ones(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileSafetyError, match="not a regular file"):
        read_capped(fifo, "model", "ONNX model")  # would hang if it were opened
    with pytest.raises(FileSafetyError, match="not a regular file"):
        read_capped("/dev/zero", "model", "ONNX model")
    with pytest.raises(FileSafetyError, match="missing.onnx: no such file"):
        read_capped(tmp_path / "missing.onnx", "model", "ONNX model")
    big = tmp_path / "big.onnx"
    big.write_bytes(b"x" * 100)
    monkeypatch.setenv("IRKIT_MAX_MODEL_BYTES", "99")
    with pytest.raises(FileSafetyError, match="IRKIT_MAX_MODEL_BYTES"):
        read_capped(big, "model", "ONNX model")
    monkeypatch.setenv("IRKIT_MAX_MODEL_BYTES", "100")
    assert read_capped(big, "model", "ONNX model") == b"x" * 100
    monkeypatch.setenv("IRKIT_MAX_MODEL_BYTES", "lots")
    with pytest.raises(FileSafetyError, match="not an integer"):
        read_capped(big, "model", "ONNX model")


def test_element_count_cap(monkeypatch):
    monkeypatch.setenv("IRKIT_MAX_ELEMENTS", "1000")
    check_element_count(1000, "initializer 'w'")
    with pytest.raises(FileSafetyError, match="initializer 'w' would have 1001 elements"):
        check_element_count(1001, "initializer 'w'")


def test_read_capped_allocates_the_file_size_not_the_cap(tmp_path):
    """Under a 1 GiB address-space limit a small model reads fine (the 2 GiB cap was once
    allocated up front)."""
    path = tmp_path / "small.onnx"
    path.write_bytes(b"x" * 1000)
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from irkit.safe_io import read_capped\n"
            "print(len(read_capped(sys.argv[1], 'model', 'ONNX model')))\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=path.parent)
    assert done.stdout.strip() == "1000", done.stderr
