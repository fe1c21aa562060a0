"""score_catalogue: every track with ok features and no score yet for a model version -> ``scores``.

Several models (popular/popularity, artist, region) score in one pass over ``features``:
each task loads every model once and scores its rows in fixed-size batches, with the
occlusion explanations in the same pass. Before any task starts, the driver resolves
the models (registry or bundle folder) and refuses a model whose audio parameters
differ from those the features were extracted with.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from hitpredict.audio_params import AudioParams
from hitpredict.config import Config
from hitpredict.keras_compat import ensure_keras2
from hitpredict.lake import Lake
from hitpredict.models import VECTOR_INPUTS, input_names
from hitpredict.progress import spark_progress
from hitpredict.schemas import SCORES
from hitpredict.scoring.registry import ResolvedModel, resolve_model
from hitpredict.scoring.scorer import ScoreError, ScoreSettings, score_rows
from hitpredict.stages.base import StageReport, append_by_groups, local_mode
from hitpredict.train.bundle import ModelBundle

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Spectrogram rows per Arrow batch handed to a scoring task (a 30 s row is ~330 KB).
ROWS_PER_ARROW_BATCH = 64


@dataclass
class ScoreResult:
    """What a score_catalogue run did: its stage report, the models it scored with, the rows each
    wrote and the tracks it looked at."""

    report: StageReport
    models: list[ResolvedModel] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)   # model label -> rows written by this run
    track_ids: list[str] = field(default_factory=list)      # tracks this run looked at


def resolve_models(config: Config) -> list[ResolvedModel]:
    """Every model of ``score.models``, each brought to a local folder (``BundleError`` if one is not there)."""
    models = [resolve_model(ref, config.mlflow) for ref in config.score.models]
    seen = Counter((m.name, m.version) for m in models)
    repeated = [f"{n} v{v}" for (n, v), c in seen.items() if c > 1]
    if repeated:
        raise ScoreError(f"score.models names the same model version twice: {', '.join(repeated)}")
    return models


def check_audio(models: list[ResolvedModel], features_params: Counter) -> None:
    """Refuse a model whose spectrogram parameters differ from those of the features to score."""
    for model in models:
        wanted = AudioParams.from_dict(model.audio)
        for params_json, count in features_params.items():
            have = AudioParams.from_json(params_json)
            if have != wanted:
                diff = ", ".join(f"{k} {v} (model) vs {h} (features)"
                                 for k, (v, h) in wanted.differences(have).items())
                raise ScoreError(
                    f"{model.label} was trained on other audio parameters than the features of {count} track(s) "
                    f"to score: {diff}; extract features with the model's parameters (hitpredict score-folder "
                    f"does) or choose a model trained on these features")


def check_embedding(lake: Lake, models: list[ResolvedModel], todo: dict[str, list[int]]) -> None:
    """Refuse a model that reads the pretrained ``embedding`` or ``tags`` when a track it would score has
    none, or one from another embedding model (``features.embedding_model``): its scores would be wrong
    without a sign. One line, with the counts."""
    readers = [(i, m) for i, m in enumerate(models) if set(reads(m)) & set(VECTOR_INPUTS)]
    if not readers:
        return
    features = lake.read_columns("features", ["track_id", "embedding_model"])
    have = dict(zip(features.column("track_id").to_pylist(), features.column("embedding_model").to_pylist()))
    for index, model in readers:
        wanted = model.bundle.embedding_model if model.bundle is not None else None
        found = Counter(have.get(t) for t, which in todo.items() if index in which and have.get(t) != wanted)
        if found:
            listed = ", ".join(f"{count} with {name or 'none'}" for name, count in found.most_common())
            raise ScoreError(f"{model.label} reads the {wanted or 'unknown'} embedding, but tracks to score have "
                             f"another: {listed}; extract their features with that embedding (embedding.model, "
                             f"layer, max_patches) or choose a model trained on these features")


def pending_tracks(lake: Lake, models: list[ResolvedModel], only: set[str] | None = None
                   ) -> tuple[dict[str, list[int]], Counter]:
    """track id -> indexes of the models that have not scored it yet (ok features only), and
    the features' audio parameters of those tracks with their counts."""
    features = lake.read_columns("features", ["track_id", "status", "audio_params"])
    ok = features.filter(pc.equal(features.column("status"), "ok"))
    if only is not None:
        ok = ok.filter(pc.is_in(ok.column("track_id"), pa.array(sorted(only), pa.string())))
    if ok.num_rows == 0:
        scope = f"of the {len(only)} requested track(s) " if only is not None else ""
        raise ScoreError(f"nothing to score: no track {scope}has ok features in {lake.location('features')} "
                         f"({features.num_rows} features rows); run fetch_previews and extract_features first, "
                         f"or hitpredict score-folder DIR")
    scored = lake.read_columns("scores", ["track_id", "model_name", "model_version"])
    done = {(t, n, v) for t, n, v in zip(*(scored.column(c).to_pylist()
                                           for c in ("track_id", "model_name", "model_version")))}
    todo: dict[str, list[int]] = {}
    params: Counter = Counter()
    for track_id, audio_params in zip(ok.column("track_id").to_pylist(), ok.column("audio_params").to_pylist()):
        wanted = [i for i, m in enumerate(models) if (track_id, m.name, m.version) not in done]
        if wanted and track_id not in todo:
            todo[track_id] = wanted
            params[audio_params] += 1
    return todo, params


