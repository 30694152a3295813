"""curate.secrets.scrub: the one token scrubber, used by the CLI's error line and the Hub push."""

from curate.secrets import scrub

TOKEN = "hf_" + "AbCdEf123456"


def test_scrubs_token_shapes_headers_env_values_and_extras(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "env-secret-1")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "env-secret-2")
    text = (f"a {TOKEN} b\nAuthorization: Bearer xyz123\nbearer abc env-secret-1 env-secret-2 "
            "pushed-with-this")
    out = scrub(text, ["pushed-with-this", None, ""])
    for leaked in (TOKEN, "xyz123", "abc", "env-secret-1", "env-secret-2", "pushed-with-this"):
        assert leaked not in out
    assert "hf_***" in out and "\n" in out  # shaping the message for display is the caller's business


def test_short_env_values_are_not_treated_as_secrets(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "a")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert scrub("a plain message") == "a plain message"
