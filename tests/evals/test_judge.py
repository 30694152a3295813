"""The LLM judge against a real HTTP stub judge on 127.0.0.1 (a fresh server per test, so no shared state).

The stub rates deterministically: with a reference block, [[9]] if the answer contains the reference else
[[2]]; without, the answer's word count (capped at 10). Answers can steer it: ``GARBAGE`` gets a reply with no
rating, ``SLEEP=0.2`` delays the reply. The first path segment picks a failure mode for the whole server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from evals import judge as judge_mod
from evals.judge import JudgeError, JudgeSettings, judge, load_template, parse_rating, scrub_url
from tests.judge_stub import FAST, SECRET, running_stub

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stub():
    with running_stub() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_proxy_no_key(monkeypatch):
    """Requests must reach 127.0.0.1 directly, and no key from the developer's shell may leak in."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CURATE_JUDGE_API_KEY", raising=False)


def _settings(url: str, **kw) -> JudgeSettings:
    return JudgeSettings(url=url, **{**FAST, **kw})


# --- scoring ----------------------------------------------------------------------------------------------


def test_scores_are_per_prompt_in_order_and_averaged(stub):
    # the earlier prompts answer later, so completion order is the reverse of prompt order
    answers = ["w SLEEP=0.30", "w w SLEEP=0.15", "w w w", "a b c d e f g h i j k l"]
    res = judge([f"q{i}" for i in range(4)], answers, _settings(stub.url("ok"), concurrency=4))
    assert res["scores"] == [2.0, 3.0, 3.0, 10.0]
    assert res["score"] == pytest.approx(18 / 4)
    assert (res["n"], res["n_scored"], res["n_failed"], res["errors"]) == (4, 4, 0, [])
    assert res["judge"] == {"url": stub.url("ok"), "model": "gpt-4o", "template_sha256": load_template().sha256}


def test_request_is_an_openai_chat_completion(stub):
    judge(["What is 2+2?"], ["four"], _settings(stub.url("ok"), model="judge-7b", max_tokens=64, temperature=0.5))
    (req,) = stub.requests
    assert req["path"] == "/ok/v1/chat/completions"
    body = req["body"]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("judge-7b", 64, 0.5)
    system, user = body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "[[rating]]" in system["content"] and "impartial" in system["content"]
    assert "What is 2+2?" in user["content"] and "four" in user["content"]
    assert "Reference" not in user["content"]
    assert req["auth"] is None  # no key in the environment: no Authorization header at all


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/v1/chat/completions", "/v1/chat/completions/"])
def test_base_url_or_full_endpoint_both_work(stub, suffix):
    res = judge(["q"], ["one two"], _settings(stub.url("ok", suffix)))
    assert res["scores"] == [2.0]
    assert [r["path"] for r in stub.requests] == ["/ok/v1/chat/completions"]


def test_references_switch_to_the_reference_prompt(stub):
    res = judge(["x?", "y?", "z?"], ["x is 4", "y is 5", "z is 1 2 3"], _settings(stub.url("ok")),
                references=["4", "4", ""])
    assert res["scores"] == [9.0, 2.0, 5.0]  # the empty reference means "none" for that prompt: word count
    by_question = {r["body"]["messages"][1]["content"].split("\n")[1]: r["body"]["messages"] for r in stub.requests}
    assert "[The Start of Reference Answer]\n4\n" in by_question["x?"][1]["content"]
    assert "correctness" in by_question["x?"][0]["content"]
    assert "Reference" not in by_question["z?"][1]["content"]


def test_answer_text_is_not_treated_as_a_placeholder(stub):
    judge(["q {answer}"], ["says {reference} and {question}"], _settings(stub.url("ok")), references=["R"])
    user = stub.requests[0]["body"]["messages"][1]["content"]
    assert "q {answer}" in user and "says {reference} and {question}" in user


def test_no_prompts_no_requests(stub):
    res = judge([], [], _settings(stub.url("ok")))
    assert (res["score"], res["scores"], res["n"], res["n_failed"]) == (None, [], 0, 0)
    assert stub.requests == []


def test_mismatched_lengths_are_a_value_error(stub):
    with pytest.raises(ValueError, match="2 prompts, 1 answers"):
        judge(["a", "b"], ["x"], _settings(stub.url("ok")))
    with pytest.raises(ValueError, match="1 references"):
        judge(["a", "b"], ["x", "y"], _settings(stub.url("ok")), references=["r"])


# --- failures ---------------------------------------------------------------------------------------------


