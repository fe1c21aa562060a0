"""The one place that declares every table's schema.

Schemas are Arrow schemas (what the delta-rs engine writes and what Delta stores);
``spark_schema(name)`` derives the Spark ``StructType`` from them, so the two can
never drift apart.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # pyspark is optional for pure-function users
    from pyspark.sql.types import StructType

TIMESTAMP = pa.timestamp("us", tz="UTC")


def _f(name: str, dtype: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, dtype, nullable=nullable)


CATALOGUE = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("source", pa.string(), nullable=False),          # e.g. "csv:labels.csv", "folder", "spotify"
    _f("source_row", pa.int64()),                       # 1-based row/line in the source, when it has rows
    _f("title", pa.string()),
    _f("artists", pa.list_(pa.string())),
    _f("primary_artist", pa.string()),
    _f("isrc", pa.string()),
    _f("release_date", pa.date32()),
    _f("audio_uri", pa.string()),                       # file path or fsspec URI of the full audio
    _f("preview_url", pa.string()),                     # http(s) URL of a ~30 s preview
    _f("popularity", pa.float64()),                     # 0-100
    _f("popularity_source", pa.string()),               # which signal `popularity` is ("label", "spotify", "deezer_rank")
    _f("streams", pa.int64()),
    _f("region", pa.string()),
    _f("genre", pa.string()),
    _f("ingested_at", TIMESTAMP, nullable=False),
])

#: Catalogue fields a source column can be mapped to (config ``ingest.columns``).
CATALOGUE_SOURCE_FIELDS = ("track_id", "title", "artists", "isrc", "release_date", "audio_uri", "preview_url",
                           "popularity", "streams", "region", "genre")

REJECTS = pa.schema([
    _f("source", pa.string(), nullable=False),
    _f("row_number", pa.int64()),
    _f("track_id", pa.string()),
    _f("reason", pa.string(), nullable=False),
    _f("raw", pa.string()),                             # the offending row as JSON
    _f("rejected_at", TIMESTAMP, nullable=False),
])

PREVIEWS = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("url", pa.string()),
    _f("audio", pa.binary()),
    _f("content_type", pa.string()),
    _f("size_bytes", pa.int64()),
    _f("sha256", pa.string()),
    _f("status", pa.string(), nullable=False),          # "ok" | "failed"
    _f("error_kind", pa.string()),                      # e.g. http_404, timeout, not_audio, too_large
    _f("error_detail", pa.string()),
    _f("attempts", pa.int32()),
    _f("run", pa.int32()),
    _f("fetched_at", TIMESTAMP, nullable=False),
])

#: Transient fetch failures that will be retried by a later run (previews holds settled tracks only).
FETCH_ATTEMPTS = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("url", pa.string()),
    _f("error_kind", pa.string(), nullable=False),
    _f("error_detail", pa.string()),
    _f("attempts", pa.int32()),
    _f("run", pa.int32(), nullable=False),
    _f("fetched_at", TIMESTAMP, nullable=False),
])

FEATURES = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("audio_sha256", pa.string()),
    _f("status", pa.string(), nullable=False),          # "ok" | "failed"
    _f("error_kind", pa.string()),
    _f("error_detail", pa.string()),
    _f("duration_s", pa.float64()),                     # of the decoded audio, before cropping
    _f("mel", pa.binary()),                             # log-mel dB, float16, C order
    _f("mel_shape", pa.list_(pa.int32())),              # [n_mels, frames]
    _f("summary", pa.list_(pa.float32())),              # compact vector for baselines
    _f("audio_params", pa.string()),                    # JSON of the AudioConfig used
    _f("extracted_at", TIMESTAMP, nullable=False),
    # The pretrained embedding (config ``embedding``); null when off, or when the embedder failed on the clip
    # (``error_detail`` says why; the row stays ok). Tables made before these columns gain them on ensure().
    _f("embedding", pa.list_(pa.float32())),            # the layer's vector, mean over the clip's 3 s patches
    _f("tags", pa.list_(pa.float32())),                 # the model's 50 tag probabilities, mean over the clip
    _f("embedding_model", pa.string()),                 # e.g. "MTT_musicnn/penultimate"
])

#: One row per track per dataset: keys, label and split only. The spectrogram, summary vector, embedding and
#: tags stay in ``features`` (one row per track, never rewritten); training joins them on ``track_id``, so the
#: lake stores each track's audio features once however many datasets use it. Tables written before this
#: also hold copies of them (mel, mel_shape, summary, embedding, tags): readers select the columns declared
#: here, and new rows leave those columns null.
EXAMPLES = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("primary_artist", pa.string()),
    _f("audio_sha256", pa.string()),                    # of the features' audio, when the dataset was built
    _f("split", pa.string(), nullable=False),           # "train" | "validation" | "test"
    _f("target", pa.string(), nullable=False),          # which target this row is for
    _f("label", pa.float64()),                          # binary 0/1, regression value or class index
    _f("label_name", pa.string()),                      # class name for multiclass targets
    _f("dataset_id", pa.string(), nullable=False),      # one build_dataset run
    _f("created_at", TIMESTAMP, nullable=False),
])

#: One row per build_dataset run: everything a model needs besides the examples.
DATASETS = pa.schema([
    _f("dataset_id", pa.string(), nullable=False),
    _f("target", pa.string(), nullable=False),
    _f("threshold", pa.float64()),                      # popular target: popularity >= threshold
    _f("label_names", pa.list_(pa.string())),           # class index -> name (classification targets)
    _f("split_counts", pa.string()),                    # JSON: split -> label -> rows
    _f("mel_mean", pa.list_(pa.float32())),             # per mel band, training split only
    _f("mel_std", pa.list_(pa.float32())),
    _f("summary_mean", pa.list_(pa.float32())),
    _f("summary_std", pa.list_(pa.float32())),
    _f("embedding_mean", pa.list_(pa.float32())),       # per embedding dimension, training split only; null
    _f("embedding_std", pa.list_(pa.float32())),        # unless every example has an embedding of one model
    _f("tags_mean", pa.list_(pa.float32())),            # per tag, likewise
    _f("tags_std", pa.list_(pa.float32())),
    _f("embedding_model", pa.string()),                 # the one pretrained model (and layer) of those vectors
    _f("mel_shape", pa.list_(pa.int32())),
    _f("config", pa.string()),                          # JSON of the dataset and audio config
    _f("created_at", TIMESTAMP, nullable=False),
])

SCORES = pa.schema([
    _f("track_id", pa.string(), nullable=False),
    _f("model_name", pa.string(), nullable=False),
    _f("model_version", pa.string(), nullable=False),
    _f("prob_popular", pa.float64()),
    _f("popularity_pred", pa.float64()),
    _f("percentile", pa.float64()),
    _f("similar_artists", pa.list_(pa.struct([("artist", pa.string()), ("prob", pa.float64())]))),
    _f("region", pa.string()),
    _f("segment_importance", pa.list_(pa.float32())),
    _f("scored_at", TIMESTAMP, nullable=False),
])

#: Units of work of resumable API crawls (Spotify): one row per unit done, with its result.
CRAWL_STATE = pa.schema([
    _f("crawl_id", pa.string(), nullable=False),        # "genre:hip hop", "artists:<hash>", "playlist:<id>"
    _f("level", pa.string(), nullable=False),           # "slice" | "artist_ref" | "artist" | "album" | "playlist";
                                                        # "run": one per finished crawl, its counts
    _f("unit", pa.string(), nullable=False),            # search query, artist ref or id, album id, playlist id,
                                                        # or the run's time
    _f("payload", pa.string(), nullable=False),         # JSON: what the unit found (artists, album ids, track rows)
    _f("items", pa.int64()),                            # how many things it found
    _f("crawled_at", TIMESTAMP, nullable=False),
])

#: Local folders catalogue audio may be read from, recorded by each ingest that used the default
#: (the catalogue file's folder) so fetch_previews knows them (``ingest.allow_roots`` wins when set).
AUDIO_ROOTS = pa.schema([
    _f("root", pa.string(), nullable=False),            # a real local path
    _f("source", pa.string(), nullable=False),          # the ingest source that recorded it, e.g. "csv:labels.csv"
    _f("recorded_at", TIMESTAMP, nullable=False),
])

#: Every table of the lake, by name.
TABLES: dict[str, pa.Schema] = {
    "catalogue": CATALOGUE,
    "crawl_state": CRAWL_STATE,
    "rejects": REJECTS,
    "audio_roots": AUDIO_ROOTS,
    "previews": PREVIEWS,
    "fetch_attempts": FETCH_ATTEMPTS,
    "features": FEATURES,
    "examples": EXAMPLES,
    "datasets": DATASETS,
    "scores": SCORES,
}


#: The key of each keyed table: a write adds a row only if no row with its key exists (insert-if-absent),
#: so overlapping or repeated runs never duplicate. Tables not named here are logs (every row counts).
KEYS: dict[str, tuple[str, ...]] = {
    "catalogue": ("track_id",),
    "audio_roots": ("root",),
    "previews": ("track_id",),
    "features": ("track_id",),
    "examples": ("dataset_id", "track_id"),                     # one row per track per dataset
    "datasets": ("dataset_id",),
    "scores": ("model_name", "model_version", "track_id"),       # one score per track per model version
}


def table_key(table: str) -> tuple[str, ...]:
    """The key columns of ``table`` (empty for a table that keeps every row)."""
    arrow_schema(table)  # validates the name
    return KEYS.get(table, ())


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table``; ``KeyError`` names the known tables."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}") from None


def spark_schema(table: str) -> "StructType":
    """The Spark schema of ``table``, derived from its Arrow schema."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(arrow_schema(table))
