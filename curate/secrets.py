"""Keep Hugging Face tokens out of every message, log line and error."""

from __future__ import annotations

import os
import re

_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")


def scrub(text: str, extra: list[str] | None = None) -> str:
    """Replace anything that looks like an HF token (and any value in ``extra``) with ``***``."""
    for secret in [*(extra or []), os.environ.get("HF_TOKEN", ""), os.environ.get("HUGGING_FACE_HUB_TOKEN", "")]:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _TOKEN_RE.sub("hf_***", text)
