"""`curate ingest`: read files into the DuckDB store, one all-or-nothing transaction per file; `drop` and `rejects`
read and remove what an ingest brought."""

from curate.ingest.ledger import DropReport, Reject, drop, list_rejects
from curate.ingest.load import FileReport, ingest_paths

__all__ = ["DropReport", "FileReport", "Reject", "drop", "ingest_paths", "list_rejects"]
