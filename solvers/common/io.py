"""The project's one atomic writer: a crash or a full disk never leaves a half-written file or folder that looks
complete, and what is written gets the modes an ordinary write would.

Everything goes to a temporary name in the destination's folder (same filesystem, so the rename is atomic). A
file is synced to disk before ``os.replace`` moves it into place, and the destination's folder is synced after,
so the rename itself survives a power cut; a folder has every file and subfolder in it synced before its rename.

``tempfile`` creates files 0600 and folders 0700; they stay private while being written, and before the rename
files get ``0o666 & ~umask`` and folders ``0o777 & ~umask`` (0644 and 0755 under the usual umask 022), the umask
read afresh on every write. Everything a library wrote inside a temporary folder is brought to the same modes
(safetensors, for one, writes 0600 files).

Used by every package (solvers, baselines, evals and curate through ``curate.io``); like the rest of
:mod:`solvers.common` it imports neither torch nor any other package of the project.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc/self/status``).

    Elsewhere it is read by setting and restoring it, under a lock and through a restrictive 077 in between, so a
    file another thread creates in that instant is never more open than intended.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode an ordinary ``mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def fsync_file(path: Path | str) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path | str) -> None:
    """Flush a folder's entries (renames, new names) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the data files are synced regardless
        pass
    finally:
        os.close(fd)


def settle_tree(root: Path | str) -> None:
    """Give everything under ``root`` (``root`` included) the modes an ordinary write would, then sync it to disk:
    every regular file, then every folder, deepest first; links are left alone and not followed.

    The modes matter because some libraries write through private temporary files of their own: safetensors,
    behind ``save_pretrained``, leaves ``model.safetensors`` 0600. An executable file keeps its execute bits
    (``0o777 & ~umask``).
    """
    fmode, dmode = file_mode(), dir_mode()
    for top, dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(top, name)
            if os.path.islink(p):
                continue
            fsync_file(p)
            os.chmod(p, dmode if os.stat(p).st_mode & 0o111 else fmode)
        for name in dirs:
            p = os.path.join(top, name)
            if not os.path.islink(p):
                fsync_dir(p)
        if top == os.fspath(root):
            fsync_dir(top)
        os.chmod(top, dmode)


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary file path next to ``dest`` (already created, empty) to write to by name; on success it is
    synced, given mode ``0o666 & ~umask`` and replaces ``dest``, and the folder is synced; on error it is
    removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        fsync_file(tmp)
        # Widened only now: private while being written, and writable by name whatever the umask.
        os.chmod(tmp, file_mode())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``dest``; on success it and everything in it get the umask's modes and are
    synced (:func:`settle_tree`), it replaces ``dest`` (old content removed) and the parent folder is synced; on
    error it is removed.

    An existing ``dest`` is swapped with the new folder in one step where the system can (:func:`exchange`, Linux),
    so no kill leaves ``dest`` missing: it is the old content, whole, until it is the new one, whole. Elsewhere it
    is moved aside and the new folder renamed in (a kill between the two leaves ``.<dest>.old`` and no ``dest``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        settle_tree(tmp)  # the folder itself too: mkdtemp made it 0700
        if dest.exists() and exchange(tmp, dest):
            fsync_dir(dest.parent)  # tmp now holds the previous content, removed below
        elif dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)  # put the previous content back rather than leave no dest at all
                raise
            fsync_dir(dest.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(dest: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically, creating parent folders; returns ``dest`` as a path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-JSON values as ``str``) to ``dest`` atomically."""
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
