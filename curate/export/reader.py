"""Read and check a run folder (``weights.json``, ``manifest.json``, ``data/*.parquet``) before export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import DataError
from curate.io import sha256_file
from curate.runs import RunFolder

# Columns the export itself needs; every other column of the resampled data is passed through unchanged.
REQUIRED_COLUMNS = ("source", "example_id", "draw")
CHAT_ROLES = frozenset({"system", "user", "assistant"})
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@dataclass(frozen=True)
class RunData:
    """A checked run folder: its two JSON artefacts and its non-empty data parts, in order."""

    run_dir: Path
    weights: dict[str, Any]
    manifest: dict[str, Any]
    parts: list[Path]
    schema: pa.Schema
    num_rows: int
    rows_per_source: dict[str, int] = field(default_factory=dict)


def _resample_hint(run_dir: Path) -> str:
    return f"run `curate resample {run_dir} --budget N` first"


def _again(run_dir: Path) -> str:
    return f"run `curate resample {run_dir} --budget N` again"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} is missing; {what}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); {what}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is JSON but not an object ({type(obj).__name__}); {what}")
    return obj


def _check_weights_unchanged(run_dir: Path, weights_path: Path, manifest: dict[str, Any]) -> None:
    """The rows must come from the weights the card will show: a ``reweight --out`` over an existing run rewrites
    ``weights.json`` and keeps the old ``data/``, and exporting that would label the rows with weights they were
    not drawn from. Runs whose manifest predates the fingerprint are let through."""
    fingerprint = manifest.get("input_fingerprint")
    recorded = fingerprint.get("weights_sha256") if isinstance(fingerprint, dict) else None
    if not isinstance(recorded, str) or sha256_file(weights_path) == recorded:
        return
    budget, epochs = manifest.get("budget"), manifest.get("max_epochs")
    args = f"--budget {budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else 'N'}"
    if isinstance(epochs, int | float) and not isinstance(epochs, bool):
        args += f" --max-epochs {epochs:g}"
    raise DataError(
        f"{run_dir / 'data'} was drawn from other weights ({weights_path} changed after the resample); "
        f"run `curate resample {run_dir} {args}` again"
    )


def _check_against_manifest(run_dir: Path, parts: list[Path], outputs: dict[str, Any]) -> None:
    """The data parts must be exactly those the resampler recorded, (a partial copy is refused)."""
    listed = {k for k in outputs if k.startswith("data/") and k.endswith(".parquet")}
    found = {f"data/{p.name}" for p in parts}
    if listed and listed != found:
        missing, extra = sorted(listed - found), sorted(found - listed)
        what = f"{missing[0]} is missing" if missing else f"{extra[0]} is not in manifest.json"
        raise DataError(
            f"{run_dir}: {what}; the data is incomplete or mixed, {_again(run_dir)}"
        )
    for p in parts:
        expected = outputs.get(f"data/{p.name}")
        if expected and sha256_file(p) != expected:
            raise DataError(
                f"{p} does not match its sha256 in manifest.json (changed after resampling); "
                f"{_again(run_dir)}"
            )


def _part_schema(path: Path) -> tuple[pa.Schema, int]:
    try:
        meta = pq.ParquetFile(path)
        return meta.schema_arrow.remove_metadata(), meta.metadata.num_rows
    except (OSError, pa.ArrowException) as e:
        raise DataError(
            f"{path} is not readable Parquet ({e}); {_again(path.parent.parent)}"
        ) from None


def open_run(run_dir: Path | str, *, messages: bool = False) -> RunData:
    """Check ``run_dir`` and return what an export needs; a :class:`DataError` names the file and the fix."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder; pass a run folder written by `curate reweight`")
    run = RunFolder(run_dir)
    weights = _read_json(run.weights, "pass a run folder written by `curate reweight`")
    data_dir = run.data
    parts = run.data_files()
    if not parts:
        raise DataError(
            f"{run_dir} has no resampled data ({data_dir} is empty or missing); {_resample_hint(run_dir)}"
        )
    manifest = _read_json(run.manifest, f"{_again(run_dir)}")
    _check_weights_unchanged(run_dir, run.weights, manifest)
    outputs = manifest.get("outputs") or {}
    _check_against_manifest(run_dir, parts, outputs if isinstance(outputs, dict) else {})

    schema = _part_schema(parts[0])[0]
    kept, num_rows = [], 0
    for p in parts:
        part_schema, n = _part_schema(p)
        if not part_schema.equals(schema):
            raise DataError(
                f"{p} has columns {part_schema.names} unlike {parts[0].name}; {_again(run_dir)}"
            )
        if n:
            kept.append(p)
            num_rows += n
    needed = REQUIRED_COLUMNS + (("messages",) if messages else ())
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise DataError(f"{parts[0]} lacks column(s) {', '.join(missing)}; {_again(run_dir)}")
    if num_rows == 0:
        raise DataError(f"{data_dir} holds no rows; {_resample_hint(run_dir)} with N > 0")

    rows_per_source: dict[str, int] = {}
    for p in kept:
        counts = pq.read_table(p, columns=["source"])["source"].value_counts()
        for item in counts.to_pylist():
            rows_per_source[item["values"]] = rows_per_source.get(item["values"], 0) + item["counts"]
    return RunData(run_dir, weights, manifest, kept, schema, num_rows, rows_per_source)


def output_schema(schema: pa.Schema, *, messages: bool) -> pa.Schema:
    """The exported schema: the run's columns, with ``messages`` as a list of {role, content} when asked."""
    if not messages:
        return schema
    i = schema.get_field_index("messages")
    return schema.set(i, pa.field("messages", MESSAGE_TYPE))


def _parse_messages(raw: str | None, where: str) -> list[dict[str, str]] | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        turns = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where}: messages is not valid JSON ({e.msg}); fix the row and re-run ingest"
        ) from None
    if not isinstance(turns, list):
        raise DataError(
            f"{where}: messages must be a JSON list of {{role, content}}; fix the row and re-run ingest"
        )
    out = []
    for t in turns:
        if not (isinstance(t, dict) and t.get("role") in CHAT_ROLES and isinstance(t.get("content"), str)):
            raise DataError(
                f"{where}: each message needs role in {sorted(CHAT_ROLES)} and string content, "
                f"got {str(t)[:80]!r}; "
                "fix the row and re-run ingest"
            )
        out.append({"role": t["role"], "content": t["content"]})
    return out


def _messages_column(table: pa.Table, part: Path, first_row: int = 0) -> pa.Array:
    raws = table["messages"].to_pylist()
    ids = table["example_id"].to_pylist()
    parsed = [_parse_messages(r, f"{part} row {first_row + i} (example_id {ids[i]!r})") for i, r in enumerate(raws)]
    return pa.array(parsed, type=MESSAGE_TYPE)


def iter_parts(run: RunData, *, messages: bool) -> Iterator[Iterator[pa.Table]]:
    """Each data part as a stream of tables in the exported schema, one row group at a time, so an export holds
    one row group in memory whatever the size of a part (the resampler writes ~10k-row groups)."""
    for part in run.parts:
        yield _part_tables(part, output_schema(run.schema, messages=messages), messages)


def _part_tables(part: Path, schema: pa.Schema, messages: bool) -> Iterator[pa.Table]:
    pf, first_row = pq.ParquetFile(part), 0
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i).replace_schema_metadata(None)
        if messages:
            table = table.set_column(
                table.schema.get_field_index("messages"), "messages", _messages_column(table, part, first_row)
            )
        first_row += table.num_rows
        yield table.cast(schema)
