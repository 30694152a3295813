"""The project's one atomic writer (solvers.common.io): umask modes, sync order, nothing half-written left behind."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from solvers.common import io as _io


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it(umask):
    for m in (0o022, 0o027, 0o077, 0o002):
        umask(m)
        assert _io.current_umask() == m
        assert os.umask(m) == m  # unchanged by the read


@pytest.mark.parametrize(("mask", "fmode", "dmode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                      (0o002, 0o664, 0o775)])
def test_files_and_folders_follow_the_umask(tmp_path, umask, mask, fmode, dmode):
    umask(mask)
    assert mode(_io.write_text(tmp_path / "a" / "x.txt", "x")) == fmode
    assert mode(tmp_path / "a") == dmode  # parent folders made on the way too
    assert mode(_io.write_json(tmp_path / "x.json", {"a": 1})) == fmode
    with _io.atomic_path(tmp_path / "by_name.bin") as tmp:
        tmp.write_bytes(b"1")
    assert mode(tmp_path / "by_name.bin") == fmode
    with _io.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "plain.txt").write_text("p")
        # a library writing through its own mkstemp (safetensors does) leaves 0600 files and 0700 folders
        fd, name = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        os.replace(name, tmp / "private.bin")
        Path(tempfile.mkdtemp(dir=tmp)).rename(tmp / "private_dir")
        (tmp / "tool.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "tool.sh", 0o700)
    out = tmp_path / "folder"
    assert mode(out) == dmode
    assert {p.name: mode(p) for p in out.rglob("*")} == {
        "sub": dmode, "plain.txt": fmode, "private.bin": fmode, "private_dir": dmode, "tool.sh": dmode}


def test_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "fsync", fsync)
    monkeypatch.setattr(_io.os, "replace", replace)
    _io.write_text(tmp_path / "w.json", "{}")
    assert events == [("fsync", "file"), ("replace", "w.json"), ("fsync", "dir")]

    events.clear()
    with _io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a.txt").write_text("a")
    assert events == [("fsync", "file"), ("fsync", "dir"), ("replace", "d"), ("fsync", "dir")]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = _io.write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError), _io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    with pytest.raises(RuntimeError), _io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_folder_replace_failure_puts_the_previous_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "d"
    with _io.atomic_dir(dest) as tmp:
        (tmp / "v1").write_text("1")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", replace)
    monkeypatch.setattr(_io, "exchange", lambda a, b: False)  # a system without renameat2: the two renames
    with pytest.raises(OSError, match="disk full"), _io.atomic_dir(dest) as tmp:
        (tmp / "v2").write_text("2")
    assert [p.name for p in dest.iterdir()] == ["v1"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_folder_replace_swaps_in_one_step_where_the_system_can(tmp_path, monkeypatch):
    dest = tmp_path / "d"
    with _io.atomic_dir(dest) as tmp:
        (tmp / "v1").write_text("1")
    monkeypatch.setattr(_io.os, "replace", lambda *a: pytest.fail("a rename pair, not one exchange"))
    with _io.atomic_dir(dest) as tmp:
        (tmp / "v2").write_text("2")
    assert [p.name for p in dest.iterdir()] == ["v2"] and [p.name for p in tmp_path.iterdir()] == ["d"]


def test_scalebio_checkpoint_goes_through_the_writer(tmp_path, umask):
    import torch

    from solvers.scalebio import checkpoint

    umask(0o022)
    target = checkpoint.save(tmp_path / "ck", {"u": torch.ones(2)})
    assert mode(target) == 0o644 and mode(tmp_path / "ck") == 0o755
    assert torch.equal(checkpoint.load(tmp_path / "ck")["u"], torch.ones(2))
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["scalebio.pt"]
