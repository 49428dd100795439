"""The one durability rule for local files: temporary beside, fsync, rename, fsync the folder;
whole or not at all."""

import os
import stat

import pytest

from decflow import files
from decflow.files import atomic_path, write_atomic


def test_a_file_is_written_whole_with_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "a" / "report.html", "<p>one</p>")
    finally:
        os.umask(old)
    assert path.read_text() == "<p>one</p>"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not a temporary file's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "model.json", b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    path = write_atomic(tmp_path / "history.csv", "a,b\n")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".history.csv."))  # the temporary
    assert events[1][1] == str(path)
    assert events[2][1] == str(tmp_path)  # the folder holding the new name
