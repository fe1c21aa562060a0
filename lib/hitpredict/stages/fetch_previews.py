"""fetch_previews: download every catalogue track without a settled preview -> ``previews``.

Work is fanned out over Spark tasks; inside each task a :class:`~hitpredict.fetch.Fetcher`
runs a bounded thread pool over one keep-alive session, and the same task writes the
results straight into the Delta tables (one pass: audio never travels back to the
driver). Tracks are committed in chunks of ``fetch.commit_every``, so a crash loses at
most one chunk.

``previews`` holds one row per settled track: ``ok``, a permanent failure, or a
transient failure that has used up ``fetch.max_runs_per_track`` runs. A transient
failure with runs left goes to ``fetch_attempts`` and is retried by the next run.

A signed preview URL that expired between ingest and fetch (Deezer's last hours) is
looked up again inside the task (``fetch.refresh_expired``, with ``resolve.services``):
``previews.url`` is the URL that was fetched, the catalogue keeps the one it was given.

Local ``audio_uri`` files are read only under the allowed roots: ``ingest.allow_roots`` when
set, else the folders recorded in ``audio_roots`` by the ingests that used the default (the
catalogue file's folder). A mistake in the local setup (see
:class:`~hitpredict.fetch.FetchSetupError`) stops the run before it marks any row: it is
checked on the driver first, and a task that still meets one fails, so its chunk commits nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa

from hitpredict.config import Config, FetchConfig, ResolveConfig
from hitpredict.fetch import SETUP_ERROR, Fetcher, FetchItem, FetchResult, FetchSetupError, Refresh, Refreshed
from hitpredict.lake import Lake, LakeWriteError
from hitpredict.progress import spark_progress
from hitpredict.schemas import PREVIEWS
from hitpredict.signed_urls import is_expired, signed_url_expiry
from hitpredict.sources.api_client import ApiClient
from hitpredict.sources.preview_lookup import PreviewLookup, TrackQuery, tried_text
from hitpredict.stages.base import StageReport, outcomes_since, record_batches

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: What a fetch task returns: a previews row (fetch_attempts' columns are a subset) and its table.
RESULT_SCHEMA = pa.schema(list(PREVIEWS) + [pa.field("table", pa.string(), nullable=False)])
TABLES = ("previews", "fetch_attempts")
PENDING_COLUMNS = ["track_id", "preview_url", "audio_uri", "title", "primary_artist", "isrc"]
PENDING_SCHEMA = ("track_id string, preview_url string, audio_uri string, title string, primary_artist string, "
                  "isrc string, runs long")


def settles(result: FetchResult, run: int, max_runs: int) -> bool:
    """Whether a result is final: ok, permanent, or out of runs."""
    return result.ok or not result.transient or run >= max_runs


def refresh_by_lookup(lookup: PreviewLookup, queries: dict[str, TrackQuery]) -> Refresh:
    """A Fetcher refresh hook: look the item's track up again with the configured services."""
    def refresh(item: FetchItem) -> Refreshed:
        query = queries.get(item.track_id)
        if query is None:
            return Refreshed(None, "not a catalogue track")
        answers = lookup.resolve(query)
        found = answers[-1] if answers and answers[-1].found else None
        return Refreshed(found.preview_url if found else None, tried_text(answers),
                         transient=found is None and any(a.status == "failed" for a in answers))
    return refresh


class FetchTask:
    """The executor side: a picklable ``mapInArrow`` function; one Fetcher (and, to refresh expired
    signed URLs, one look-up client) per task."""

    def __init__(self, config: FetchConfig, resolve: ResolveConfig | None = None, out_rows: int = 32,
                 local_roots: Sequence[str] = ()) -> None:
        self.config = config
        self.resolve = resolve
        self.out_rows = out_rows
        self.local_roots = tuple(local_roots)

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        runs: dict[str, int] = {}
        queries: dict[str, TrackQuery] = {}
        seen: set[str] = set()

        def items() -> Iterator[FetchItem]:
            for batch in batches:
                for row in batch.to_pylist():
                    track_id = row.get("track_id")
                    if not track_id or track_id in seen:   # one result per track: a repeat is fetched once
                        log.warning("fetch task: skipping a %s row (track %r)",
                                    "repeated" if track_id else "track-id-less", track_id)
                        continue
                    seen.add(track_id)
                    runs[track_id] = int(row.get("runs") or 0) + 1
                    if self.resolve is not None:   # the refresh hook's look-up of this track, should it need one
                        queries[track_id] = TrackQuery(track_id, row.get("title"), row.get("primary_artist"),
                                                       row.get("isrc"))
                    yield FetchItem(track_id, row.get("preview_url"), row.get("audio_uri"))

        def as_row(result: FetchResult) -> dict[str, Any]:
            if result.error_kind == SETUP_ERROR:   # not the track's failure: fail the task, mark nothing
                raise FetchSetupError(result.error_detail or "fetch setup error")
            run = runs.pop(result.track_id, 1)
            return {
                "track_id": result.track_id, "url": result.url, "audio": result.audio,
                "content_type": result.content_type, "size_bytes": result.size_bytes, "sha256": result.sha256,
                "status": result.status, "error_kind": result.error_kind, "error_detail": result.error_detail,
                "attempts": result.attempts, "run": run, "fetched_at": dt.datetime.now(dt.timezone.utc),
                "table": "previews" if settles(result, run, self.config.max_runs_per_track) else "fetch_attempts",
            }

        with ExitStack() as stack:
            refresh = None
            if self.resolve is not None:
                client = stack.enter_context(ApiClient(self.resolve))
                refresh = refresh_by_lookup(PreviewLookup(self.resolve, client), queries)
            fetcher = stack.enter_context(Fetcher(self.config, refresh=refresh, local_roots=self.local_roots))
            fetcher.check_setup()
            yield from record_batches(map(as_row, fetcher.fetch_all(items())), RESULT_SCHEMA, self.out_rows)


