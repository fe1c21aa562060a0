"""fetch_previews: download every catalogue track without a settled preview -> ``previews``.

Work is fanned out over Spark tasks; inside each task a :class:`~hitpredict.fetch.Fetcher`
runs a bounded thread pool over one keep-alive session, and the same task writes the
results straight into the Delta tables (one pass: audio never travels back to the
driver). Tracks are committed in chunks of ``fetch.commit_every``, so a crash loses at
most one chunk.

``previews`` holds one row per settled track: ``ok``, a permanent failure, or a
transient failure that has used up ``fetch.max_runs_per_track`` runs. A transient
failure with runs left goes to ``fetch_attempts`` and is retried by the next run.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd
import pyarrow as pa

from hitpredict.config import Config, FetchConfig
from hitpredict.fetch import Fetcher, FetchItem, FetchResult
from hitpredict.lake import Lake
from hitpredict.schemas import PREVIEWS
from hitpredict.stages.base import StageReport, outcomes_since, record_batches

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: What a fetch task returns: a previews row (fetch_attempts' columns are a subset) and its table.
RESULT_SCHEMA = pa.schema(list(PREVIEWS) + [pa.field("table", pa.string(), nullable=False)])
TABLES = ("previews", "fetch_attempts")


def settles(result: FetchResult, run: int, max_runs: int) -> bool:
    """Whether a result is final: ok, permanent, or out of runs."""
    return result.ok or not result.transient or run >= max_runs


class FetchTask:
    """The executor side: a picklable ``mapInArrow`` function; one Fetcher per task."""

    def __init__(self, config: FetchConfig, out_rows: int = 32) -> None:
        self.config = config
        self.out_rows = out_rows

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        runs: dict[str, int] = {}

        def items() -> Iterator[FetchItem]:
            for batch in batches:
                for row in batch.to_pylist():
                    runs[row["track_id"]] = int(row["runs"]) + 1
                    yield FetchItem(row["track_id"], row["preview_url"], row["audio_uri"])

        def as_row(result: FetchResult) -> dict[str, Any]:
            run = runs.pop(result.track_id)
            return {
                "track_id": result.track_id, "url": result.url, "audio": result.audio,
                "content_type": result.content_type, "size_bytes": result.size_bytes, "sha256": result.sha256,
                "status": result.status, "error_kind": result.error_kind, "error_detail": result.error_detail,
                "attempts": result.attempts, "run": run, "fetched_at": dt.datetime.now(dt.timezone.utc),
                "table": "previews" if settles(result, run, self.config.max_runs_per_track) else "fetch_attempts",
            }

        with Fetcher(self.config) as fetcher:
            yield from record_batches(map(as_row, fetcher.fetch_all(items())), RESULT_SCHEMA, self.out_rows)


def pending_tracks(lake: Lake) -> pd.DataFrame:
    """Catalogue tracks with no row in ``previews``, with the runs already spent on each."""
    catalogue = lake.read_columns("catalogue", ["track_id", "preview_url", "audio_uri"]).to_pandas()
    settled = set(lake.read_columns("previews", ["track_id"]).column("track_id").to_pylist())
    spent = Counter(lake.read_columns("fetch_attempts", ["track_id"]).column("track_id").to_pylist())
    todo = catalogue[~catalogue["track_id"].isin(settled)].copy()
    todo["runs"] = [spent.get(t, 0) for t in todo["track_id"]]
    return todo.sort_values("track_id").reset_index(drop=True)


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

    parallelism = spark.sparkContext.defaultParallelism
    for table in TABLES:
        lake.ensure(table)
    for start in range(0, len(todo), cfg.commit_every):
        chunk = todo.iloc[start:start + cfg.commit_every]
        keys = spark.createDataFrame(chunk, "track_id string, preview_url string, audio_uri string, runs long")
        if keys.rdd.getNumPartitions() < min(len(chunk), parallelism):
            keys = keys.repartition(min(len(chunk), parallelism))
        lake.append_routed(keys, "table", TABLES, {"hitpredict.stage": "fetch_previews"},
                           transform=FetchTask(cfg), transform_schema=from_arrow_schema(RESULT_SCHEMA))
        log.info("fetch_previews: %d/%d tracks committed (%.1fs)", start + len(chunk), len(todo),
                 time.monotonic() - started)
    report.add_outcomes(outcomes_since(lake, "previews", "fetched_at", since))
    retries = outcomes_since(lake, "fetch_attempts", "fetched_at", since, status="retry")
    if retries:
        report.notes = "retry next run: " + ", ".join(
            f"{kind} {n}" for kind, n in sorted((kind or "unknown", n) for (_, kind), n in retries.items()))
    report.seconds = time.monotonic() - started
    return report
