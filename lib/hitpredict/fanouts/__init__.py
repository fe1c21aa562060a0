"""Spark fan-outs of outside-service calls that stages use; not stages themselves.

- :mod:`~hitpredict.fanouts.resolve_previews`: Deezer / iTunes preview look-ups for many tracks
  (used by ``ingest_catalogue``).
- :mod:`~hitpredict.fanouts.spotify_crawl`: the resumable Spotify crawl, its progress in
  ``crawl_state`` (used by ``ingest_catalogue``).

Each module keeps the per-unit work in :mod:`hitpredict.sources` and only spreads it over
executors; pyspark is imported lazily only (inside functions or under ``TYPE_CHECKING``), so
importing a fan-out does not start or load Spark.
"""
