"""extract_features: every ``ok`` preview without features -> ``features`` (log-mel + summary).

Each task computes its rows (decode the centre window only, then the mel math) in one
memory-capped child process forked from the executor's Python worker
(``features.decode_in_child``), one thread each, so the same bytes always give bit-identical
features; the worker writes the Parquet files, so spectrograms never travel back through
the JVM. Per-track failures (corrupt, empty, too short, silent, unsupported, a decoder that
crashed, hung or ran out of memory) become ``failed`` rows with their error kind: the job
never dies on one bad file, and never retries one either.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa

from hitpredict.audio import DecodeLimits
from hitpredict.config import Config
from hitpredict.features import MelParams
from hitpredict.lake import Lake
from hitpredict.schemas import FEATURES
from hitpredict.stages.base import StageReport, append_by_groups, outcomes_since, record_batches

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from hitpredict.audio import DecodedClip

log = logging.getLogger(__name__)


def _row(track_id: str, sha256: str | None, params: MelParams) -> dict[str, Any]:
    """A ``features`` row, failed until filled in."""
    return {
        "track_id": track_id, "audio_sha256": sha256, "status": "failed", "error_kind": None,
        "error_detail": None, "duration_s": None, "mel": None, "mel_shape": None, "summary": None,
        "audio_params": params.to_json(), "extracted_at": dt.datetime.now(dt.timezone.utc),
    }


def features_row(track_id: str, sha256: str | None, audio: bytes | None, params: MelParams,
                 min_seconds: float, with_summary: bool = True,
                 decode: Callable[..., "DecodedClip"] | None = None) -> dict[str, Any]:
    """One ``features`` row for one preview: ok with mel and summary (unless not ``with_summary``),
    or failed with its kind. ``decode`` (default :func:`~hitpredict.audio.decode_clip`) is called
    as ``decode(data, sample_rate, window_s, min_seconds)``."""
    from hitpredict.audio import AudioError, decode_clip
    from hitpredict.features import encode_mel, log_mel, summary_vector

    row = _row(track_id, sha256, params)
    try:
        clip = (decode or decode_clip)(audio or b"", params.sample_rate, params.clip_seconds, min_seconds)
        row["duration_s"] = clip.duration_s
        mel_db, power = log_mel(clip.samples, params)
        row["mel"], row["mel_shape"] = encode_mel(mel_db)
        if with_summary:
            row["summary"] = summary_vector(mel_db, power, params).tolist()
        row["status"] = "ok"
    except AudioError as err:
        row["error_kind"], row["error_detail"] = err.kind, err.detail[:500]
    except MemoryError as exc:  # the decoder's child process is memory-capped
        row["error_kind"], row["error_detail"] = "decode_error", f"ran out of memory: {exc}"[:500]
    except Exception as exc:  # noqa: BLE001 - one bad file never kills the job
        row["error_kind"], row["error_detail"] = "feature_error", f"{type(exc).__name__}: {exc}"[:500]
    return row


class FeatureTask:
    """The executor side: a picklable ``mapInArrow`` function over (track_id, sha256, audio).

    Unless ``isolate`` is false, each task computes its rows in one child process of its own
    (:class:`~hitpredict.isolation.IsolatedWorker`, capped at ``memory_mib`` with ``timeout_s``
    per file): a file that crashes, hangs or exhausts the decoder becomes a ``decode_error`` row.
    ``decode_fn`` replaces :func:`~hitpredict.audio.decode_clip` (called with ``limits`` last).
    """

    def __init__(self, params: MelParams, min_seconds: float, out_rows: int = 16,
                 limits: DecodeLimits | None = None, isolate: bool = True, memory_mib: int = 512,
                 timeout_s: float = 60.0, decode_fn: Callable[..., "DecodedClip"] | None = None) -> None:
        self.params = params
        self.min_seconds = min_seconds
        self.out_rows = out_rows
        self.limits = limits or DecodeLimits()
        self.isolate = isolate
        self.memory_mib = memory_mib
        self.timeout_s = timeout_s
        self.decode_fn = decode_fn

    def decode(self, data: bytes, sample_rate: int, window_s: float, min_seconds: float) -> "DecodedClip":
        from hitpredict.audio import decode_clip

        return (self.decode_fn or decode_clip)(data, sample_rate, window_s, min_seconds, self.limits)

    def row(self, audio: bytes, track_id: str, sha256: str | None) -> dict[str, Any]:
        """One row, computed in this process."""
        return features_row(track_id, sha256, audio, self.params, self.min_seconds, decode=self.decode)

    def warm_up(self) -> None:
        """Compute one row of a generated clip here, so that the lazy imports, librosa's compiled
        functions and the filter banks are loaded before the child is forked (it inherits them)."""
        import io

        import av  # noqa: F401 - M4A/AAC decoding, loaded here rather than in each child
        import numpy as np
        import soundfile as sf

        wav = io.BytesIO()
        rate = self.params.sample_rate
        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(int(rate * max(self.min_seconds, 1.0) + rate)) / rate)
        sf.write(wav, tone.astype(np.float32), rate, format="WAV")
        self.row(wav.getvalue(), "warm-up", None)

    def rows(self, items: Iterator[tuple[str, str | None, bytes | None]]) -> Iterator[dict[str, Any]]:
        """Rows for (track_id, sha256, audio) items, in a child process unless not ``isolate``."""
        from hitpredict.isolation import IsolatedWorker, WorkerFailed

        if not self.isolate:
            for track_id, sha, audio in items:
                yield self.row(audio or b"", track_id, sha)
            return
        with IsolatedWorker(self.row, self.memory_mib, self.timeout_s, warmup=self.warm_up) as worker:
            for track_id, sha, audio in items:
                try:
                    yield worker.call(audio or b"", track_id, sha)
                except WorkerFailed as err:
                    row = _row(track_id, sha, self.params)
                    row["error_kind"], row["error_detail"] = "decode_error", f"decoder {err.detail}"[:500]
                    yield row

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from threadpoolctl import threadpool_limits

        from hitpredict.features import keep_freed_memory

        keep_freed_memory()

        def items() -> Iterator[tuple[str, str | None, bytes | None]]:
            for batch in batches:
                yield from zip(*(batch.column(n).to_pylist() for n in ("track_id", "sha256", "audio")))

        with threadpool_limits(1):  # Spark runs one task per core; determinism, too
            yield from record_batches(self.rows(items()), FEATURES, self.out_rows)


def pending_ids(lake: Lake) -> list[str]:
    """Track ids with an ``ok`` preview and no ``features`` row."""
    previews = lake.read_columns("previews", ["track_id", "status"])
    ok = {t for t, s in zip(previews.column("track_id").to_pylist(), previews.column("status").to_pylist())
          if s == "ok"}
    done = set(lake.read_columns("features", ["track_id"]).column("track_id").to_pylist())
    return sorted(ok - done)


def run(config: Config, spark: "SparkSession", lake: Lake, only: set[str] | None = None,
        decode_fn: Callable[..., "DecodedClip"] | None = None) -> StageReport:
    """Extract features for every pending preview (of ``only``, when given), committing group by group.
    ``decode_fn`` replaces :func:`~hitpredict.audio.decode_clip` in the executors (tests inject faults)."""
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
        fc = config.features
        task = FeatureTask(params, config.audio.min_seconds,
                           limits=DecodeLimits(fc.max_channels, fc.max_source_rate_hz),
                           isolate=fc.decode_in_child, memory_mib=fc.decode_memory_mib,
                           timeout_s=fc.decode_timeout_s, decode_fn=decode_fn)
        append_by_groups(lake, "previews", ["track_id", "sha256", "audio"], wanted, "left_semi", "features", task,
                         FEATURES, config.features.commit_every, {"hitpredict.stage": "extract_features"})
    report.add_outcomes(outcomes_since(lake, "features", "extracted_at", since))
    report.notes = f"log-mel {params.n_mels}x{params.frames} float16"
    report.seconds = time.monotonic() - started
    return report
