"""A deterministic stub LLM judge: a real OpenAI-compatible HTTP server on 127.0.0.1, for the judge's tests and
compare's.

The stub rates deterministically: with a reference block, [[9]] if the answer contains the reference else
[[2]]; without, the answer's word count (capped at 10). Answers can steer it: ``GARBAGE`` gets a reply with no
rating, ``SLEEP=0.2`` delays the reply. The first path segment picks a failure mode for the whole server
(``ok``, ``slow``, ``unauth``, ``notfound``, ``leak500``, ``flaky<status>``, ``badjson``, ``garbage``).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "sk-test-VERY-SECRET-0123456789"
FAST = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01}
_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
_REFERENCE = re.compile(r"\[The Start of Reference Answer\]\n(.*?)\n\[The End of Reference Answer\]", re.S)


def _rate(user: str, auth: str | None, release: threading.Event) -> str:
    match = _ANSWER.search(user)
    answer = match.group(1) if match else user
    if "GARBAGE" in answer:
        return f"I will not rate this. (you sent {auth})"
    if sleep := re.search(r"SLEEP=(\d+\.\d+)", answer):
        release.wait(float(sleep.group(1)))
    ref = _REFERENCE.search(user)
    rating = (9 if ref.group(1).strip() in answer else 2) if ref else min(10, len(answer.split()))
    return f"The answer is adequate. Rating: [[{rating}]]"


def _chat(text: str) -> tuple[int, bytes]:
    return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def _reply(mode: str, user: str, hits: int, auth: str | None, release: threading.Event) -> tuple[int, bytes]:
    if mode == "slow":
        release.wait(5.0)  # far past any timeout here; set on shutdown so the thread ends at once
    if mode == "unauth":
        return 401, json.dumps({"error": f"bad key {auth}"}).encode()
    if mode == "notfound":
        return 404, b'{"error": "The model `gpt-4o` does not exist."}'
    if mode == "leak500":
        return 500, f"upstream failed for Authorization: {auth}".encode()
    if mode.startswith("flaky") and hits <= 2:
        return int(mode[len("flaky"):]), b"overloaded, try again"
    if mode == "badjson":
        return 200, b"this is {not json"
    if mode == "garbage":
        return _chat("Nice answer, I like it.")
    return _chat(_rate(user, auth, release))


class _Handler(BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user, auth = body["messages"][-1]["content"], self.headers.get("Authorization")
        with self.server.lock:
            self.server.requests.append({"path": self.path, "auth": auth, "body": body})
            self.server.hits[user] += 1
            hits = self.server.hits[user]
        status, payload = _reply(self.path.strip("/").split("/")[0], user, hits, auth, self.server.release)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()

    def url(self, mode: str, suffix: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.server_port}/{mode}{suffix}"


@contextmanager
def running_stub() -> Iterator[Stub]:
    """A started stub judge, shut down (and its sleeping handlers released) on exit."""
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
