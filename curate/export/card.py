"""The dataset card (``README.md``): YAML that the Hub and ``datasets`` read, then weights and provenance."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import yaml

from curate.export.reader import RunData
from curate.export.writers import DATA_GLOBS, SPLIT

_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    return next((label for bound, label in _SIZE_CATEGORIES if n < bound), "n>1T")


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    """``dataset_info.features`` for ``schema`` as ``datasets`` parses it (``Features._from_yaml_list``)."""
    from datasets import Features

    return Features.from_arrow_schema(schema)._to_yaml_list()


def card_metadata(
    run: RunData, schema: pa.Schema, fmt: str, num_bytes: int, download_size: int, messages: bool
) -> dict[str, Any]:
    """The YAML header: Hub metadata, ``configs`` (which files ``load_dataset`` reads) and the features."""
    method = str(run.weights.get("method", "unknown"))
    tags = ["curate", "data-mixture", f"curate-{method}"] + (["conversational"] if messages else [])
    return {
        "license": "other",
        "license_name": "per-source",
        "pretty_name": f"curate {method} mixture ({run.run_dir.name})",
        "tags": tags,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(run.num_rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": SPLIT, "path": DATA_GLOBS[fmt]}]}],
        "dataset_info": {
            "config_name": "default",
            "features": features_yaml(schema),
            "splits": [{"name": SPLIT, "num_bytes": num_bytes, "num_examples": run.num_rows}],
            "download_size": download_size,
            "dataset_size": num_bytes,
        },
    }


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt_weight(w: Any) -> str:
    return f"{w:.4f}" if isinstance(w, int | float) else "–"


def _mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def weights_table(run: RunData) -> str:
    """Markdown table: one row per source with its weight, available rows, rows selected and repeats."""
    weights = _mapping(run.weights, "sources")
    # Rows available when the data was drawn (the resample's own count), else when the weights were learned.
    counts = _mapping(run.manifest, "available") or _mapping(run.weights, "counts")
    repeats = _mapping(run.manifest, "repeats")
    names = list(weights) + sorted(set(run.rows_per_source) - set(weights))
    lines = [
        "| source | weight | rows available | rows selected | repeats (epochs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        selected = run.rows_per_source.get(name, 0)
        rep = repeats.get(name)
        if rep is None and isinstance(counts.get(name), int | float) and counts[name] > 0:
            rep = selected / counts[name]
        rep_cell = f"{rep:.2f}" if isinstance(rep, int | float) else "–"
        lines.append(
            f"| {_cell(name)} | {_fmt_weight(weights.get(name))} | {_cell(counts.get(name, '–'))} "
            f"| {selected} | {rep_cell} |"
        )
    return "\n".join(lines)


def _weights_sha(manifest: dict[str, Any]) -> str:
    return str(_mapping(manifest, "input_fingerprint").get("weights_sha256", "–"))


def card_body(run: RunData, fmt: str, files: dict[str, str], messages: bool, exporter_version: str) -> str:
    """Markdown body: how the mixture was made, the weights, and where every byte came from."""
    w, m = run.weights, run.manifest
    method = w.get("method", "unknown")
    usage = ['ds = load_dataset("path/to/this/folder")  # or "user/repo" once pushed to the Hub']
    if fmt == "hf":
        usage.append('ds = load_from_disk("path/to/this/folder")  # same rows and schema')
    chat = (
        "`messages` is a list of `{role, content}` turns (TRL / axolotl chat format); rows without a "
        "conversation have `messages: null`."
        if messages
        else '`messages` holds the conversation as a JSON string (`[{"role": ..., "content": ...}]`).'
    )
    sha_lines = "\n".join(f"| `{_cell(p)}` | `{h}` |" for p, h in files.items())
    return f"""# curate {method} mixture: {run.run_dir.name}

Training data resampled by `curate` with per-source weights learned by **{method}**
(target: `{w.get("target")}`). {run.num_rows} rows in one split, `{SPLIT}`.

## Weights

{weights_table(run)}

- budget: {m.get("budget", "–")} rows, seed: {m.get("seed", "–")}
- `draw` is 0 for the first pass over a source and k for its k-th repeat; `source` and `example_id` name the
  original row.
- {chat}

## Usage

```python
from datasets import load_dataset{", load_from_disk" if fmt == "hf" else ""}
{chr(10).join(usage)}
```

## Provenance

| field | value |
|---|---|
| method | `{_cell(method)}` |
| weights sha256 (rows drawn from) | `{_cell(_weights_sha(m))}` |
| input fingerprint | `{_cell(m.get("input_fingerprint", "–"))}` |
| data fingerprint | `{_cell(w.get("data_fingerprint", "–"))}` |
| config hash | `{_cell(w.get("config_hash", "–"))}` |
| run created at | {_cell(w.get("created_at", "–"))} |
| run curate version | {_cell(w.get("curate_version", "–"))} |
| exported by curate | {exporter_version} |
| format | {fmt} |

| data file | sha256 |
|---|---|
{sha_lines}

## License

Rows come from the ingested sources and keep each source's own license; `license: other` stands until you set
the right one in the YAML header above before publishing.
"""


def render_card(
    run: RunData,
    schema: pa.Schema,
    fmt: str,
    files: dict[str, str],
    *,
    num_bytes: int,
    download_size: int,
    messages: bool,
    exporter_version: str,
) -> str:
    """The full ``README.md`` text."""
    meta = card_metadata(run, schema, fmt, num_bytes, download_size, messages)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{card_body(run, fmt, files, messages, exporter_version)}"
