"""The shape of the per-step progress record, shared so one progress bar or JSON log serves every method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

StepCallback = Callable[[dict[str, Any]], None]
"""Called once per optimisation step with a record holding at least ``stage`` (str) and ``step`` (int, 0-based
within the stage), plus the stage's own metrics (``loss``, ``lr``, ...). A dict rather than positional
arguments so a stage can add a metric without breaking any caller."""
