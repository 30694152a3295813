"""Keep Hugging Face tokens out of every message, log line and error: the project's one scrubber.

What counts as a secret: anything shaped like an HF token (``hf_`` and six or more letters or digits), the value
after a ``Bearer`` or ``Authorization`` header word, the values of ``HF_TOKEN`` and ``HUGGING_FACE_HUB_TOKEN``,
and any secret the caller passes (e.g. the token a push was given). Patterns catch tokens nobody told us about;
the exact values catch tokens of any shape. Shaping a message for display (one line, truncated) is left to the
caller.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")
# "Authorization: Bearer X" must lose X, not the word Bearer; a bare "Authorization: X" or "Bearer X" loses X.
_HEADER_RE = re.compile(r"(?i)(authorization:\s*(?:(?:bearer|basic)\s+)?|bearer\s+)\S+")
_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_MIN_ENV_SECRET = 4  # a shorter env value is not a real token, and replacing it would garble ordinary words


def scrub(text: str, extra: Iterable[str | None] | None = None) -> str:
    """``text`` with every secret replaced by ``***`` (an HF token by ``hf_***``).

    Args:
        text: a message, log line or error text.
        extra: further secrets to remove wherever they appear (empty and ``None`` entries are skipped).

    Returns:
        The scrubbed text; line breaks and length are left as they were.
    """
    secrets = [s for s in extra or () if s]
    secrets += [v for v in (os.environ.get(name, "") for name in _TOKEN_VARS) if len(v) >= _MIN_ENV_SECRET]
    for secret in secrets:
        text = text.replace(secret, "***")
    return _HEADER_RE.sub(r"\1***", _TOKEN_RE.sub("hf_***", text))
