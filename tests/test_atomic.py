"""Tests of deblur.atomic: all or nothing, never a temporary file left."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from deblur.atomic import (
    atomic_path,
    atomic_write,
    is_atomic_temp,
    write_bytes_atomic,
    write_text_atomic,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_success_replaces_target(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".png"
        assert tmp.exists() and tmp.stat().st_size == 0
        assert target.read_bytes() == b"old"  # untouched until the body ends
        tmp.write_bytes(b"new")

    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == ["out.png"]


def test_atomic_path_body_raises_target_untouched(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")

    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_body_raises_no_target_created(tmp_path):
    with pytest.raises(ValueError, match="bad"):
        with atomic_path(tmp_path / "new.tif") as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError("bad")

    assert _names(tmp_path) == []


def test_atomic_path_keyboard_interrupt_cleans_up(tmp_path):
    target = tmp_path / "out.bin"

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt

    assert _names(tmp_path) == []


def test_atomic_path_concurrent_contexts_unique_names(tmp_path):
    target = tmp_path / "same.png"

    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        assert is_atomic_temp(first) and is_atomic_temp(second)
        first.write_bytes(b"first")
        second.write_bytes(b"second")

    assert target.read_bytes() == b"first"  # the later commit wins
    assert _names(tmp_path) == ["same.png"]


def test_atomic_path_many_threads_one_target_complete_file(tmp_path):
    target = tmp_path / "report.json"
    payloads = [bytes([i]) * 10_000 for i in range(16)]

    def write(payload):
        with atomic_path(target, fsync=False) as tmp:
            tmp.write_bytes(payload)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, payloads * 4))

    assert target.read_bytes() in payloads
    assert _names(tmp_path) == ["report.json"]


def test_atomic_path_no_overwrite_existing_target_refused(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"keep")

    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_path(target, overwrite=False):
            pass

    assert target.read_bytes() == b"keep"
    assert _names(tmp_path) == ["out.png"]


def test_atomic_path_no_overwrite_target_appears_during_body_refused(tmp_path):
    target = tmp_path / "out.png"

    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"theirs")  # another process got there first

    assert target.read_bytes() == b"theirs"
    assert _names(tmp_path) == ["out.png"]


def test_atomic_path_no_overwrite_new_target_written(tmp_path):
    target = tmp_path / "out.png"

    with atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"mine")

    assert target.read_bytes() == b"mine"
    assert _names(tmp_path) == ["out.png"]


def test_atomic_path_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        with atomic_path(tmp_path / "missing" / "out.png"):
            pass


def test_atomic_path_body_removes_temp_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="disappeared"):
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.unlink()

    assert _names(tmp_path) == []


def test_atomic_path_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)

    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o640


def test_atomic_write_text_mode_writes_utf8(tmp_path):
    target = tmp_path / "notes.txt"

    with atomic_write(target, "w") as file:
        file.write("λ = 0.6\n")

    assert target.read_bytes() == "λ = 0.6\n".encode()


def test_atomic_write_body_raises_nothing_written(tmp_path):
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(tmp_path / "k.npy") as file:
            file.write(b"\x93NUMPY")
            raise OSError("disk full")

    assert _names(tmp_path) == []


@pytest.mark.parametrize("mode", ["a", "r", "wb+", "x"])
def test_atomic_write_bad_mode_raises(tmp_path, mode):
    with pytest.raises(ValueError, match="mode must be one of"):
        with atomic_write(tmp_path / "out", mode):
            pass

    assert _names(tmp_path) == []


def test_write_text_atomic_keeps_newlines(tmp_path):
    target = write_text_atomic(tmp_path / "r.csv", "a,b\r\n1,2\n")

    assert target.read_bytes() == b"a,b\r\n1,2\n"


def test_write_bytes_atomic_no_overwrite_refused(tmp_path):
    target = write_bytes_atomic(tmp_path / "k.bin", b"\x00\x01")

    with pytest.raises(FileExistsError, match="already exists"):
        write_bytes_atomic(target, b"other", overwrite=False)

    assert target.read_bytes() == b"\x00\x01"
    assert _names(tmp_path) == ["k.bin"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".out.0123456789ab.tmp.png", True),
        (".my.file.0123456789ab.tmp.tif", True),
        (".out.0123456789ab.tmp", True),
        ("out.png", False),
        (".out.png", False),
        (".out.xyz.tmp.png", False),
        ("out.0123456789ab.tmp.png", False),
    ],
)
def test_is_atomic_temp_names(name, expected):
    assert is_atomic_temp(name) is expected
