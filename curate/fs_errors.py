"""Filesystem faults the user can fix (no permission, a read-only mount, a full disk, a quota) as one-line messages.

A full disk or a read-only folder is bad input, not a crash: the message names the path (the destination, not a
temporary name the atomic writer made next to it) and the fix. Libraries report these faults in different shapes:
Python and PyArrow set ``errno`` (PyArrow without a file name), Polars raises an ``OSError`` whose text ends in
``(os error 28)``, DuckDB raises its own ``IOException`` with ``"errno":"28"`` in the text, so :func:`errno_of`
reads all of them.

:func:`os_error_message` is what the CLI guard uses for an ``OSError`` that escaped a command;
:func:`fs_error` is what a writer (``resample``, ``export``) uses at its write boundary, where it knows the
destination better than the exception does.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from curate.errors import DataError

# The faults that are the user's to fix; anything else stays an unexpected error.
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})

_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\D{0,4}(\d+)", re.IGNORECASE)
_TEXT_ERRNOS = (
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("read-only file system", errno.EROFS),
    ("permission denied", errno.EACCES),
)
# What solvers.common.io's atomic writers name their temporaries: ".<dest>.<8 random>.tmp" and ".<dest>.old".
_TEMP_NAME = re.compile(r"^\.(?P<dest>.+)\.(?:[A-Za-z0-9_]{8}\.tmp|old)$")


def errno_of(exc: BaseException) -> int | None:
    """The errno behind ``exc``, whichever library raised it (see the module docstring), or None."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return code
    text = str(exc)
    found = _ERRNO_IN_TEXT.search(text)
    if found:
        return int(found.group(1))
    low = text.lower()
    return next((code for needle, code in _TEXT_ERRNOS if needle in low), None)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one the atomic writers give a file or folder while writing it (a kill leaves them)."""
    return _TEMP_NAME.match(name) is not None


def destination(path: Path | str) -> Path:
    """The path a user asked for, when ``path`` is a temporary name the atomic writers made next to it (or a file
    inside one): a message about ``.data.k2j4h1x0.tmp/part-00000.parquet`` names ``data`` instead."""
    p = Path(path)
    for i, part in enumerate(p.parts):
        m = _TEMP_NAME.match(part)
        if m:
            return Path(*p.parts[:i], m.group("dest"))
    return p


def _fix(code: int, path: Path | None, writing: bool) -> str:
    where = f" {path}" if path is not None else ""
    folder = path.parent if path is not None else None  # where the writer creates its temporary name
    if code in (errno.EACCES, errno.EPERM):
        if not writing:  # the guard does not know whether the command was reading or writing
            return (f"permission denied on{where or ' a file'}; give yourself access to it and its folder "
                    "(ls -l, chmod u+rwX) or choose another path")
        return (f"permission denied writing{where}; make {folder or 'the folder'} writable "
                f"(chmod u+w) or choose another folder with --out")
    if code == errno.EROFS:
        return f"read-only file system at{where or ' the destination'}; choose a folder on a writable disk with --out"
    if code == errno.ENOSPC:
        return (f"no space left on the device{f' writing{where}' if where else ''}; free space there"
                f"{f' (df -h {folder})' if folder else ''} or choose a folder on another disk with --out")
    return (f"disk quota exceeded{f' writing{where}' if where else ''}; free space in your quota or choose a folder "
            "on another disk with --out")


def os_error_message(e: BaseException, path: Path | str | None = None) -> str | None:
    """One line naming the path and the fix for a permission, read-only, full-disk or quota fault; None otherwise.

    For the CLI guard: ``os_error_message(e)`` on any exception that escaped a command (an ``OSError``, or DuckDB's
    ``IOException``, whose errno is only in its text). ``path`` is the destination a writer knows it was writing
    (it wins over the exception's own ``filename``, which is often a temporary name, or missing, as PyArrow and
    Polars leave it); it also words a permission fault as a write. Earlier-written data is the caller's to keep:
    this only words the message.
    """
    code = errno_of(e)
    if code not in USER_ERRNOS:
        return None
    name = path if path is not None else getattr(e, "filename", None)
    where = destination(os.fsdecode(name)) if isinstance(name, str | bytes | os.PathLike) else None
    return _fix(code, where, writing=path is not None)


def fs_error(e: BaseException, path: Path | str) -> DataError | None:
    """:func:`os_error_message` as the :class:`DataError` a writer raises at its write boundary (exit 2)."""
    msg = os_error_message(e, path)
    return DataError(msg) if msg else None
