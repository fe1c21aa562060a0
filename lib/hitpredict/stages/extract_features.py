"""extract_features: every ``ok`` preview without features -> ``features`` (log-mel + summary).

Each task computes its rows (:func:`hitpredict.clip_features.features_row`: decode the centre
window only, then the mel math) in one memory-capped child process forked from the executor's
Python worker (``features.decode_in_child``), one thread each, so the same bytes always give
bit-identical features; the worker writes the Parquet files, so spectrograms never travel back
through the JVM. Per-track failures (corrupt, empty, too short, silent, unsupported, a decoder
that crashed, hung or ran out of memory) become ``failed`` rows with their error kind: the job
never dies on one bad file, and never retries one either.

With the ``embedding`` config active (by default: when musicnn is installed), the child also computes
musicnn's spectrogram of the same decoded window, and the task's Python worker runs the network on it
(:func:`hitpredict.clip_features.add_embeddings`; one :class:`~hitpredict.embeddings.Embedder` per
worker process, in a TensorFlow graph of its own), so TensorFlow never runs under the child's memory
cap. The report gives the embedding's CPU seconds per clip (front end and network).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa

from hitpredict.audio import DecodedClip, DecodeLimits, decode_clip
from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import (
    DETAIL_CHARS, EMBED_INPUT, add_embeddings, embedding_failed, failed_row, features_row,
)
from hitpredict.config import Config, EmbeddingConfig
from hitpredict.embeddings import Embedder
from hitpredict.features import keep_freed_memory
from hitpredict.isolation import IsolatedWorker, WorkerFailed
from hitpredict.lake import Lake
from hitpredict.progress import spark_progress
from hitpredict.schemas import FEATURES
from hitpredict.stages.base import StageReport, append_by_groups, outcomes_since, record_batches

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


class FeatureTask:
    """The executor side: a picklable ``mapInArrow`` function over (track_id, sha256, audio).

    Unless ``isolate`` is false, each task computes its rows in one child process of its own
    (:class:`~hitpredict.isolation.IsolatedWorker`, capped at ``memory_mib`` with ``timeout_s``
    per file): a file that crashes, hangs or exhausts the decoder becomes a ``decode_error`` row.
    ``decode_fn`` replaces :func:`~hitpredict.audio.decode_clip` (called with ``limits`` last).
    ``embedding``: an active config adds the pretrained embedding to every ``ok`` row (``batch_clips``
    clips per network run); ``cost`` (two Spark accumulators: CPU seconds, clips) adds up what it cost.
    """

    def __init__(self, params: AudioParams, min_seconds: float, out_rows: int = 16,
                 limits: DecodeLimits | None = None, isolate: bool = True, memory_mib: int = 512,
                 timeout_s: float = 60.0, decode_fn: Callable[..., DecodedClip] | None = None,
                 embedding: EmbeddingConfig | None = None, cost: tuple[Any, Any] | None = None) -> None:
        self.params = params
        self.min_seconds = min_seconds
        self.out_rows = out_rows
        self.limits = limits or DecodeLimits()
        self.isolate = isolate
        self.memory_mib = memory_mib
        self.timeout_s = timeout_s
        self.decode_fn = decode_fn
        self.embedding = embedding if embedding is not None and embedding.active else None
        self.cost = cost

    def decode(self, data: bytes, sample_rate: int, window_s: float, min_seconds: float) -> DecodedClip:
        """``data`` decoded by ``decode_fn`` or :func:`~hitpredict.audio.decode_clip`, within ``limits``:
        ``window_s`` seconds from the centre at ``sample_rate`` Hz (``DecodedClip.samples``: float32, mono)."""
        return (self.decode_fn or decode_clip)(data, sample_rate, window_s, min_seconds, self.limits)

    def row(self, audio: bytes, track_id: str, sha256: str | None) -> dict[str, Any]:
        """One row, computed in this process."""
        return features_row(track_id, sha256, audio, self.params, self.min_seconds, decode=self.decode,
                            embed_input=self.embedding is not None)

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
        """Rows for (track_id, sha256, audio) items (in a child process unless not ``isolate``), with their
        embeddings when ``embedding`` is set."""
        if self.embedding is None:
            yield from self._mel_rows(items)
            return
        size = self.embedding.batch_clips
        pending: list[dict[str, Any]] = []
        for row in self._mel_rows(items):
            pending.append(row)
            if len(pending) >= size:
                yield from self._embedded(pending)
                pending = []
        yield from self._embedded(pending)

    def _embedded(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with their embeddings (the embedder is built on first use, once per process)."""
        assert self.embedding is not None
        clips = sum(1 for r in rows if r.get(EMBED_INPUT) is not None)
        if clips:
            try:
                embedder = Embedder.from_config(self.embedding)
            except Exception as exc:  # noqa: BLE001 - no embedder: the mel rows stand, each says why
                embedder = None
                log.error("the embedder could not be built: %s", exc)
                for row in rows:
                    if row.pop(EMBED_INPUT, None) is not None:
                        embedding_failed(row, exc)
            if embedder is not None:
                cpu = add_embeddings(rows, embedder)
                if self.cost is not None:
                    self.cost[0].add(cpu)
                    self.cost[1].add(clips)
        return rows

    def _mel_rows(self, items: Iterator[tuple[str, str | None, bytes | None]]) -> Iterator[dict[str, Any]]:
        """Rows without the network's part, in a child process unless not ``isolate``."""
        if not self.isolate:
            for track_id, sha, audio in items:
                yield self.row(audio or b"", track_id, sha)
            return
        with IsolatedWorker(self.row, self.memory_mib, self.timeout_s, warmup=self.warm_up) as worker:
            for track_id, sha, audio in items:
                try:
                    yield worker.call(audio or b"", track_id, sha)
                except WorkerFailed as err:
                    row = failed_row(track_id, sha, self.params)
                    row["error_kind"], row["error_detail"] = "decode_error", f"decoder {err.detail}"[:DETAIL_CHARS]
                    yield row

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``mapInArrow``: batches of (track_id, sha256, audio) -> batches of ``features`` rows."""
        from threadpoolctl import threadpool_limits

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
        decode_fn: Callable[..., DecodedClip] | None = None) -> StageReport:
    """Extract features for every pending preview (of ``only``, when given), committing group by group.
    ``decode_fn`` replaces :func:`~hitpredict.audio.decode_clip` in the executors (tests inject faults)."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    since = dt.datetime.now(dt.timezone.utc)
    report = StageReport("extract_features")
    params = AudioParams.from_config(config.audio)
    lake.ensure("features")
    todo = pending_ids(lake)
    if only is not None:
        todo = [t for t in todo if t in only]
    report.rows_in = len(todo)
    cost = (spark.sparkContext.accumulator(0.0), spark.sparkContext.accumulator(0))  # embedding CPU-s, clips
    if todo:
        wanted = F.broadcast(spark.createDataFrame([(t,) for t in todo], "track_id string"))
        fc = config.features
        task = FeatureTask(params, config.audio.min_seconds,
                           limits=DecodeLimits(fc.max_channels, fc.max_source_rate_hz),
                           isolate=fc.decode_in_child, memory_mib=fc.decode_memory_mib,
                           timeout_s=fc.decode_timeout_s, decode_fn=decode_fn, embedding=config.embedding,
                           cost=cost)
        with spark_progress(spark, "extract_features", config.progress.interval_s, bar=config.progress.bar):
            append_by_groups(lake, "previews", ["track_id", "sha256", "audio"], wanted, "left_semi", "features",
                             task, FEATURES, config.features.commit_every, {"hitpredict.stage": "extract_features"})
    report.add_outcomes(outcomes_since(lake, "features", "extracted_at", since))
    report.notes = f"log-mel {params.n_mels}x{params.frames} float16"
    if config.embedding.active:
        clips = cost[1].value
        per_clip = f"{cost[0].value / clips:.3f} CPU-s per clip over {clips}" if clips else "no clip embedded"
        report.notes += f"; embedding {config.embedding.name}: {per_clip}"
    else:
        report.notes += "; embedding off"
    report.seconds = time.monotonic() - started
    return report
