"""`curate export`: round trips through `datasets`, the card, path rules, atomic replace, hub errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curate.errors import ConfigError, DataError
from curate.export import MARKER, check_repo_id, export_run, push_to_hub
from curate.export.reader import output_schema
from curate.io import sha256_file

FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def _rows(source: str, n: int, draws: list[int], chat_at: int | None = None) -> list[dict]:
    rows = []
    for i in range(n):
        prompt, response = f"{source} question {i} naïve ☃", f"{source} answer {i}"
        rows.append(
            {
                "source": source,
                "example_id": f"{source}-{i}",
                "draw": draws[i],
                "split": "train",
                "prompt": prompt,
                "response": response,
                "text": f"{prompt}\n{response}",
                "messages": json.dumps(CHAT) if i == chat_at else None,
                "content_hash": f"h{source}{i}",
            }
        )
    return rows


def _schema(string: pa.DataType) -> pa.Schema:
    names = [
        "source",
        "example_id",
        "draw",
        "split",
        "prompt",
        "response",
        "text",
        "messages",
        "content_hash",
    ]
    return pa.schema([(n, pa.int32() if n == "draw" else string) for n in names])


def make_run(root: Path, string: pa.DataType = pa.string(), with_data: bool = True) -> Path:
    """A run folder with two sources in two parts (one repeat, one chat row), as the resampler writes it."""
    run = root / "run-1"
    run.mkdir()
    weights = {
        "method": "scalebio",
        "sources": {"alpha": 0.6, "beta": 0.4},
        "final": {"alpha": 0.6, "beta": 0.4},
        "averaged": None,
        "counts": {"alpha": 2, "beta": 10},
        "target": "val",
        "config_hash": "cfg123",
        "data_fingerprint": "dfp456",
        "created_at": "2025-01-02T03:04:05Z",
        "curate_version": "0.1.0",
    }
    (run / "weights.json").write_text(json.dumps(weights))
    if not with_data:
        return run
    (run / "data").mkdir()
    parts = {
        "data/part-00000.parquet": _rows("alpha", 3, [0, 0, 1], chat_at=1),
        "data/part-00001.parquet": _rows("beta", 2, [0, 0]),
    }
    for rel, rows in parts.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema(string)), run / rel)
    manifest = {
        "kind": "resample",
        "budget": 5,
        "seed": 7,
        "input_fingerprint": "ifp789",
        "allocation": {"alpha": 3, "beta": 2},
        "repeats": {"alpha": 1.5, "beta": 0.2},
        "outputs": {rel: sha256_file(run / rel) for rel in parts},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def input_rows(run: Path) -> list[dict]:
    return [r for p in sorted((run / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def expected_features(run: Path, messages: bool = False):
    from datasets import Features

    schema = pq.read_schema(run / "data" / "part-00000.parquet").remove_metadata()
    return Features.from_arrow_schema(output_schema(schema, messages=messages))


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def load(folder: Path, tmp_path: Path):
    from datasets import load_dataset

    return load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))["train"]


def card_yaml(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.parametrize(
    ("fmt", "string"),
    [("parquet", pa.string()), ("jsonl", pa.string()), ("hf", pa.string()), ("jsonl", pa.large_string())],
    ids=["parquet", "jsonl", "hf", "jsonl-large-string"],
)
def test_load_dataset_round_trip(tmp_path, fmt, string):
    run = make_run(tmp_path, string=string)
    out = export_run(run, tmp_path / "out", fmt=fmt)
    ds = load(out, tmp_path)
    assert ds.features == expected_features(run)
    assert ds.to_list() == input_rows(run)


def test_hf_layout_reads_with_load_from_disk(tmp_path, run_dir):
    from datasets import load_from_disk

    out = export_run(run_dir, tmp_path / "out", fmt="hf")
    ds = load_from_disk(str(out))["train"]
    assert ds.features == expected_features(run_dir)
    assert ds.to_list() == input_rows(run_dir)
    assert len(list((out / "train").glob("data-*.arrow"))) == 2  # one shard per input part
    assert not (out / ".stage").exists()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "hf"])
def test_messages_mode_gives_list_of_role_content_structs(tmp_path, run_dir, fmt):
    from datasets import Features, List, Value

    out = export_run(run_dir, tmp_path / "out", fmt=fmt, messages=True)
    ds = load(out, tmp_path)
    assert ds.features["messages"] == List({"role": Value("string"), "content": Value("string")})
    assert ds.features == expected_features(run_dir, messages=True)
    got = {r["example_id"]: r["messages"] for r in ds}
    assert got["alpha-1"] == CHAT
    assert got["alpha-0"] is None and got["beta-1"] is None
    meta = card_yaml(out)
    assert Features._from_yaml_list(meta["dataset_info"]["features"]) == ds.features
    assert "conversational" in meta["tags"]


def test_card_yaml_features_weights_and_provenance(tmp_path, run_dir):
    from datasets import Features

    out = export_run(run_dir, tmp_path / "out", fmt="parquet")
    meta = card_yaml(out)
    assert Features._from_yaml_list(meta["dataset_info"]["features"]) == load(out, tmp_path).features
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 5
    assert meta["license"] == "other" and "curate" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "| alpha | 0.6000 | 2 | 3 | 1.50 |" in body
    assert "| beta | 0.4000 | 10 | 2 | 0.20 |" in body
    for needle in ("scalebio", "budget: 5 rows, seed: 7", "ifp789", "dfp456", "2025-01-02T03:04:05Z"):
        assert needle in body
    shards = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    for p in shards:
        assert f"`data/{p.name}` | `{sha256_file(p)}`" in body
    marker = json.loads((out / MARKER).read_text())
    assert marker["num_rows"] == 5 and marker["rows_per_source"] == {"alpha": 3, "beta": 2}


def test_run_without_data_says_resample_first(tmp_path):
    run = make_run(tmp_path, with_data=False)
    with pytest.raises(DataError, match=r"curate resample .* --budget N") as e:
        export_run(run, tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_changed_or_missing_part_is_refused(tmp_path, run_dir):
    part = run_dir / "data" / "part-00001.parquet"
    pq.write_table(pq.read_table(part).slice(0, 1), part)
    with pytest.raises(DataError, match="sha256"):
        export_run(run_dir, tmp_path / "out")
    part.unlink()
    with pytest.raises(DataError, match="part-00001.parquet is missing"):
        export_run(run_dir, tmp_path / "out")


def test_malformed_messages_names_the_row(tmp_path, run_dir):
    part = run_dir / "data" / "part-00001.parquet"
    rows = pq.read_table(part).to_pylist()
    rows[1]["messages"] = '[{"role": "user", "content": "unterminated'
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema(pa.string())), part)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["outputs"]["data/part-00001.parquet"] = sha256_file(part)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    export_run(run_dir, tmp_path / "out", messages=False)  # the JSON string passes through untouched
    with pytest.raises(DataError, match=r"part-00001.parquet row 1 \(example_id 'beta-1'\)"):
        export_run(run_dir, tmp_path / "out", messages=True)


@pytest.mark.parametrize("bad", ["{tmp}/a/../out", "../out", "{run}", "{tmp}", "{run}/data/x", "."])
def test_out_path_rules(tmp_path, run_dir, bad):
    out = bad.format(tmp=tmp_path, run=run_dir)
    with pytest.raises(ConfigError, match="--out") as e:
        export_run(run_dir, out)
    assert "\n" not in str(e.value)


def test_foreign_folder_needs_force(tmp_path, run_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--force"):
        export_run(run_dir, out)
    assert (out / "notes.txt").read_text() == "keep me"
    export_run(run_dir, out, force=True)
    assert not (out / "notes.txt").exists() and (out / MARKER).exists()


def test_unknown_format_is_config_error(tmp_path, run_dir):
    with pytest.raises(ConfigError, match="--format"):
        export_run(run_dir, tmp_path / "out", fmt="csv")  # type: ignore[arg-type]


def test_existing_export_is_replaced_atomically(tmp_path, run_dir):
    out = tmp_path / "exports" / "mix"
    export_run(run_dir, out, fmt="parquet")
    (out / "stale.txt").write_text("old")
    export_run(run_dir, out, fmt="jsonl")
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00002.jsonl",
        "train-00001-of-00002.jsonl",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["mix"]  # no temporary or .old folders left

    # A failing export leaves the previous one untouched.
    before = {p.name: sha256_file(p) for p in (out / "data").iterdir()}
    (run_dir / "data" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError):
        export_run(run_dir, out, fmt="hf")
    assert {p.name: sha256_file(p) for p in (out / "data").iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["mix"]


@pytest.mark.parametrize("repo", ["a/b/c", "../x", "foo--bar", "", "user/name.git", "-bad/name", "x" * 97])
def test_repo_id_is_validated_first(tmp_path, repo):
    with pytest.raises(ConfigError, match="--push-to-hub") as e:
        push_to_hub(tmp_path / "does-not-exist", repo, token=FAKE_TOKEN)
    assert "\n" not in str(e.value)


def test_repo_id_accepts_hub_names():
    for repo in ["user/my-data_set.v2", "name", "Org_1/x"]:
        assert check_repo_id(repo) == repo


def test_push_offline_fails_fast_in_one_line_without_token(tmp_path, run_dir, monkeypatch):
    out = export_run(run_dir, tmp_path / "out")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    start = time.monotonic()
    with pytest.raises(DataError, match="offline") as e:
        push_to_hub(out, "user/mix", private=True, token=FAKE_TOKEN)
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert "\n" not in msg and FAKE_TOKEN not in msg and "HF_HUB_OFFLINE=0" in msg


def _online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_push_without_network_fails_fast(tmp_path, run_dir, monkeypatch):
    import curate.export.hub as hub

    out = export_run(run_dir, tmp_path / "out")
    _online(monkeypatch)

    def no_route(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(hub.socket, "create_connection", no_route)
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub") as e:
        push_to_hub(out, "user/mix", token=FAKE_TOKEN)
    assert time.monotonic() - start < 5
    assert "\n" not in str(e.value) and FAKE_TOKEN not in str(e.value)


def test_push_scrubs_token_from_client_errors(tmp_path, run_dir, monkeypatch):
    import huggingface_hub

    import curate.export.hub as hub

    out = export_run(run_dir, tmp_path / "out")
    _online(monkeypatch)
    monkeypatch.setattr(hub, "_check_reachable", lambda endpoint: None)

    def leaky(self, *args, **kwargs):
        raise RuntimeError(f"boom\nheaders: Authorization: Bearer {FAKE_TOKEN}\ntoken={FAKE_TOKEN}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", leaky)
    with pytest.raises(DataError, match="user/mix") as e:
        push_to_hub(out, "user/mix", token=FAKE_TOKEN)
    msg = str(e.value)
    assert "\n" not in msg and FAKE_TOKEN not in msg and "***" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(DataError, match="not a curate export folder"):
        push_to_hub(tmp_path, "user/mix", token=FAKE_TOKEN)


class _FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: records what a push would create and upload (no network)."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, endpoint=None, token=None):
        self.calls.append(("init", {"endpoint": endpoint, "token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.mark.parametrize(("fmt", "shards"), [("parquet", "data/train-*.parquet"), ("hf", "train/data-*.arrow")])
def test_push_uploads_the_export_folder_shard_by_shard(tmp_path, run_dir, monkeypatch, fmt, shards):
    import fnmatch

    import huggingface_hub

    import curate.export.hub as hub

    out = export_run(run_dir, tmp_path / "out", fmt=fmt)
    (out / ".left-by-a-writer.tmp").write_text("x")
    _online(monkeypatch)
    monkeypatch.setattr(hub, "_check_reachable", lambda endpoint: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    monkeypatch.setattr(_FakeHub, "calls", [])
    url = push_to_hub(out, "user/mix", private=True, token=FAKE_TOKEN)
    assert url == "https://huggingface.co/datasets/user/mix"
    names = [c[0] for c in _FakeHub.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    assert _FakeHub.calls[1][1] == {"repo_id": "user/mix", "repo_type": "dataset", "private": True, "exist_ok": True}
    upload = _FakeHub.calls[2][1]
    assert upload["folder_path"] == out and upload["repo_type"] == "dataset" and upload["repo_id"] == "user/mix"

    def sent(rel: str) -> bool:  # the patterns as upload_folder applies them (fnmatch on the relative path)
        return not any(fnmatch.fnmatch(rel, p) for p in upload["ignore_patterns"])

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    uploaded = [f for f in files if sent(f)]
    assert ".left-by-a-writer.tmp" not in uploaded and "README.md" in uploaded and MARKER in uploaded
    parts = [f for f in uploaded if fnmatch.fnmatch(f, shards)]
    assert len(parts) == 2  # one shard per data part: never one file with every row
    assert all(any(fnmatch.fnmatch(p, d) for d in upload["delete_patterns"]) for p in parts)  # stale ones go
    assert not any(fnmatch.fnmatch(f, d) for f in ("README.md", MARKER) for d in upload["delete_patterns"])
