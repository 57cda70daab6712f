"""Atomic writes: readers see the old file or the new one, never a torn or lost file."""

from __future__ import annotations

import os
import stat

import pytest

import maskbench.io as mio


def test_write_creates_folders_and_leaves_no_temporary_files(tmp_path):
    path = mio.atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert path.read_text() == "hello"
    mio.atomic_write_text(path, "again")
    assert path.read_text() == "again"
    assert [p.name for p in path.parent.iterdir()] == ["b.txt"]


def test_written_files_get_a_normal_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        path = mio.atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        mio.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
