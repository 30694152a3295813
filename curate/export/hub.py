"""Push an export folder to the Hugging Face Hub; every failure is one line and never shows the token."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from curate.errors import ConfigError, CurateError, DataError
from curate.export.writers import SPLIT
from curate.secrets import scrub

_REPO_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_HINT = "set HF_HUB_OFFLINE=0 and check the network, then rerun --push-to-hub"


def check_repo_id(repo_id: str) -> str:
    """Validate ``--push-to-hub REPO`` like the Hub (``NAME`` or ``NAMESPACE/NAME``) before any network."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    ok = (
        1 <= len(parts) <= 2
        and len(repo_id) <= 96
        and all(_REPO_PART.match(p) for p in parts)
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.endswith(".git")
    )
    if not ok:
        raise ConfigError(
            f"--push-to-hub {repo_id!r} is not a valid repo id; use NAMESPACE/NAME with letters, digits, "
            "'-', '_' or '.' (at most 96 characters, no '--' or '..')"
        )
    return repo_id


def _is_offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if env.strip().upper() in _TRUE:
        return True
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _resolve_token(token: str | None) -> str | None:
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a broken login (e.g. a failed OIDC exchange) is the same as no login here
        return None


def _one_line(text: str, secrets: list[str | None]) -> str:
    """``text`` scrubbed (:func:`curate.secrets.scrub`) and put on one line of at most 300 characters."""
    line = " ".join(scrub(text, secrets).split())
    return line[:300] + ("..." if len(line) > 300 else "")


def _check_reachable(endpoint: str) -> None:
    """Fail in seconds, not after the client's retries, when the Hub's host is unreachable (no proxy set)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=5).close()
    except OSError as e:
        raise DataError(
            f"cannot reach the Hugging Face Hub at {url.scheme}://{url.hostname} ({type(e).__name__}: {e}); "
            "check the network or HF_ENDPOINT, then rerun --push-to-hub"
        ) from None


def _check_folder(folder: Path) -> None:
    from curate.export.exporter import MARKER

    if not (folder / MARKER).is_file() or not (folder / "README.md").is_file():
        raise DataError(
            f"{folder} is not a curate export folder; run `curate export RUN --out {folder}` first"
        )
    try:
        json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{folder / MARKER} is unreadable ({e}); export the run again") from None


def _explain(exc: Exception, repo_id: str, endpoint: str, secrets: list[str | None]) -> CurateError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    detail = _one_line(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, OfflineModeIsEnabled):
        return DataError(f"cannot reach the Hugging Face Hub (offline mode); {_OFFLINE_HINT}")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return ConfigError(
            f"the Hugging Face Hub refused the token for {repo_id!r} (HTTP {status}); "
            "set HF_TOKEN to a token with write access or run `hf auth login`"
        )
    if isinstance(exc, HfHubHTTPError):
        return DataError(f"the Hugging Face Hub rejected the push to {repo_id!r} (HTTP {status}): {detail}")
    if isinstance(exc, ConnectionError | TimeoutError | OSError) or "connect" in type(exc).__name__.lower():
        return DataError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({detail}); check the network, then rerun"
        )
    return DataError(
        f"pushing to {repo_id!r} failed ({detail}); rerun --push-to-hub, or upload the folder by hand"
    )


UPLOAD_IGNORE = [".*", "*/.*"]
"""Never uploaded: hidden names (a writer's temporaries, caches)."""
STALE_SHARDS = ["data/*", f"{SPLIT}/*", "dataset_dict.json"]
"""Shards already in the repo that this upload does not bring are deleted in the same commit: the card reads
``data/train-*`` (or ``train/data-*``), and an earlier push with more shards would otherwise leave rows behind."""


def push_to_hub(folder: Path | str, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the dataset repo ``repo_id`` (if needed) and upload the export ``folder``; returns the repo URL.

    The folder goes up as it is on disk, one file per shard (a shard per data part, parts closed at ~256 MB by the
    resampler), through ``HfApi.upload_folder`` (which batches a large folder into several commits); shards of an
    earlier push that this one does not replace are deleted with it.

    The token comes from ``token``, then ``HF_TOKEN``, then the ``hf auth login`` store. Offline
    (``HF_HUB_OFFLINE=1``) or unreachable, it fails at once. Every error is a one-line :class:`CurateError`
    with the token scrubbed from it. An existing repo keeps its visibility; ``private`` applies on creation.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    _check_folder(folder)
    if _is_offline():
        raise DataError(
            f"cannot reach the Hugging Face Hub (offline: HF_HUB_OFFLINE is set); {_OFFLINE_HINT}"
        )
    token = _resolve_token(token)
    if not token:
        raise ConfigError("--push-to-hub needs a Hugging Face token; set HF_TOKEN or run `hf auth login`")
    secrets: list[str | None] = [token]  # scrub() adds HF_TOKEN and HUGGING_FACE_HUB_TOKEN itself
    endpoint = _endpoint()
    _check_reachable(endpoint)

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="dataset",
            commit_message="Upload curate export",
            ignore_patterns=UPLOAD_IGNORE,
            delete_patterns=STALE_SHARDS,
        )
    except Exception as e:  # every failure becomes one scrubbed line; the original (with headers) is dropped
        raise _explain(e, repo_id, endpoint, secrets) from None
    return str(url)
