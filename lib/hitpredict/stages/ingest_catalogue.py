"""ingest_catalogue: a label's CSV/Parquet file or a folder of audio -> ``catalogue`` (+ ``rejects``)."""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Iterator

import pandas as pd

from hitpredict.config import Config
from hitpredict.ingest import SourceError, normalise_catalogue, resolve_columns
from hitpredict.lake import Lake
from hitpredict.sources.folder import read_folder
from hitpredict.sources.table_file import infer_kind, read_chunks
from hitpredict.stages.base import StageReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
KEY_COLUMNS = ("track_id", "isrc", "preview_url", "audio_uri")


def existing_keys(lake: Lake) -> dict[str, dict[str, str]]:
    """Keys of the tracks already in the catalogue, each mapped to its track id."""
    known = lake.read("catalogue").select(*KEY_COLUMNS).toPandas()
    return {key: dict(zip(known[key].dropna(), known.loc[known[key].notna(), "track_id"])) for key in KEY_COLUMNS}


def _source_chunks(config: Config, spark: "SparkSession", path: str, kind: str) -> Iterator[tuple[int, pd.DataFrame]]:
    if kind == "folder":
        yield 1, read_folder(spark, path, config.ingest.audio_extensions)
    else:
        yield from read_chunks(path, kind, config.ingest.chunk_rows)


def run(config: Config, spark: "SparkSession", lake: Lake, path: str | None = None) -> StageReport:
    """Ingest ``path`` (default ``ingest.path``); appends only tracks not in the catalogue yet."""
    started = time.monotonic()
    path = path or config.ingest.path
    if not path:
        raise SourceError("no source: pass a path or set ingest.path")
    kind = config.ingest.source or infer_kind(path)
    source = f"{kind}:{os.path.basename(path.rstrip('/')) or path}"
    report = StageReport("ingest_catalogue", notes=source)
    known = existing_keys(lake)
    known_rejects = {
        (r.row_number, r.reason)
        for r in lake.read("rejects").where(f"source = '{source.replace(chr(39), '')}'")
        .select("row_number", "reason").collect()
    }
    for first, raw in _source_chunks(config, spark, path, kind):
        columns = resolve_columns(config.ingest.columns if kind != "folder" else {}, raw.columns)
        result = normalise_catalogue(
            raw, columns, source, first_row_number=first, artist_separator=config.ingest.artist_separator,
            date_formats=config.ingest.date_formats, existing=known,
        )
        report.rows_in += len(raw)
        report.ok += len(result.rows)
        for reason_kind, n in result.counts.items():
            if reason_kind not in ("ok", "already_in_catalogue", "isrc_invalid_dropped"):
                report.count_failure(reason_kind, n)
        skipped = result.counts.get("already_in_catalogue", 0)
        if skipped:
            report.notes = f"{source}; {skipped} already in the catalogue"
        if not result.rows.empty or not lake.exists("catalogue"):
            lake.append("catalogue", lake.frame("catalogue", result.rows), {"hitpredict.stage": "ingest_catalogue"})
        new_rejects = result.rejects[[
            (n, r) not in known_rejects for n, r in zip(result.rejects["row_number"], result.rejects["reason"])
        ]] if not result.rejects.empty else result.rejects
        if not new_rejects.empty:
            lake.append("rejects", lake.frame("rejects", new_rejects), {"hitpredict.stage": "ingest_catalogue"})
        for key in KEY_COLUMNS:
            rows = result.rows[result.rows[key].notna()]
            known[key].update(zip(rows[key], rows["track_id"]))
        log.info("ingest %s: %d rows read, %d new tracks, %d rejected", source, report.rows_in, report.ok,
                 report.failed_total)
    report.seconds = time.monotonic() - started
    return report