def task_threads(spark: "SparkSession") -> int:
    """Threads for one scoring task: the cores a task owns (local mode: this machine's, shared out)."""
    if local_mode(spark):
        return max(1, (os.cpu_count() or 1) // spark.sparkContext.defaultParallelism)
    cpus = spark.conf.get("spark.task.cpus", "1")
    return int(cpus) if cpus is not None else 1


def ship_folder(spark: "SparkSession", directory: str) -> str:
    """Ship a model folder to every executor as a zip archive (``SparkContext.addArchive``: a cluster
    refuses ``addFile`` of a local folder); returns the archive's name, which ``ScoreTask`` opens
    unpacked with ``SparkFiles.get(name)``. One path for local mode and clusters alike."""
    name = f"hitpredict-model-{uuid.uuid4().hex[:12]}"
    archive = shutil.make_archive(os.path.join(tempfile.mkdtemp(prefix="hitpredict-ship-"), name), "zip",
                                  root_dir=directory)
    spark.sparkContext.addArchive(archive)
    return os.path.basename(archive)


#: Bundles loaded by this Python worker, by folder and version: Spark reuses workers across tasks, so a
#: model is loaded (and its graph traced) once per worker process rather than once per task.
_LOADED: dict[str, Any] = {}


class ScoreTask:
    """The executor side: every model loaded once per worker, one ``scores`` row per (track, model)."""

    def __init__(self, models: list[tuple[str, str, str]], settings: ScoreSettings, threads: int | None) -> None:
        self.models = models            # (name, version, shipped archive: ship_folder)
        self.settings = settings
        self.threads = threads

    def _load(self) -> list[ModelBundle]:
        """Every model of ``models``, from this worker's cache or loaded (TensorFlow set to ``threads``)."""
        ensure_keras2()
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):   # tasks sharing a GPU take memory as they need it
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
        if self.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.threads)
            except RuntimeError:   # a reused Python worker has initialised TensorFlow already
                pass
        bundles = []
        from pyspark import SparkFiles

        for _, version, archive in self.models:
            where = SparkFiles.get(archive)
            key = f"{where}#{version}"
            if key in _LOADED and _LOADED[key].outdated:   # an extract_features task in this worker built an
                log.info("an embedder was built in this worker since %s was loaded: loading it again", key)
                del _LOADED[key]                               # embedder since: that model is unusable now
            if key not in _LOADED:
                if len(_LOADED) >= 8:
                    _LOADED.clear()
                _LOADED[key] = ModelBundle.load(where)
            bundles.append(_LOADED[key])
        return bundles

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``mapInArrow``: batches of (track_id, mel, summary, models) -> batches of ``scores`` rows, one
        per track and model index listed in its ``models``."""
        bundles = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            bundles = bundles or self._load()
            ids, mel, summary, wanted = (batch.column(n).to_pylist() for n in ("track_id", "mel", "summary", "models"))
            vectors = {n: batch.column(n).to_pylist() for n in VECTOR_INPUTS if n in batch.schema.names}
            now = dt.datetime.now(dt.timezone.utc)
            for k, ((name, version, _), bundle) in enumerate(zip(self.models, bundles)):
                rows = [i for i, w in enumerate(wanted) if k in w]
                if rows:
                    out = score_rows(bundle, name, version, [ids[i] for i in rows], [mel[i] for i in rows],
                                     [summary[i] for i in rows], self.settings, now,
                                     vectors={n: [v[i] for i in rows] for n, v in vectors.items()})
                    yield pa.RecordBatch.from_pylist(out, schema=SCORES)


def reads(model: ResolvedModel) -> tuple[str, ...]:
    """The inputs ``model`` reads (``mel``, ``summary``, ``embedding``, ``tags``): its bundle's, or its
    family's when the bundle is not loaded here."""
    return tuple(model.bundle.inputs) if model.bundle is not None else input_names(model.family)


