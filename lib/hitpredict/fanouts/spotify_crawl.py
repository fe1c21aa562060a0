"""A resumable Spotify crawl fanned out over Spark executors, its progress in ``crawl_state``.

Levels: artists (genre search slices or an artist list, on the driver: a capped slice is
split, so slices are sequential), then one unit per artist (its album ids) and one per
album (its track rows), run by ``mapInPandas`` tasks with one spotipy session each. Every
``spotify.commit_every`` units the results are committed to ``crawl_state``; a unit that
failed is not, so running the same crawl again does only what is left. The catalogue rows
are assembled from the state in a fixed order (artists by id, albums and tracks in the
API's order), so a resumed crawl gives the same rows as an uninterrupted one.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pandas as pd

from hitpredict.config import Config, SecretsConfig, SpotifyConfig
from hitpredict.credentials import spotify_credentials
from hitpredict.lake import Lake
from hitpredict.sources.spotify import (CrawlStats, SpotifyCrawler, SpotifyError, assemble,
                                        crawler_with, spotify_id)
from hitpredict.spark import to_pandas

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
UNIT_SCHEMA = "unit string, payload string, error string"


@dataclass(frozen=True)
class CrawlRequest:
    """What to crawl: a genre, a list of artists or a playlist (exactly one)."""

    genre: str | None = None
    artists: tuple[str, ...] = ()
    playlist: str | None = None
    #: Names one crawl of the same thing (e.g. the week of a scheduled job): a new tag crawls
    #: afresh, the same tag resumes.
    tag: str | None = None

    def __post_init__(self) -> None:
        given = sum(map(bool, (self.genre, self.artists, self.playlist)))
        if given != 1:
            raise SpotifyError("spotify: name exactly one of --genre, --artists or --playlist (or spotify.genre, "
                               f"spotify.artists, spotify.playlist in the config); got {given}")

    @property
    def crawl_id(self) -> str:
        """The key of this crawl's rows in ``crawl_state``."""
        if self.genre:
            what = f"genre:{self.genre}"
        elif self.playlist:
            what = f"playlist:{spotify_id(self.playlist, 'playlist') or self.playlist}"
        else:
            what = "artists:" + hashlib.sha1("\n".join(sorted(self.artists)).encode()).hexdigest()[:16]
        return f"{what}@{self.tag}" if self.tag else what

    @classmethod
    def from_config(cls, config: SpotifyConfig, genre: str | None = None, artists: list[str] | None = None,
                    playlist: str | None = None, tag: str | None = None) -> "CrawlRequest":
        """The command line's choice, else the config's."""
        tag = tag or config.crawl_tag
        if genre or artists or playlist:
            return cls(genre, tuple(artists or ()), playlist, tag)
        return cls(config.genre, tuple(config.artists), config.playlist, tag)


@dataclass
class CrawlResult:
    """What a crawl gave: its catalogue source rows, its counts, and how much was resumed."""

    rows: pd.DataFrame                       # catalogue source rows (``sources.spotify.SOURCE_COLUMNS``)
    stats: CrawlStats
    units_resumed: int = 0                   # units read back from crawl_state
    units_crawled: int = 0                   # units done by this run
    missing_artists: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        """The crawl's lines of the ingest report: tracks found, what Spotify withheld, artists not
        found and search slices still over the offset cap (the last two only when there are some)."""
        s = self.stats
        lines = [
            f"spotify: {len(self.rows)} tracks from {s.artists} artists, {s.albums} albums ({s.tracks_seen} seen, "
            f"{s.duplicate_ids} duplicate ids, {s.duplicate_isrcs} duplicate ISRCs); {self.units_crawled} units "
            f"crawled, {self.units_resumed} resumed from crawl_state; batch /tracks {s.batch_endpoint}",
            "withheld by spotify: " + ", ".join(f"{name} {n}" for name, n in s.as_record()["withheld"].items()),
        ]
        if self.missing_artists:
            lines.append(f"artists not found: {', '.join(self.missing_artists)}")
        if s.capped_slices:
            lines.append(f"search slices still over the offset cap: {'; '.join(s.capped_slices)}")
        return lines


