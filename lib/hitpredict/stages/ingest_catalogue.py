"""ingest_catalogue: a label's CSV/Parquet file, a folder of audio or a Spotify crawl -> ``catalogue`` (+ ``rejects``).

Rows with no audio get a preview from Deezer or iTunes (``resolve.services``) before they
are validated: always for the spotify source, for CSV/Parquet when ``ingest.resolve_missing``
is set, and with one service for the deezer / itunes sources. Deezer's rank fills a
popularity the source did not give, named ``deezer_rank``.

A row whose local ``audio_uri`` lies outside the allowed roots is rejected
(``audio_outside_roots``): ``ingest.allow_roots``, or by default the catalogue file's folder
(a folder source: the folder), which is recorded in ``audio_roots`` for fetch_previews.
A relative ``audio_uri`` is read from the catalogue file's folder.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Iterator

import pandas as pd

from hitpredict.audio_paths import local_path, real_roots
from hitpredict.config import Config
from hitpredict.fanouts import spotify_crawl
from hitpredict.fanouts.resolve_previews import resolve_previews
from hitpredict.ingest import SourceError, clean_value, normalise_catalogue, normalise_isrc, resolve_columns
from hitpredict.lake import Lake
from hitpredict.sources.folder import read_folder
from hitpredict.sources.table_file import infer_kind, read_chunks
from hitpredict.spark import to_pandas
from hitpredict.stages.base import StageReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
KEY_COLUMNS = ("track_id", "isrc", "preview_url", "audio_uri")
#: Deezer's rank runs 0 to 1,000,000; stored as popularity (0-100) it is divided by this.
DEEZER_RANK_PER_POINT = 10_000


def existing_keys(lake: Lake) -> dict[str, dict[str, str]]:
    """Keys of the tracks already in the catalogue, each mapped to its track id."""
    known = to_pandas(lake.read("catalogue").select(*KEY_COLUMNS))
    return {key: dict(zip(known[key].dropna(), known.loc[known[key].notna(), "track_id"])) for key in KEY_COLUMNS}


def allowed_roots(config: Config, path: str | None, file_kind: str | None) -> tuple[list[str], bool]:
    """The folders local audio of this source may lie in, and whether they are the default
    (the catalogue file's folder; a folder source's own folder; none for a remote source)."""
    if config.ingest.allow_roots:
        return list(config.ingest.allow_roots), False
    if not path or local_path(path) is None:
        return [], True
    path = local_path(path) or path
    return list(real_roots([path if file_kind == "folder" else os.path.dirname(os.path.abspath(path))])), True


def record_roots(lake: Lake, roots: list[str], source: str) -> None:
    """Add ``roots`` not yet in ``audio_roots`` (fetch_previews reads local audio under them)."""
    known = set(lake.read_columns("audio_roots", ["root"]).column("root").to_pylist())
    new = [r for r in roots if r not in known]
    if new:
        now = dt.datetime.now(dt.timezone.utc)
        rows = pd.DataFrame({"root": new, "source": source, "recorded_at": now})
        lake.append("audio_roots", lake.frame("audio_roots", rows), {"hitpredict.stage": "ingest_catalogue"})


def _source_chunks(config: Config, spark: "SparkSession", path: str, kind: str) -> Iterator[tuple[int, pd.DataFrame]]:
    if kind == "folder":
        yield 1, read_folder(spark, path, config.ingest.audio_extensions)
    else:
        yield from read_chunks(path, kind, config.ingest.chunk_rows)


def _blank(raw: pd.DataFrame, column: str | None) -> pd.Series:
    if not column:
        return pd.Series(True, index=raw.index)
    return raw[column].map(clean_value).isna()


def fill_previews(config: Config, spark: "SparkSession", raw: pd.DataFrame, columns: dict[str, str | None],
                  services: list[str], known: dict[str, dict[str, str]], first_row_number: int
                  ) -> tuple[pd.DataFrame, dict[str, str | None], dict[int, str], Counter]:
    """Look up a preview for every row of ``raw`` with no audio and not in the catalogue yet.

    Returns the rows with found previews (and Deezer ranks for missing popularity) filled in,
    the column mapping (a ``preview_url`` / ``popularity`` column is added when the source
    had none), what the services said per row number for rows left without audio, and
    counts per service and outcome.
    """
    isrcs = raw[columns["isrc"]].map(lambda v: normalise_isrc(clean_value(v))) if columns.get("isrc") \
        else pd.Series(None, index=raw.index, dtype=object)
    need = _blank(raw, columns.get("audio_uri")) & _blank(raw, columns.get("preview_url"))
    if columns.get("track_id"):
        need &= ~raw[columns["track_id"]].astype(str).isin(known["track_id"])
    else:
        need &= ~isrcs.isin(known["isrc"])
    outcomes: Counter = Counter()
    if not need.any():
        return raw, columns, {}, outcomes
    raw, columns = raw.reset_index(drop=True), dict(columns)
    need, isrcs = need.reset_index(drop=True), isrcs.reset_index(drop=True)
    for field_name in ("preview_url", "popularity"):
        if not columns.get(field_name):
            columns[field_name] = field_name if field_name not in raw.columns else f"__{field_name}"
            raw[columns[field_name]] = None
    if "popularity_source" not in raw.columns:
        raw["popularity_source"] = None
    raw[columns["preview_url"]] = raw[columns["preview_url"]].astype(object)
    raw[columns["popularity"]] = raw[columns["popularity"]].astype(object)
    sep = config.ingest.artist_separator

    def col(name: str) -> pd.Series:
        if not columns.get(name):
            return pd.Series(None, index=raw.index[need], dtype=object)
        return raw.loc[need, columns[name]].astype(object)

    queries = pd.DataFrame({
        "key": [str(i) for i in raw.index[need]], "title": col("title").values,
        "artist": [str(a).split(sep)[0].strip() if pd.notna(a) else None for a in col("artists")],
        "isrc": isrcs[need].values,
    })
    answers = resolve_previews(spark, config.resolve.model_copy(update={"services": services}), queries)
    tried: dict[int, str] = {}
    for a in answers.itertuples(index=False):
        index = int(a.key)
        if a.status != "found":
            outcomes[("none", a.status)] += 1
            tried[first_row_number + index] = a.tried
            continue
        outcomes[(a.service, "found")] += 1
        raw.at[index, columns["preview_url"]] = a.preview_url
        popularity = raw.at[index, columns["popularity"]]
        if a.service == "deezer" and pd.notna(a.rank) and clean_value(popularity) is None:
            raw.at[index, columns["popularity"]] = min(100.0, float(a.rank) / DEEZER_RANK_PER_POINT)
            raw.at[index, "popularity_source"] = "deezer_rank"
    return raw, columns, tried, outcomes


def _outcome_lines(looked_up: int, outcomes: Counter) -> list[str]:
    if not looked_up:
        return []
    found = Counter({service: n for (service, status), n in outcomes.items() if status == "found"})
    missing = Counter({status: n for (service, status), n in outcomes.items() if service == "none"})
    return [f"previews looked up for {looked_up} track(s): "
            + ", ".join(f"{s} {n}" for s, n in sorted(found.items()))
            + (", " if found else "") + f"none {sum(missing.values())}"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(missing.items()))})" if missing else "")]


def run(config: Config, spark: "SparkSession", lake: Lake, path: str | None = None, *, genre: str | None = None,
        artists: list[str] | None = None, playlist: str | None = None, crawl_tag: str | None = None) -> StageReport:
    """Ingest ``path`` (default ``ingest.path``) or a Spotify crawl; appends only tracks not in the catalogue yet."""
    started = time.monotonic()
    kind: str | None = config.ingest.source or ("spotify" if genre or artists or playlist else None)
    crawl = None
    if kind == "spotify":
        request = spotify_crawl.CrawlRequest.from_config(config.spotify, genre, artists, playlist, crawl_tag)
        source = f"spotify:{request.crawl_id}"
        crawl = spotify_crawl.crawl(config, spark, lake, request)
        rows = crawl.rows.assign(popularity_source=crawl.rows["popularity"].notna().map({True: "spotify",
                                                                                        False: None}))
        chunks: Iterator[tuple[int, pd.DataFrame]] = iter([(1, rows)])
        services: list[str] = list(config.resolve.services)
    else:
        path = path or config.ingest.path
        if not path:
            raise SourceError("no source: pass a path, set ingest.path, or crawl Spotify with --genre, --artists or "
                              "--playlist")
        file_kind = infer_kind(path) if kind in (None, "deezer", "itunes") else kind
        services = [kind] if kind in ("deezer", "itunes") else \
            list(config.resolve.services) if config.ingest.resolve_missing and file_kind != "folder" else []
        kind = kind or file_kind
        source = f"{kind}:{os.path.basename(path.rstrip('/')) or path}"
        chunks = _source_chunks(config, spark, path, file_kind)
    report = StageReport("ingest_catalogue", notes=source)
    roots, default_roots = allowed_roots(config, path if kind != "spotify" else None,
                                         file_kind if kind != "spotify" else None)
    base_dir = os.path.dirname(os.path.abspath(local_path(path) or path)) \
        if kind not in ("spotify", "folder") and path and local_path(path) is not None else None
    local_audio = False
    known = existing_keys(lake)
    known_rejects = {
        (r.row_number, r.reason)
        for r in lake.read("rejects").where(f"source = '{source.replace(chr(39), '')}'")
        .select("row_number", "reason").collect()
    }
    outcomes: Counter = Counter()
    looked_up = 0
    popularity_sources: Counter = Counter()
    for first, raw in chunks:
        columns = resolve_columns(config.ingest.columns if kind not in ("folder", "spotify") else {}, raw.columns)
        tried: dict[int, str] = {}
        if services:
            raw, columns, tried, found = fill_previews(config, spark, raw, columns, services, known, first)
            outcomes += found
            looked_up += sum(found.values())
        result = normalise_catalogue(
            raw, columns, source, first_row_number=first, artist_separator=config.ingest.artist_separator,
            date_formats=config.ingest.date_formats, existing=known, audio_roots=roots, base_dir=base_dir,
        )
        local_audio = local_audio or any(local_path(u) is not None for u in result.rows["audio_uri"].dropna())
        if tried and not result.rejects.empty:
            result.rejects["reason"] = [
                f"{reason}; {tried[n]}" if n in tried else reason
                for n, reason in zip(result.rejects["row_number"], result.rejects["reason"])]
        report.rows_in += len(raw)
        report.ok += len(result.rows)
        popularity_sources.update(result.rows["popularity_source"].fillna("none"))
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
    if default_roots and local_audio:
        record_roots(lake, roots, source)
    if crawl is not None:
        report.details += crawl.report_lines()
    report.details += _outcome_lines(looked_up, outcomes)
    if report.ok:
        report.details.append("popularity of new tracks: " + ", ".join(
            f"{k} {v}" for k, v in sorted(popularity_sources.items())))
    for line in report.details:
        log.info("ingest %s: %s", source, line)
    report.seconds = time.monotonic() - started
    return report