def test_unrated_replies_score_none_and_are_counted(stub):
    answers = ["one two", "GARBAGE", "one two three", "GARBAGE too"]
    res = judge(["a", "b", "c", "d"], answers, _settings(stub.url("ok"), retries=2))
    assert res["scores"] == [2.0, None, 3.0, None]
    assert res["score"] == pytest.approx(2.5)
    assert (res["n_scored"], res["n_failed"]) == (2, 2)
    assert 1 <= len(res["errors"]) <= 2 and all("no [[rating]]" in e and "(3 attempts)" in e for e in res["errors"])
    hits = Counter(r["body"]["messages"][1]["content"].split("\n")[1] for r in stub.requests)
    assert hits == {"a": 1, "b": 3, "c": 1, "d": 3}  # retried: retries + 1 attempts each


def test_timeouts_everywhere_raise_a_clear_error_quickly(stub):
    settings = _settings(stub.url("slow"), timeout_s=0.3, retries=1, concurrency=2)
    start = time.monotonic()
    with pytest.raises(JudgeError) as info:
        judge(["a", "b"], ["x", "y"], settings)
    assert time.monotonic() - start < 3.0  # 2 attempts of 0.3 s in parallel, not a hang
    msg = str(info.value)
    assert "\n" not in msg and stub.url("slow") in msg and "all 2 prompts" in msg
    assert "timed out after 0.3 s (2 attempts)" in msg and "timeout_s" in msg
    assert len(stub.requests) == 4


def test_server_down_raises(stub):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(JudgeError, match=r"connection failed.*running and reachable"):
        judge(["a"], ["x"], _settings(f"http://127.0.0.1:{port}/v1", retries=1))


def test_garbage_everywhere_raises(stub):
    with pytest.raises(JudgeError, match=r"no \[\[rating\]\].*'gpt-4o'"):
        judge(["a", "b"], ["x", "y"], _settings(stub.url("garbage"), retries=0))


def test_invalid_json_is_retried_then_fails(stub):
    with pytest.raises(JudgeError, match="not chat-completions JSON: this is {not json"):
        judge(["a"], ["x"], _settings(stub.url("badjson"), retries=2))
    assert len(stub.requests) == 3


def test_a_judge_failing_from_the_start_is_abandoned_early(stub):
    n = 40
    with pytest.raises(JudgeError, match=f"first {judge_mod.FAIL_FAST} of {n} prompts"):
        judge([f"q{i}" for i in range(n)], ["x"] * n, _settings(stub.url("garbage"), retries=0, concurrency=2))
    # stopped early; how many requests were already in flight depends on the scheduler (a busy CI box), so the
    # bound is loose: without the early stop all 40 would be sent
    assert len(stub.requests) < n // 2


@pytest.mark.parametrize("status", [500, 429])
def test_transient_errors_are_retried_until_they_pass(stub, status):
    res = judge(["a", "b", "c"], ["one", "one two", "x y z"], _settings(stub.url(f"flaky{status}"), retries=2))
    assert res["scores"] == [1.0, 2.0, 3.0]
    assert len(stub.requests) == 9  # two failures then a success, per prompt


def test_too_few_retries_for_a_flaky_server_fail(stub):
    with pytest.raises(JudgeError, match=r"HTTP 500 \(overloaded, try again\) \(2 attempts\)"):
        judge(["a"], ["x"], _settings(stub.url("flaky500"), retries=1))


def test_rejected_key_raises_at_once_without_retries(stub):
    with pytest.raises(JudgeError) as info:
        judge(["a", "b", "c"], ["x", "y", "z"], _settings(stub.url("unauth"), retries=3, concurrency=1))
    assert len(stub.requests) == 1
    msg = str(info.value)
    assert "HTTP 401" in msg and "$CURATE_JUDGE_API_KEY" in msg and stub.url("unauth") in msg


def test_wrong_url_raises_at_once(stub):
    with pytest.raises(JudgeError, match=r"HTTP 404 \(.*does not exist.*\).*base URL") as info:
        judge(["a", "b"], ["x", "y"], _settings(stub.url("notfound"), concurrency=1))
    assert len(stub.requests) == 1 and "\n" not in str(info.value)


# --- secrets ----------------------------------------------------------------------------------------------


