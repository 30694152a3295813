"""LLM-as-a-judge scores for generations: MT-Bench single-answer grading on a 1-10 scale.

Method (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"): a strong model reads one
question and one answer, writes a short explanation, then rates the answer strictly as ``[[rating]]``. The
rating is read with MT-Bench's own regexes (``[[x]]``, falling back to ``[x]``); a reply without a rating in
1..10 scores ``None`` for that prompt rather than a guess. When reference answers are given (maths, where an
unaided judge is poor at checking correctness), the "single-v1-ref" variant of the prompt shows the reference
too. The prompt is ``evals/prompts/judge_single.txt`` (or a file of the same format) and the first 12 hex
digits of its sha256 come back with every score, so scores made with different prompts are never mixed up.

The judge is any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, TGI, LiteLLM ...),
reached with the standard library only. Usage::

    settings = JudgeSettings(url="http://127.0.0.1:8000/v1", model="Qwen2.5-72B-Instruct")
    res = judge(prompts, generations, settings)                  # {"score": 7.4, "scores": [...], ...}
    res = judge(prompts, generations, settings, references=gold)  # correctness-first grading

Failures: a timeout, connection error, HTTP 429/5xx, a reply that is not chat-completions JSON or has no
rating is retried with exponential backoff, then that prompt scores ``None`` (counted in ``n_failed``). A
rejected key (401/403), a wrong URL (404) or a redirect makes the whole judge unusable: :class:`JudgeError`
at once. So does a judge that fails on every prompt, or on each of the first :data:`FAIL_FAST` prompts to
finish: on hundreds of prompts, waiting out every retry would only deliver the same verdict an hour later.
The API key is read from the environment at call time; it never appears in errors, logs or results.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import dataclasses
import hashlib
import http.client
import importlib.resources
import json
import logging
import os
import re
import statistics
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FAIL_FAST = 5  # stop once this many prompts have finished and every one of them failed
MAX_ERRORS = 5  # distinct failure reasons kept in the result
_SNIPPET = 120  # characters of a server reply quoted in a reason
_ENDPOINT = "/chat/completions"
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")  # MT-Bench's one_score_pattern
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")  # MT-Bench's one_score_pattern_backup
_SECTION = re.compile(r"^=== (\w+) ===[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(question|answer|reference)\}")
_PLACEHOLDERS = {"system": (), "user": ("question", "answer"), "system_ref": (),
                 "user_ref": ("question", "answer", "reference")}
Outcome = tuple[float | None, str | None]  # (rating, why it is missing)


class JudgeError(RuntimeError):
    """The judge cannot be used at all (bad key, wrong URL, down, or failing on every prompt); one line."""


@dataclass(frozen=True)
class JudgeSettings:
    """Where the judge lives and how hard to try; checked on construction so a typo fails before any request.

    ``url`` is the server's base URL (``.../v1``; one already ending in ``/chat/completions`` works too).
    The API key is never stored here, only the name of the environment variable holding it, so settings can
    be logged and saved with a run. ``timeout_s`` bounds each socket operation of a request; ``retries`` are
    extra attempts per prompt, ``backoff_s * 2**k`` seconds apart. ``template`` is a prompt file in the
    format of the packaged ``evals/prompts/judge_single.txt``; ``None`` uses that one.
    """

    url: str
    model: str = "gpt-4o"
    api_key_env: str = "CURATE_JUDGE_API_KEY"
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    max_tokens: int = 512
    temperature: float = 0.0
    concurrency: int = 4
    template: str | None = None

    def __post_init__(self) -> None:
        if not _is_http_url(self.url):
            raise ValueError(f"JudgeSettings.url must be an http(s):// URL such as http://127.0.0.1:8000/v1, "
                             f"got {scrub_url(self.url)!r}")
        checks = {"timeout_s": (self.timeout_s > 0, "> 0"), "retries": (self.retries >= 0, ">= 0"),
                  "concurrency": (self.concurrency >= 1, ">= 1"), "backoff_s": (self.backoff_s >= 0, ">= 0"),
                  "max_tokens": (self.max_tokens >= 1, ">= 1")}
        for name, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"JudgeSettings.{name} must be {rule}, got {getattr(self, name)!r}")

    def __repr__(self) -> str:  # the URL may carry user:pass@ or ?key=
        shown = {f.name: scrub_url(self.url) if f.name == "url" else getattr(self, f.name)
                 for f in dataclasses.fields(self)}
        return "JudgeSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


@dataclass(frozen=True)
class JudgeTemplate:
    """A parsed prompt file: its sections by name and the hash that identifies it in results."""

    sections: dict[str, str]
    sha256: str  # first 12 hex digits of the sha256 of the file's text
    source: str


def judge(prompts: Sequence[str], answers: Sequence[str], settings: JudgeSettings,
          references: Sequence[str] | None = None) -> dict[str, Any]:
    """Rate each answer to its prompt 1-10 with the judge; the mean is the model's judge score.

    ``references`` (optional, one per prompt; an empty one means none for that prompt) switch to the
    reference-guided prompt. Scores keep the prompts' order whatever the concurrency. Prompts the judge could
    not rate are ``None`` and counted in ``n_failed`` with their reasons in ``errors``, so one flaky reply
    does not cost a whole comparison; :class:`JudgeError` is raised only when the judge is unusable (see the
    module docstring). A bad template or mismatched lengths are a ``ValueError``.

    Returns ``{"score", "scores", "n", "n_scored", "n_failed", "errors", "judge": {"url", "model",
    "template_sha256"}}``.
    """
    refs = _check_inputs(prompts, answers, references)
    template = load_template(settings.template)
    if any(refs) and "user_ref" not in template.sections:
        raise ValueError(f"judge template {template.source} has no '=== user_ref ===' section, which reference "
                         "answers need")
    client = _client(settings)
    messages = [_messages(template, q, a, r) for q, a, r in zip(prompts, answers, refs, strict=True)]
    return _summarise(_run_all(client, messages), settings, template)


def parse_rating(text: str) -> float | None:
    """The judge's rating as MT-Bench reads it: the first ``[[x]]``, else the first ``[x]``; ``None`` when
    there is none or it is outside 1..10 (an out-of-scale number is a misread, not a score)."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if match is None:
        return None
    rating = float(match.group(1))
    return rating if 1.0 <= rating <= 10.0 else None