class CrawlState:
    """The done units of one crawl, and the new ones waiting to be committed."""

    def __init__(self, lake: Lake, crawl_id: str) -> None:
        from pyspark.sql import functions as F

        self.lake, self.crawl_id = lake, crawl_id
        done = lake.read("crawl_state").where((F.col("crawl_id") == crawl_id) & (F.col("level") != "run")) \
            .select("level", "unit", "payload")
        self.done: dict[tuple[str, str], Any] = {(r.level, r.unit): json.loads(r.payload) for r in done.collect()}
        self.resumed = len(self.done)
        self.added = 0
        self._pending: list[dict[str, Any]] = []

    def level(self, level: str) -> dict[str, Any]:
        """The done units of ``level`` (``slice``, ``artist_ref``, ``artist``, ``album`` or ``playlist``):
        unit -> payload."""
        return {unit: payload for (lv, unit), payload in self.done.items() if lv == level}

    def add(self, level: str, unit: str, payload: Any, items: int) -> None:
        """Mark ``unit`` done with ``payload`` (``items``: its albums, rows or artists); kept until :meth:`commit`."""
        self.done[(level, unit)] = payload
        self.added += 1
        self._pending.append({"crawl_id": self.crawl_id, "level": level, "unit": unit, "payload": json.dumps(payload),
                              "items": items, "crawled_at": dt.datetime.now(dt.timezone.utc)})

    def resume_hint(self) -> str:
        """What to tell a user whose crawl stopped."""
        return f"{len(self.done)} unit(s) are saved in crawl_state: run the same command again to resume"

    def record_run(self, summary: dict[str, Any]) -> None:
        """One ``run`` row: what this crawl found and what the API withheld, for later audits."""
        now = dt.datetime.now(dt.timezone.utc)
        self._pending.append({"crawl_id": self.crawl_id, "level": "run", "unit": now.isoformat(),
                              "payload": json.dumps(summary), "items": summary.get("tracks"), "crawled_at": now})
        self.commit()

    def commit(self) -> None:
        """Append the units added since the last commit to ``crawl_state`` (nothing when there are none)."""
        if self._pending:
            self.lake.append("crawl_state", self.lake.frame("crawl_state", pd.DataFrame(self._pending)),
                             {"hitpredict.stage": "ingest_catalogue", "hitpredict.crawl": self.crawl_id})
            log.info("spotify crawl %s: %d unit(s) committed to crawl_state", self.crawl_id, len(self._pending))
            self._pending = []


