"""`curate ingest`: read files into the DuckDB store, one all-or-nothing transaction per file."""

from curate.ingest.load import FileReport, ingest_paths

__all__ = ["FileReport", "ingest_paths"]