def run(config: Config, spark: "SparkSession", lake: Lake, models: list[ResolvedModel] | None = None,
        only: set[str] | None = None) -> ScoreResult:
    """Score every pending track (of ``only``, when given) with every model of ``score.models``."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    since = dt.datetime.now(dt.timezone.utc)
    report = StageReport("score_catalogue")
    result = ScoreResult(report=report)
    models = result.models = models if models is not None else resolve_models(config)
    lake.ensure("scores")
    lake.ensure("features")   # an older features table gains the embedding columns (null)
    todo, params = pending_tracks(lake, models, only)
    check_audio(models, params)
    check_embedding(lake, models, todo)
    result.track_ids = sorted(todo) if only is None else sorted(only)
    report.rows_in = len(todo)
    names = ", ".join(m.label for m in models)
    if todo:
        wanted = spark.createDataFrame(list(todo.items()), "track_id string, models array<int>")
        wanted = F.broadcast(wanted) if len(todo) <= 1_000_000 else wanted
        # the per-clip vectors (embedding, tags) of the features table, for the models that read them
        read_vectors = [n for n in VECTOR_INPUTS if any(n in reads(m) for m in models)]
        task = ScoreTask([(m.name, m.version, ship_folder(spark, m.bundle_dir)) for m in models],
                         ScoreSettings.from_config(config), task_threads(spark))
        batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
        previous = spark.conf.get(batch_key, None)
        spark.conf.set(batch_key, str(ROWS_PER_ARROW_BATCH))
        try:
            with spark_progress(spark, "score_catalogue", config.progress.interval_s, bar=config.progress.bar):
                append_by_groups(lake, "features", ["track_id", "mel", "summary", *read_vectors], wanted, "inner",
                                 "scores", task,
                                 SCORES, config.score.commit_every,
                                 {"hitpredict.stage": "score_catalogue", "hitpredict.models": names})
        finally:
            if previous is None:
                spark.conf.unset(batch_key)
            else:
                spark.conf.set(batch_key, previous)
    recent = lake.read_columns("scores", ["model_name", "model_version", "scored_at"])
    recent = recent.filter(pc.greater_equal(recent.column("scored_at"), pa.scalar(since, recent.schema.field(
        "scored_at").type)))
    counts = Counter(zip(recent.column("model_name").to_pylist(), recent.column("model_version").to_pylist()))
    result.written = {m.label: counts.get((m.name, m.version), 0) for m in models}
    report.ok = sum(result.written.values())
    missing = sum(len(w) for w in todo.values()) - report.ok
    if missing:
        report.count_failure("not_scored", missing)
    report.notes = "; ".join(f"{label}: {n}" for label, n in result.written.items()) if todo else \
        f"nothing new to score for {names}"
    report.seconds = time.monotonic() - started
    return result
