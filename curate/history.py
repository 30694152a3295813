"""The run record in the store: which runs happened, with what settings and weights (``runs``, ``weights`` and
``scores`` tables), so that `curate runs` can find last week's run among fifty.

A run is recorded ``running`` when it starts (single process), then ``finished`` with its weights (the trajectory
and the final vector, at the step after the last) and scores, or ``failed`` / ``interrupted``. A run killed
outright stays ``running``; its folder says how far it got.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.db import open_db
from curate.errors import DataError


@dataclass
class RunRecord:
    """One row of ``runs`` with its final weights."""

    run_id: str
    method: str
    status: str
    target: str | None
    created_at: str
    finished_at: str | None
    run_dir: str
    weights: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    trajectory_steps: int = 0
    scored_rows: int = 0


def record_start(db: Path, run_id: str, method: str, config: dict[str, Any], run_dir: Path) -> None:
    """Mark ``run_id`` as running (a re-run of the same folder replaces its old record)."""
    with open_db(db) as con:
        con.execute("BEGIN TRANSACTION")
        _forget(con, run_id)
        con.execute("INSERT INTO runs VALUES (?, ?, ?, 'running', now(), NULL, ?)",
                    [run_id, method, json.dumps(config, default=str), str(run_dir)])
        con.execute("COMMIT")


def record_status(db: Path, run_id: str, status: str) -> None:
    """Set a recorded run's status (``failed``, ``interrupted``)."""
    with open_db(db) as con:
        con.execute("UPDATE runs SET status = ?, finished_at = now() WHERE run_id = ?", [status, run_id])


def record_finish(db: Path, run_id: str, method: str, config: dict[str, Any], run_dir: Path, created_at: str,
                  weights: dict[str, float], trajectory: list[tuple[int, dict[str, float]]],
                  scores: list[tuple[Any, str, float]] | None) -> None:
    """Store the finished run, its weights per step and its scores, in one transaction."""
    with open_db(db) as con:
        con.execute("BEGIN TRANSACTION")
        _forget(con, run_id)
        con.execute("INSERT INTO runs VALUES (?, ?, ?, 'finished', ?, now(), ?)",
                    [run_id, method, json.dumps(config, default=str), created_at, str(run_dir)])
        rows = [(run_id, step, s, float(w)) for step, ws in trajectory for s, w in ws.items() if s in weights]
        last = max((r[1] for r in rows), default=-1) + 1
        rows += [(run_id, last, s, float(w)) for s, w in weights.items()]
        con.executemany("INSERT INTO weights VALUES (?, ?, ?, ?)", rows)
        if scores:
            con.executemany("INSERT INTO scores VALUES (?, ?, ?)", [(run_id, str(i), float(v)) for i, _, v in scores])
        con.execute("COMMIT")


def _forget(con: Any, run_id: str) -> None:
    for table in ("runs", "weights", "scores"):
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


LIST_QUERY = """
SELECT r.run_id, r.method, r.status, json_extract_string(r.config_json, '$.target'), r.created_at::VARCHAR,
       r.finished_at::VARCHAR, r.run_dir,
       (SELECT map_from_entries(list({'k': w.source, 'v': w.weight} ORDER BY w.weight DESC))
          FROM weights w WHERE w.run_id = r.run_id
           AND w.step = (SELECT max(step) FROM weights x WHERE x.run_id = r.run_id))
FROM runs r WHERE (? IS NULL OR r.method = ?) ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?
"""


def list_runs(db: Path, method: str | None = None, limit: int = 20) -> list[RunRecord]:
    """The most recent runs first (optionally of one method), each with its final weights."""
    with open_db(db, read_only=True) as con:
        rows = con.execute(LIST_QUERY, [method, method, limit]).fetchall()
    return [RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], dict(r[7] or {})) for r in rows]


def _match(con: Any, run: str) -> list[str]:
    """Run ids for ``run``: an exact id, a run folder path, else every id it is a prefix of."""
    for query, arg in (("run_id = ?", run), ("run_dir = ?", str(Path(run))), ("starts_with(run_id, ?)", run)):
        ids = [r[0] for r in con.execute(f"SELECT run_id FROM runs WHERE {query} ORDER BY 1", [arg]).fetchall()]
        if ids:
            return ids
    return []


def show_run(db: Path, run: str) -> RunRecord:
    """One run by id, unique id prefix or run folder path, with its config and what it stored.

    Raises:
        DataError: no run, or several, match ``run``; names the fix.
    """
    with open_db(db, read_only=True) as con:
        ids = _match(con, run)
        if len(ids) != 1:
            what = "no run" if not ids else f"{len(ids)} runs ({', '.join(ids[:3])}, ...)"
            raise DataError(f"runs show: {what} match {run!r} in {db}; `curate runs --db {db}` lists them")
        run_id = ids[0]
        head = con.execute("SELECT method, status, config_json, created_at::VARCHAR, finished_at::VARCHAR, run_dir "
                           "FROM runs WHERE run_id = ?", [run_id]).fetchone()
        last = con.execute("SELECT max(step) FROM weights WHERE run_id = ?", [run_id]).fetchone()
        weights = dict(con.execute("SELECT source, weight FROM weights WHERE run_id = ? AND step = ? "
                                   "ORDER BY weight DESC", [run_id, last[0] if last else None]).fetchall())
        steps = con.execute("SELECT count(DISTINCT step) FROM weights WHERE run_id = ?", [run_id]).fetchone()
        scored = con.execute("SELECT count(*) FROM scores WHERE run_id = ?", [run_id]).fetchone()
    if head is None:
        raise DataError(f"runs show: {run_id!r} vanished from {db} while it was read; try again")
    config = json.loads(head[2] or "{}")
    return RunRecord(run_id, head[0], head[1], config.get("target"), head[3], head[4], head[5], weights, config,
                     max(0, int(steps[0] if steps else 0) - 1), int(scored[0] if scored else 0))