def pending_tracks(lake: Lake) -> pd.DataFrame:
    """Catalogue tracks with no row in ``previews``, with the runs already spent on each."""
    catalogue = lake.read_columns("catalogue", PENDING_COLUMNS).to_pandas()
    settled = set(lake.read_columns("previews", ["track_id"]).column("track_id").to_pylist())
    spent = Counter(lake.read_columns("fetch_attempts", ["track_id"]).column("track_id").to_pylist())
    todo = catalogue[~catalogue["track_id"].isin(settled)].drop_duplicates("track_id").copy()
    todo["runs"] = [spent.get(t, 0) for t in todo["track_id"]]
    return todo.sort_values("track_id").reset_index(drop=True)


def local_roots(config: Config, lake: Lake) -> list[str]:
    """Folders local audio may be read from: ``ingest.allow_roots``, else those ingest recorded."""
    if config.ingest.allow_roots:
        return list(config.ingest.allow_roots)
    return sorted(set(lake.read_columns("audio_roots", ["root"]).column("root").to_pylist()))


def setup_error_in(exc: BaseException) -> str | None:
    """The FetchSetupError message a failed fetch job carries (from its Spark task), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for line in str(exc).splitlines():
            if "FetchSetupError: " in line:
                return line.split("FetchSetupError: ", 1)[1].strip()
        if isinstance(exc, FetchSetupError):
            return str(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def signed_url_summary(todo: pd.DataFrame, lake: Lake, started: dt.datetime, margin_s: float) -> str | None:
    """One line on the signed preview URLs of ``todo`` (pending rows) after their fetch (the previews
    rows written since ``started``): how many had expired, how many were fetched from a fresh look-up.
    ``None`` without reading ``previews`` when no pending URL is signed."""
    by_url = todo[todo["audio_uri"].isna() & todo["preview_url"].map(lambda u: signed_url_expiry(u) is not None)]
    if by_url.empty:
        return None
    expired = sum(is_expired(u, started, margin_s) for u in by_url["preview_url"])
    fetched = lake.read_columns("previews", ["track_id", "url", "status", "error_kind", "fetched_at"]).to_pandas()
    rows = fetched[fetched["fetched_at"] >= started].merge(by_url[["track_id", "preview_url"]], on="track_id")
    fresh = int(((rows["status"] == "ok") & (rows["url"] != rows["preview_url"])).sum())
    dead = int((rows["error_kind"] == "preview_expired").sum())
    return (f"signed preview URLs: {len(by_url)}, {expired} expired before this run; "
            f"fetched from a fresh look-up {fresh}, no fresh URL (preview_expired) {dead}")


def run(config: Config, spark: "SparkSession", lake: Lake, only: set[str] | None = None) -> StageReport:
    """Fetch every pending track (of ``only``, when given), committing every ``fetch.commit_every`` tracks."""
    started = time.monotonic()
    since = dt.datetime.now(dt.timezone.utc)
    cfg = config.fetch
    report = StageReport("fetch_previews")
    todo = pending_tracks(lake)
    if only is not None:
        todo = todo[todo["track_id"].isin(only)].reset_index(drop=True)
    report.rows_in = len(todo)
    from pyspark.sql.pandas.types import from_arrow_schema

    with Fetcher(cfg) as probe:   # the local setup, before any row is marked
        probe.check_setup()
    roots = local_roots(config, lake)

    parallelism = spark.sparkContext.defaultParallelism
    for table in TABLES:
        lake.ensure(table)
    with spark_progress(spark, "fetch_previews", config.progress.interval_s, bar=config.progress.bar):
        for start in range(0, len(todo), cfg.commit_every):
            chunk = todo.iloc[start:start + cfg.commit_every]
            keys = spark.createDataFrame(chunk[PENDING_COLUMNS + ["runs"]], PENDING_SCHEMA)
            if keys.rdd.getNumPartitions() < min(len(chunk), parallelism):
                keys = keys.repartition(min(len(chunk), parallelism))
            try:
                lake.append_routed(keys, "table", TABLES, {"hitpredict.stage": "fetch_previews"},
                                   transform=FetchTask(cfg, config.resolve if cfg.refresh_expired else None,
                                                       local_roots=roots),
                                   transform_schema=from_arrow_schema(RESULT_SCHEMA))
            except LakeWriteError as exc:
                setup = setup_error_in(exc)
                if setup is not None:
                    raise FetchSetupError(f"fetch_previews stopped, nothing marked in this chunk: {setup}") from exc
                raise
            log.info("fetch_previews: %d/%d tracks committed (%.1fs)", start + len(chunk), len(todo),
                     time.monotonic() - started)
    report.add_outcomes(outcomes_since(lake, "previews", "fetched_at", since))
    summary = signed_url_summary(todo, lake, since, cfg.expiry_margin_s)
    if summary:
        report.details.append(summary)
    retries = outcomes_since(lake, "fetch_attempts", "fetched_at", since, status="retry")
    if retries:
        report.notes = "retry next run: " + ", ".join(
            f"{kind} {n}" for kind, n in sorted((kind or "unknown", n) for (_, kind), n in retries.items()))
    report.seconds = time.monotonic() - started
    return report
