"""Logging for the whole tool, set up once by the CLI (library code only calls ``logging.getLogger``).

curate's packages (``curate``, ``solvers``, ``baselines``, ``evals``) log progress at INFO to stderr;
``--quiet`` keeps warnings and errors only; ``--json-logs`` writes one JSON object per record instead of text, the
same stream the per-step JSON lines use. Other libraries keep their own loggers, shown from WARNING up.
Importing curate configures nothing (STYLE.md: no import-time side effects).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

PACKAGES = ("curate", "solvers", "baselines", "evals")
_state = {"quiet": False, "json": False}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _not_deepspeed_cpu_notice(record: logging.LogRecord) -> bool:
    # DeepSpeed warns on import that it fell back to the CPU whenever it is imported on a machine without a GPU
    # (transformers and peft import it); curate picks the device itself (device=auto), so the notice is noise.
    return not record.getMessage().startswith("Setting accelerator to CPU")


def setup_logging(*, quiet: bool | None = None, json_logs: bool | None = None) -> None:
    """(Re)configure curate's loggers; an argument left ``None`` keeps its current setting, so the app callback
    and each command's ``--quiet`` / ``--json-logs`` can each set their part."""
    if quiet is not None:
        _state["quiet"] = quiet
    if json_logs is not None:
        _state["json"] = json_logs
    deepspeed = logging.getLogger("DeepSpeed")  # filters survive DeepSpeed creating its logger on import
    if _not_deepspeed_cpu_notice not in deepspeed.filters:
        deepspeed.addFilter(_not_deepspeed_cpu_notice)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if _state["json"] else logging.Formatter("%(message)s"))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.WARNING if _state["quiet"] else logging.INFO)
        logger.propagate = False

