"""Export a run's resampled data as Parquet, JSON Lines or a Hugging Face dataset, and push it to the Hub.

``export_run(run_dir, out_dir, fmt, messages)`` writes a folder that ``datasets.load_dataset(folder)`` reads
(and, for ``hf``, ``datasets.load_from_disk``), with a dataset card holding the weights and provenance;
``push_to_hub(folder, repo_id)`` uploads it.
"""

from curate.export.exporter import MARKER, check_out_dir, export_run
from curate.export.hub import check_repo_id, push_to_hub
from curate.export.writers import FORMATS

__all__ = ["FORMATS", "MARKER", "check_out_dir", "check_repo_id", "export_run", "push_to_hub"]