def test_bearer_key_is_sent_from_the_environment(stub, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    settings = _settings(stub.url("ok"), api_key_env="MY_JUDGE_KEY")
    judge(["a"], ["x"], settings)
    assert stub.requests[0]["auth"] == f"Bearer {SECRET}"
    assert SECRET not in repr(settings)


def test_the_key_never_leaks(stub, monkeypatch, caplog):
    monkeypatch.setenv("CURATE_JUDGE_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    # the stub echoes the Authorization header in unrated replies, 500 bodies and 401 bodies
    res = judge(["a", "b"], ["one", "GARBAGE"], _settings(stub.url("ok"), retries=1))
    assert res["n_failed"] == 1 and "***" in res["errors"][0]
    texts = [json.dumps(res)]
    for mode in ("leak500", "unauth"):
        with pytest.raises(JudgeError) as info:
            judge(["a"], ["x"], _settings(stub.url(mode), retries=1))
        texts += [str(info.value), repr(info.value)]
    assert all(r["auth"] == f"Bearer {SECRET}" for r in stub.requests)  # it was sent, so it could have leaked
    assert "***" in texts[1]
    texts.append(caplog.text)
    assert not [t for t in texts if SECRET in t]


def test_userinfo_is_used_for_basic_auth_but_never_shown(stub):
    url = stub.url("ok").replace("http://", "http://alice:pa%40ss-XYZ@")
    settings = _settings(url)
    res = judge(["a"], ["x"], settings)
    assert stub.requests[0]["auth"] == "Basic YWxpY2U6cGFAc3MtWFla"  # base64("alice:pa@ss-XYZ")
    assert res["judge"]["url"] == stub.url("ok")
    assert "XYZ" not in repr(settings) and "XYZ" not in json.dumps(res)


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:p@host:8000/v1", "http://host:8000/v1"),
    ("https://host/v1?key=abc&api-version=2", "https://host/v1?key=***&api-version=***"),
    ("http://host/v1", "http://host/v1"),
    ("user:secret@host/v1", "<URL with credentials>"),
])
def test_scrub_url(url, shown):
    assert scrub_url(url) == shown


# --- settings, template, parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "field"), [
    ({"url": "ftp://host/v1"}, "url"), ({"url": "127.0.0.1:8000/v1"}, "url"), ({"url": "http://"}, "url"),
    ({"timeout_s": 0}, "timeout_s"), ({"retries": -1}, "retries"), ({"concurrency": 0}, "concurrency"),
])
def test_settings_are_validated(kw, field):
    with pytest.raises(ValueError, match=f"JudgeSettings.{field} "):
        JudgeSettings(**{"url": "http://127.0.0.1:8000/v1", **kw})


def test_settings_error_does_not_echo_credentials():
    with pytest.raises(ValueError) as info:
        JudgeSettings(url="ftp://bob:hunter2@host/v1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("text", "rating"), [
    ("Fine. Rating: [[5]]", 5.0), ("[[7.5]]", 7.5), ("Rating: [6]", 6.0), ("[[3]] then [[8]]", 3.0),
    ("[[10]]", 10.0), ("[[1]]", 1.0), ("[[11]]", None), ("[[0]]", None), ("no rating here", None),
    ("Rating: 7/10", None), ("[[rating]]", None),
])
def test_parse_rating_follows_mt_bench(text, rating):
    assert parse_rating(text) == rating


def test_packaged_template_loads_and_ships_in_the_wheel():
    tpl = load_template()
    assert set(tpl.sections) == {"system", "user", "system_ref", "user_ref"}
    text = (ROOT / "evals" / "prompts" / "judge_single.txt").read_text(encoding="utf-8")
    assert tpl.sha256 == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert "[[rating]]" in tpl.sections["system"] and "{reference}" in tpl.sections["user_ref"]
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "prompts/*.txt" in package_data["evals"]


def test_custom_template_is_used(stub, tmp_path):
    path = tmp_path / "judge.txt"
    text = "my judge\n=== system ===\nCUSTOM SYSTEM {question}\n=== user ===\nQQ {question} AA {answer}\n"
    path.write_text(text, encoding="utf-8")
    res = judge(["hi"], ["one two"], _settings(stub.url("ok"), template=str(path)))
    assert stub.requests[0]["body"]["messages"] == [{"role": "system", "content": "CUSTOM SYSTEM hi"},
                                                    {"role": "user", "content": "QQ hi AA one two"}]
    assert res["scores"] == [5.0]  # no answer markers: the stub counts the words of the whole message
    assert res["judge"]["template_sha256"] == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert res["judge"]["template_sha256"] != load_template().sha256
    with pytest.raises(ValueError, match="user_ref"):  # references need a reference section
        judge(["hi"], ["x"], _settings(stub.url("ok"), template=str(path)), references=["r"])
    assert len(stub.requests) == 1


@pytest.mark.parametrize(("text", "match"), [
    ("=== system ===\ns\n=== user ===\n{question} only\n", r"'user' lacks \{answer\}"),
    ("=== user ===\n{question} {answer}\n", "missing or empty '=== system ==='"),
    ("=== system ===\ns\n=== usr ===\n{question} {answer}\n", "unknown or repeated section 'usr'"),
    ("=== system ===\ns\n=== user ===\n{question} {answer}\n=== user_ref ===\n{question} {answer}\n",
     r"'user_ref' lacks \{reference\}"),
])
def test_broken_templates_fail_before_any_request(tmp_path, text, match):
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_template(str(path))


def test_missing_template_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="JudgeSettings.template: cannot read"):
        load_template(str(tmp_path / "nope.txt"))
