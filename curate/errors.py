"""Error types whose class tells the caller what to do; the CLI maps them to exit codes.

``CurateError`` and its subclasses carry a one-line message that names the file, row or flag and the fix. The CLI
prints it and exits with ``exit_code`` (2 for bad input or config); anything else is an unexpected failure (1).
"""

from __future__ import annotations


class CurateError(Exception):
    """Base class: a problem the user can fix; printed as one line, never a traceback."""

    exit_code = 2


class ConfigError(CurateError):
    """A flag, config key or option value is invalid."""


class DataError(CurateError):
    """An input file, database or run folder is missing, unreadable or inconsistent."""


class DependencyError(CurateError):
    """An optional dependency is missing; the message holds the exact pip line."""


class LockError(CurateError):
    """Another process holds the database."""


class Interrupted(CurateError):
    """Ctrl-C: the message says what was kept and the command that continues."""

    exit_code = 130


def require(module: str, extra: str) -> None:
    """Raise :class:`DependencyError` with the install line when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DependencyError(f"this needs {module!r}: pip install 'curate[{extra}]'")