def _unit_task(spotify: SpotifyConfig, secrets: SecretsConfig, level: str, genre: str | None
               ) -> Callable[[Iterable[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function doing ``level`` units with one spotipy session per task.

    After a unit fails, the task's other units are not tried (the service is likely down or
    refusing): they are reported as not done, to be crawled by the next run.
    """
    def task(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        crawler: SpotifyCrawler | None = None
        failed: str | None = None
        for frame in frames:
            out: list[tuple[str, str | None, str | None]] = []  # (unit, payload, error)
            for unit in frame["unit"]:
                if failed:
                    out.append((unit, None, f"not tried after an earlier failure in its task: {failed}"))
                    continue
                try:
                    if crawler is None:
                        crawler = crawler_with(spotify, secrets)
                    before = crawler.stats.token_refreshes
                    if level == "artist":
                        payload: dict[str, Any] = {"albums": crawler.artist_albums(unit)}
                    else:
                        payload = {"rows": crawler.album_rows(unit, genre), "batch": crawler.stats.batch_endpoint}
                    payload["token_refreshes"] = crawler.stats.token_refreshes - before
                    out.append((unit, json.dumps(payload), None))
                except SpotifyError as exc:
                    failed = str(exc)
                    out.append((unit, None, failed))
            yield pd.DataFrame(out, columns=["unit", "payload", "error"])
    return task


def _fan_out(spark: "SparkSession", state: CrawlState, level: str, units: list[str], task: Callable,
             spotify: SpotifyConfig, failures: list[str]) -> None:
    """Run ``task`` over the ``units`` not done yet, committing every ``spotify.commit_every``."""
    todo = [u for u in dict.fromkeys(units) if (level, u) not in state.done]
    if not todo:
        return
    tasks = min(spark.sparkContext.defaultParallelism, spotify.max_concurrency)
    commit_every = spotify.commit_every
    for start in range(0, len(todo), commit_every):
        group = todo[start:start + commit_every]
        frame = spark.createDataFrame([(u,) for u in group], "unit string").repartition(min(len(group), tasks))
        results = to_pandas(frame.mapInPandas(task, UNIT_SCHEMA))
        for unit, payload, error in results.itertuples(index=False):
            if error:
                failures.append(f"{level} {unit}: {error}")
                continue
            body = json.loads(payload)
            state.add(level, unit, body, len(body.get("albums") or body.get("rows") or []))
        state.commit()
        log.info("spotify crawl %s: %s units %d/%d done", state.crawl_id, level, min(start + commit_every, len(todo)),
                 len(todo))


def _artists(request: CrawlRequest, state: CrawlState, crawler: SpotifyCrawler, result: CrawlResult
             ) -> dict[str, str]:
    """Artist id -> name, from the search slices or the artist list (driver side, state kept)."""
    if request.genre:
        done = {unit: (p["total"], p["artists"]) for unit, p in state.level("slice").items()}

        def keep(query: str, total: int, artists: list[list[str]]) -> None:
            state.add("slice", query, {"total": total, "artists": artists}, len(artists))

        try:
            return crawler.genre_artists(request.genre, done, keep)
        finally:
            state.commit()
    found: dict[str, str] = {}
    known = state.level("artist_ref")
    try:
        for ref in request.artists:
            if ref not in known:
                state.add("artist_ref", ref, {"artists": crawler.find_artist(ref)}, 1)
            hits = state.done[("artist_ref", ref)]["artists"]
            if not hits:
                result.missing_artists.append(ref)
            found.update((a_id, name) for a_id, name in hits)
    finally:
        state.commit()
    crawler.stats.artists = len(found)
    return found


def _resumable(state: CrawlState, step: Callable[[], Any]) -> Any:
    """``step()``; a failure says how many units are saved for the next run."""
    try:
        return step()
    except SpotifyError as exc:
        if not state.done:
            raise
        raise SpotifyError(f"{exc}; {state.resume_hint()}", exc.http_status) from None


def crawl(config: Config, spark: "SparkSession", lake: Lake, request: CrawlRequest) -> CrawlResult:
    """Crawl ``request`` (resuming from ``crawl_state``) and return its catalogue source rows.

    Raises :class:`SpotifyError` naming the units that failed after committing everything
    that succeeded; running the same crawl again finishes it.
    """
    lake.ensure("crawl_state")
    state = CrawlState(lake, request.crawl_id)
    secrets = spotify_credentials(config.secrets)
    crawler = crawler_with(config.spotify, secrets)
    stats = CrawlStats(crawl=request.crawl_id)
    crawler.stats = stats
    result = CrawlResult(pd.DataFrame(), stats)
    failures: list[str] = []
    if state.resumed:
        log.info("spotify crawl %s: resuming, %d unit(s) already done", request.crawl_id, state.resumed)
    playlist = request.playlist
    if playlist:
        if ("playlist", playlist) not in state.done:
            rows = _resumable(state, lambda: crawler.playlist_rows(playlist))
            state.add("playlist", playlist, {"rows": rows}, len(rows))
            state.commit()
        rows = state.done[("playlist", playlist)]["rows"]
    else:
        artists = sorted(_resumable(state, lambda: _artists(request, state, crawler, result)))
        _fan_out(spark, state, "artist", artists,
                 _unit_task(config.spotify, secrets, "artist", request.genre), config.spotify, failures)
        artist_payloads = [state.done[("artist", artist)] for artist in artists if ("artist", artist) in state.done]
        albums = [a for p in artist_payloads for a in p["albums"]]
        stats.albums = len(albums)
        _fan_out(spark, state, "album", albums,
                 _unit_task(config.spotify, secrets, "album", request.genre), config.spotify, failures)
        payloads = [state.done[("album", a)] for a in albums if ("album", a) in state.done]
        batch = {p.get("batch") for p in payloads}
        stats.batch_endpoint = "withheld" if "withheld" in batch else "available" if "available" in batch \
            else stats.batch_endpoint
        # Tokens refreshed in the executors' sessions, artist units and album units alike.
        stats.token_refreshes += sum(p.get("token_refreshes", 0) for p in artist_payloads + payloads)
        rows = [row for p in payloads for row in p["rows"]]
    result.units_resumed, result.units_crawled = state.resumed, state.added
    # One commit per chunk leaves many small files, and a resume reads them all.
    lake.compact("crawl_state", min_files=config.lake.compact_min_files)
    if failures:
        raise SpotifyError(f"spotify crawl {request.crawl_id!r}: {len(failures)} unit(s) failed, first: {failures[0]}; "
                           f"{state.resume_hint()}")
    result.rows = assemble(rows, stats)
    record = {**stats.as_record(), "tracks": len(result.rows), "units_crawled": result.units_crawled,
              "units_resumed": result.units_resumed, "missing_artists": result.missing_artists}
    state.record_run(record)
    log.info("spotify crawl %s: %s; %d unit(s) resumed, %d crawled", request.crawl_id, stats.summary(),
             result.units_resumed, result.units_crawled)
    return result
