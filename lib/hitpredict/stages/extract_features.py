"""extract_features: every ``ok`` preview without features -> ``features`` (log-mel + summary).

Decoding and the mel math run in the executors' Python workers (one thread each, so
the same bytes always give bit-identical features); the same process writes the
Parquet files, so spectrograms never travel back through the JVM. Per-track failures
(corrupt, empty, too short, silent, unsupported) become ``failed`` rows with their
error kind: the job never dies on one bad file, and never retries one either.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from hitpredict.config import Config
from hitpredict.features import MelParams
from hitpredict.lake import Lake
from hitpredict.schemas import FEATURES
from hitpredict.stages.base import StageReport, append_by_groups, outcomes_since, record_batches

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def features_row(track_id: str, sha256: str | None, audio: bytes | None, params: MelParams,
                 min_seconds: float, with_summary: bool = True) -> dict[str, Any]:
    """One ``features`` row for one preview: ok with mel and summary (unless not ``with_summary``),
    or failed with its kind."""
    from hitpredict.audio import AudioError, decode_clip
    from hitpredict.features import encode_mel, log_mel, summary_vector

    row: dict[str, Any] = {
        "track_id": track_id, "audio_sha256": sha256, "status": "failed", "error_kind": None,
        "error_detail": None, "duration_s": None, "mel": None, "mel_shape": None, "summary": None,
        "audio_params": params.to_json(), "extracted_at": dt.datetime.now(dt.timezone.utc),
    }
    try:
        clip = decode_clip(audio or b"", params.sample_rate, params.clip_seconds, min_seconds)
        row["duration_s"] = clip.duration_s
        mel_db, power = log_mel(clip.samples, params)
        row["mel"], row["mel_shape"] = encode_mel(mel_db)
        if with_summary:
            row["summary"] = summary_vector(mel_db, power, params).tolist()
        row["status"] = "ok"
    except AudioError as err:
        row["error_kind"], row["error_detail"] = err.kind, err.detail[:500]
    except Exception as exc:  # noqa: BLE001 - one bad file never kills the job
        row["error_kind"], row["error_detail"] = "feature_error", f"{type(exc).__name__}: {exc}"[:500]
    return row


class FeatureTask:
    """The executor side: a picklable ``mapInArrow`` function over (track_id, sha256, audio)."""

    def __init__(self, params: MelParams, min_seconds: float, out_rows: int = 16) -> None:
        self.params = params
        self.min_seconds = min_seconds
        self.out_rows = out_rows

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from threadpoolctl import threadpool_limits

        from hitpredict.features import keep_freed_memory

        keep_freed_memory()

        def rows() -> Iterator[dict[str, Any]]:
            for batch in batches:
                ids, hashes, audios = (batch.column(n).to_pylist() for n in ("track_id", "sha256", "audio"))
                for track_id, sha, audio in zip(ids, hashes, audios):
                    yield features_row(track_id, sha, audio, self.params, self.min_seconds)

        with threadpool_limits(1):  # Spark runs one task per core; determinism, too
            yield from record_batches(rows(), FEATURES, self.out_rows)


def pending_ids(lake: Lake) -> list[str]:
    """Track ids with an ``ok`` preview and no ``features`` row."""
    previews = lake.read_columns("previews", ["track_id", "status"])
    ok = {t for t, s in zip(previews.column("track_id").to_pylist(), previews.column("status").to_pylist())
          if s == "ok"}
    done = set(lake.read_columns("features", ["track_id"]).column("track_id").to_pylist())
    return sorted(ok - done)


def run(config: Config, spark: "SparkSession", lake: Lake, only: set[str] | None = None) -> StageReport:
    """Extract features for every pending preview (of ``only``, when given), committing group by group."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    since = dt.datetime.now(dt.timezone.utc)
    report = StageReport("extract_features")
    params = MelParams.from_config(config.audio)
    lake.ensure("features")
    todo = pending_ids(lake)
    if only is not None:
        todo = [t for t in todo if t in only]
    report.rows_in = len(todo)
    if todo:
        wanted = F.broadcast(spark.createDataFrame([(t,) for t in todo], "track_id string"))
        task = FeatureTask(params, config.audio.min_seconds)
        append_by_groups(lake, "previews", ["track_id", "sha256", "audio"], wanted, "left_semi", "features", task,
                         FEATURES, config.features.commit_every, {"hitpredict.stage": "extract_features"})
    report.add_outcomes(outcomes_since(lake, "features", "extracted_at", since))
    report.notes = f"log-mel {params.n_mels}x{params.frames} float16"
    report.seconds = time.monotonic() - started
    return report
