"""Deezer / iTunes look-ups for many tracks, fanned out over Spark executors.

Each task opens one :class:`~hitpredict.sources.api_client.ApiClient` (one HTTP session, at
most ``resolve.per_host_concurrency`` calls in flight per host) and resolves its tracks on
that many threads. The driver gets one row per track: the answer of the last service tried,
and what every service said. ``resolve.itunes_calls_per_minute`` is the whole run's rate:
each of the run's tasks keeps to its share (:func:`task_config`).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import pandas as pd

from hitpredict.config import ResolveConfig
from hitpredict.sources.api_client import ApiClient
from hitpredict.sources.preview_lookup import PreviewLookup, TrackQuery, tried_text
from hitpredict.spark import to_pandas

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
QUERY_COLUMNS = ["key", "title", "artist", "isrc"]
ANSWER_COLUMNS = ["key", "service", "status", "method", "preview_url", "rank", "match_score", "tried"]
ANSWER_SCHEMA = ("key string, service string, status string, method string, preview_url string, rank long, "
                 "match_score double, tried string")


def task_config(config: ResolveConfig, tasks: int) -> ResolveConfig:
    """``config`` for one of ``tasks`` tasks calling at once: the per-host rates divided among them."""
    if tasks <= 1 or not config.itunes_calls_per_minute:
        return config
    return config.model_copy(update={"itunes_calls_per_minute": config.itunes_calls_per_minute / tasks})


def _task(config: ResolveConfig) -> Callable[[Iterable[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def task(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        with ApiClient(config) as client:
            lookup = PreviewLookup(config, client)
            with ThreadPoolExecutor(config.per_host_concurrency) as pool:
                for frame in frames:
                    queries = [TrackQuery(k, t, a, i) for k, t, a, i in
                               frame[QUERY_COLUMNS].astype(object).where(frame[QUERY_COLUMNS].notna(), None)
                               .itertuples(index=False)]
                    rows = []
                    for answers in pool.map(lookup.resolve, queries):
                        last = answers[-1]
                        rows.append((last.track_id, last.service, last.status, last.method, last.preview_url,
                                     last.rank, last.match_score, tried_text(answers)))
                    yield pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    return task


def resolve_previews(spark: "SparkSession", config: ResolveConfig, queries: pd.DataFrame) -> pd.DataFrame:
    """One answer row per query (columns ``ANSWER_COLUMNS``) for ``queries`` (``QUERY_COLUMNS``)."""
    if queries.empty:
        return pd.DataFrame(columns=ANSWER_COLUMNS)
    tasks = min(len(queries), spark.sparkContext.defaultParallelism)
    frame = spark.createDataFrame(queries[QUERY_COLUMNS].astype(object).where(queries[QUERY_COLUMNS].notna(), None),
                                  "key string, title string, artist string, isrc string")
    task = _task(task_config(config, tasks))
    answers = to_pandas(frame.repartition(tasks).mapInPandas(task, ANSWER_SCHEMA))
    log.info("resolve: %d track(s) looked up on %s: %s", len(queries), ", ".join(config.services),
             answers.groupby(["service", "status"]).size().to_dict())
    return answers