def scrub_url(url: str) -> str:
    """``url`` safe to print or store: no ``user:pass@``, and query values masked (gateways take ``?key=``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.netloc:
        return "<URL with credentials>" if "@" in url else url.split("?")[0]
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def load_template(path: str | None = None) -> JudgeTemplate:
    """The packaged prompt (``path=None``) or a custom file, parsed and checked for its placeholders now, so a
    broken template fails before any request is sent."""
    if path is None:
        resource = importlib.resources.files("evals").joinpath("prompts", "judge_single.txt")
        return _parse_template(resource.read_text(encoding="utf-8"), "evals/prompts/judge_single.txt")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"JudgeSettings.template: cannot read {path}: {exc}") from None
    return _parse_template(text, path)


# --- template -------------------------------------------------------------------------------------------------


def _parse_template(text: str, source: str) -> JudgeTemplate:
    matches = list(_SECTION.finditer(text))
    ends = [m.start() for m in matches[1:]] + [len(text)]
    sections: dict[str, str] = {}
    for match, end in zip(matches, ends, strict=True):
        name = match.group(1)
        if name not in _PLACEHOLDERS or name in sections:
            raise ValueError(f"judge template {source}: unknown or repeated section {name!r} "
                             f"(sections: {', '.join(_PLACEHOLDERS)})")
        sections[name] = text[match.end():end].strip()
    for name in ("system", "user"):
        if not sections.get(name):
            raise ValueError(f"judge template {source}: missing or empty '=== {name} ===' section")
    for name, text_ in sections.items():
        missing = [p for p in _PLACEHOLDERS[name] if "{" + p + "}" not in text_]
        if missing:
            raise ValueError(f"judge template {source}: section {name!r} lacks "
                             + ", ".join("{" + p + "}" for p in missing))
    return JudgeTemplate(sections, hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], source)


def _messages(template: JudgeTemplate, question: str, answer: str, reference: str) -> list[dict[str, str]]:
    ref = bool(reference)
    system = template.sections["system_ref" if ref and "system_ref" in template.sections else "system"]
    user = template.sections["user_ref" if ref else "user"]
    values = {"question": question, "answer": answer, "reference": reference}

    def fill(text: str) -> str:  # one pass, so an answer containing "{reference}" is not substituted again
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

    return [{"role": "system", "content": fill(system)}, {"role": "user", "content": fill(user)}]


def _check_inputs(prompts: Sequence[str], answers: Sequence[str], references: Sequence[str] | None) -> list[str]:
    refs = [""] * len(prompts) if references is None else list(references)
    if not len(prompts) == len(answers) == len(refs):
        raise ValueError(f"judge: {len(prompts)} prompts, {len(answers)} answers and {len(refs)} references; "
                         "they must match one to one")
    return refs


# --- HTTP -----------------------------------------------------------------------------------------------------


class _Retry(Exception):
    """A failure another attempt may fix."""


class _GiveUp(Exception):
    """A failure of this prompt only, which retrying will not fix (e.g. HTTP 400 for an over-long prompt)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are refused: urllib would resend the Authorization header to wherever they point."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Client:
    settings: JudgeSettings
    endpoint: str
    shown: str  # the endpoint as printed
    headers: dict[str, str]
    secrets: tuple[str, ...]  # redacted from every reason, whatever a server echoes back
    opener: urllib.request.OpenerDirector
    stop: threading.Event


