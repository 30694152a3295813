"""A local lm-eval multiple-choice task over a JSONL file, for the offline lm-eval tests (no hub access)."""

from __future__ import annotations

import json
from pathlib import Path


def write_mc_task(folder: Path, name: str, rows: list[dict], metrics: tuple[str, ...] = ("acc",)) -> Path:
    """Write ``<name>.jsonl`` (rows with ``question``, ``choices``, ``label``) and the task YAML lm-eval's
    ``TaskManager(include_path=folder)`` finds; returns the YAML's path."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    listed = "".join(f"  - metric: {m}\n" for m in metrics)
    task = folder / f"{name}.yaml"
    task.write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
{listed}""")
    return task