def _is_http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _client(settings: JudgeSettings) -> _Client:
    parts = urllib.parse.urlsplit(settings.url)
    path = parts.path.rstrip("/")
    path = path if path.endswith(_ENDPOINT) else path + _ENDPOINT
    endpoint = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, parts.query, ""))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    secrets: list[str] = [s for s in (parts.password, urllib.parse.unquote(parts.password or "")) if s]
    key = os.environ.get(settings.api_key_env, "").strip()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    elif parts.username is not None:  # http://user:pass@host/v1, e.g. a proxy with basic auth
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    secrets += [key, headers.get("Authorization", "")]
    opener = urllib.request.build_opener(_NoRedirect())  # proxies from the environment as of this call
    return _Client(settings, endpoint, scrub_url(endpoint), headers, tuple(s for s in secrets if s), opener,
                   threading.Event())


def _one_line(text: str, secrets: Sequence[str], tail: bool = False) -> str:
    """Server text fit for a one-line reason: secrets masked first (before any cut), whitespace squashed."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > _SNIPPET:
        text = "..." + text[-_SNIPPET:] if tail else text[:_SNIPPET] + "..."
    return text or "(empty)"


def _post(client: _Client, body: bytes) -> bytes:
    request = urllib.request.Request(client.endpoint, data=body, headers=client.headers, method="POST")
    timeout = client.settings.timeout_s
    try:
        with client.opener.open(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise _http_failure(client, exc) from None
    except TimeoutError:
        raise _Retry(f"timed out after {timeout:g} s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _Retry(f"timed out after {timeout:g} s") from None
        raise _Retry(f"connection failed ({_one_line(str(exc.reason), client.secrets)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retry(f"connection failed ({type(exc).__name__}: {_one_line(str(exc), client.secrets)})") from None


def _http_failure(client: _Client, exc: urllib.error.HTTPError) -> Exception:
    """What an HTTP error status means for this prompt (retry, give up) or for the whole judge (JudgeError)."""
    code, env = exc.code, client.settings.api_key_env
    try:
        detail = _one_line(exc.read(4096).decode("utf-8", "replace"), client.secrets)
    except (OSError, http.client.HTTPException):
        detail = "(no body)"
    if code in (401, 403):  # the body is not quoted: some servers echo a partly masked key
        fix = (f"check that ${env} holds a valid key for this server" if os.environ.get(env, "").strip()
               else f"set ${env} to the server's API key")
        return JudgeError(f"judge at {client.shown} refused the request (HTTP {code}): {fix}")
    if code == 404:
        return JudgeError(f"judge at {client.shown} answered HTTP 404 ({detail}): pass the server's base URL "
                          f"(e.g. http://host:8000/v1) and a model it serves (now {client.settings.model!r})")
    if 300 <= code < 400:
        where = scrub_url(exc.headers.get("Location", "") or "?")
        return JudgeError(f"judge at {client.shown} redirects (HTTP {code}) to {where}: pass the final URL")
    if code == 429 or code >= 500:
        return _Retry(f"HTTP {code} ({detail})")
    return _GiveUp(f"HTTP {code} ({detail})")


def _reply_text(raw: bytes, client: _Client) -> str:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        shown = _one_line(raw.decode("utf-8", "replace"), client.secrets)
        raise _Retry(f"reply is not chat-completions JSON: {shown}") from None
    if not isinstance(content, str):
        raise _Retry("reply has no text in choices[0].message.content")
    return content


def _attempt(client: _Client, body: bytes) -> float:
    text = _reply_text(_post(client, body), client)
    rating = parse_rating(text)
    if rating is None:  # the rating ends the reply, so its tail is the telling part
        raise _Retry(f"no [[rating]] in 1..10 in the reply: {_one_line(text, client.secrets, tail=True)}")
    return rating


# --- running --------------------------------------------------------------------------------------------------


def _judge_one(client: _Client, messages: list[dict[str, str]]) -> Outcome:
    """One prompt with retries and backoff; never raises except JudgeError (the judge is unusable)."""
    s = client.settings
    body = json.dumps({"model": s.model, "messages": messages, "temperature": s.temperature,
                       "max_tokens": s.max_tokens}).encode("utf-8")
    reason, tries = "not attempted", 0
    while tries <= s.retries and not client.stop.is_set():
        tries += 1
        try:
            return _attempt(client, body), None
        except _GiveUp as exc:
            return None, str(exc)
        except JudgeError:
            client.stop.set()  # here, not in the caller: this worker may start its next prompt first
            raise
        except _Retry as exc:
            reason = str(exc)
        if tries <= s.retries:
            delay = s.backoff_s * 2 ** (tries - 1)
            log.debug("judge: attempt %d failed (%s); retrying in %.2f s", tries, reason, delay)
            client.stop.wait(delay)
    return None, f"{reason} ({tries} attempt{'s' if tries != 1 else ''})"


def _run_all(client: _Client, messages: list[list[dict[str, str]]]) -> list[Outcome]:
    """All prompts on a thread pool; results by index. Stops everything on JudgeError or a failing start."""
    n = len(messages)
    outcomes: list[Outcome | None] = [None] * n
    if n == 0:
        return []
    with cf.ThreadPoolExecutor(min(client.settings.concurrency, n), thread_name_prefix="curate-judge") as pool:
        futures = {pool.submit(_judge_one, client, m): i for i, m in enumerate(messages)}
        try:
            n_done = n_ok = 0
            for future in cf.as_completed(futures):
                outcome = outcomes[futures[future]] = future.result()
                n_done, n_ok = n_done + 1, n_ok + (outcome[0] is not None)
                if n_ok == 0 and n_done >= min(FAIL_FAST, n):
                    raise _all_failed(client, outcomes, n_done, n)
        except BaseException:  # JudgeError, or Ctrl-C: running prompts stop after their current request
            client.stop.set()
            for future in futures:
                future.cancel()
            raise
    return [o if o is not None else (None, "not attempted") for o in outcomes]


def _all_failed(client: _Client, outcomes: list[Outcome | None], n_done: int, n: int) -> JudgeError:
    reason = next(o[1] for o in outcomes if o is not None and o[1])
    which = (f"each of the first {n_done} of {n} prompts (stopped)" if n_done < n
             else "its only prompt" if n == 1 else f"all {n} prompts")
    return JudgeError(f"judge at {client.shown} failed on {which}, first: {reason}; {_fix(reason, client)}")


def _fix(reason: str, client: _Client) -> str:
    s = client.settings
    if reason.startswith("timed out"):
        return f"check the server is up and not overloaded, or raise JudgeSettings.timeout_s (now {s.timeout_s:g})"
    if reason.startswith("connection failed"):
        return "check the server is running and reachable at that address"
    if reason.startswith("no [[rating]]"):
        return f"use a judge model that follows the [[rating]] format (now {s.model!r}) or fix the template"
    return f"check the server is an OpenAI-compatible endpoint serving model {s.model!r}"


def _summarise(outcomes: list[Outcome], settings: JudgeSettings, template: JudgeTemplate) -> dict[str, Any]:
    scores = [score for score, _ in outcomes]
    rated = [score for score in scores if score is not None]
    errors = list(dict.fromkeys(reason for _, reason in outcomes if reason))[:MAX_ERRORS]  # prompt order
    if len(rated) < len(scores):
        log.warning("judge: %d of %d prompts not rated, first: %s", len(scores) - len(rated), len(scores),
                    errors[0])
    return {"score": statistics.fmean(rated) if rated else None, "scores": scores, "n": len(scores),
            "n_scored": len(rated), "n_failed": len(scores) - len(rated), "errors": errors,
            "judge": {"url": scrub_url(settings.url), "model": settings.model,
                      "template_sha256": template.sha256}}
