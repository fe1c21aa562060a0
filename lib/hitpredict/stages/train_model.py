"""train_model: examples joined with features -> Petastorm -> Horovod-distributed Keras -> evaluation -> MLflow.

An example holds a track's keys, label and split; its spectrogram, summary vector and pretrained
vectors are read from ``features`` through a join on ``track_id`` (:func:`training_rows`). The driver
checks the dataset before any process starts (empty or single-class training split, examples whose
features are gone, mixed spectrogram shapes, too few rows to shard), materialises the
training and validation splits with Petastorm, runs ``num_proc`` Horovod processes,
then evaluates rank 0's best weights on the test split against the dummy baseline,
writes JSON and PNGs, saves the model bundle and logs everything to MLflow.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from hitpredict.config import Config
from hitpredict.dataset import DatasetError, check_classes, check_shapes
from hitpredict.evaluation import HEADLINES, baseline_prediction, comparison_rows, evaluate, metric_text
from hitpredict.keras_compat import ensure_keras2
from hitpredict.lake import Lake
from hitpredict.models import VECTOR_INPUTS, ModelSpec, build_model, input_names
from hitpredict.predict import predict_examples
from hitpredict.progress import progress_settings
from hitpredict.spark import to_pandas
from hitpredict.stages.base import StageReport, local_mode
from hitpredict.targets import target_named
from hitpredict.train import plots
from hitpredict.train.bundle import ModelBundle, reference_quantiles
from hitpredict.train.launcher import run_processes
from hitpredict.train.plan import Augmentation, Normalisation, TrainPlan
from hitpredict.train.tracking import LoggedModel, log_run
from hitpredict.train.worker import train_process

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced, for the printed summary and for tests."""

    report: StageReport
    dataset_id: str = ""
    family: str = ""
    task: str = ""
    num_proc: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    table: list[list[str]] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    samples_per_s: float = 0.0
    bundle_dir: str = ""
    evaluation_dir: str = ""
    run_id: str = ""
    model_name: str | None = None
    model_version: str | None = None


@dataclass
class Training:
    """One run as decided before any process starts: the dataset, its examples, the plan and the run's folder."""

    record: dict[str, Any]      # the ``datasets`` row trained on
    keys: pd.DataFrame          # (track_id, split, label) of every example of the dataset
    plan: TrainPlan
    num_proc: int
    run_dir: Path               # <train.output_dir>/<target>-<family>-<UTC time>
    examples: "DataFrame"       # the dataset's examples joined with their features (:func:`training_rows`)

    @property
    def dataset_id(self) -> str:
        """The id of the dataset trained on."""
        return self.record["dataset_id"]

    @property
    def bundle_dir(self) -> Path:
        """Where the model bundle is saved: ``<run_dir>/model``."""
        return self.run_dir / "model"

    @property
    def evaluation_dir(self) -> Path:
        """Where the metrics, test predictions and plots are written: ``<run_dir>/evaluation``."""
        return self.run_dir / "evaluation"

    @property
    def train_labels(self) -> np.ndarray:
        """The labels of the training split, shape (train rows,) (what the dummy baseline learns from)."""
        return self.keys.loc[self.keys["split"] == "train", "label"].to_numpy()


# --------------------------------------------------------------------------- checks


def resolve_dataset(lake: Lake, dataset_id: str | None, target: str) -> dict[str, Any]:
    """The ``datasets`` row to train on: the one named, or the latest build for ``target``."""
    lake.ensure("datasets")
    builds = [r for r in lake.read_arrow("datasets").to_pylist()
              if (r["dataset_id"] == dataset_id if dataset_id else r["target"] == target)]
    if not builds:
        wanted = f"dataset {dataset_id!r}" if dataset_id else f"dataset for target {target!r}"
        raise DatasetError(f"found no {wanted} in the datasets table; run build_dataset first")
    return max(builds, key=lambda r: r["created_at"])


def check_examples(lake: Lake, record: dict[str, Any], num_proc: int) -> pd.DataFrame:
    """Refuse, before any process starts, a dataset that cannot be trained on: among others one with
    examples whose track has no ok row in ``features`` any more (deleted or vacuumed: the examples hold
    no copy), named with their count and a few of their track ids.

    Returns the (track_id, split, label) of every example of the dataset.
    """
    keys = lake.read_columns("examples", ["dataset_id", "track_id", "split", "label"])
    keys = keys.filter(pc.equal(keys.column("dataset_id"), record["dataset_id"])).to_pandas()
    features = lake.read_columns("features", ["track_id", "status", "mel_shape"])
    features = features.filter(pc.equal(features.column("status"), "ok")).to_pandas()
    keys = keys.merge(features[["track_id", "mel_shape"]], on="track_id", how="left")
    missing = keys.loc[keys["mel_shape"].isna(), "track_id"].sort_values()
    if len(missing):
        shown = ", ".join(missing.head(3)) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(f"dataset {record['dataset_id']}: {len(missing)} of {len(keys)} examples have no ok row "
                           f"in the features table (track_id {shown}); their features were deleted or vacuumed "
                           f"after the dataset was built: run extract_features, then build_dataset again")
    check_shapes(keys["mel_shape"].tolist())
    check_classes(keys["label"], keys["split"], record["target"])
    counts = keys["split"].value_counts().to_dict()
    for split in ("train", "validation", "test"):
        if counts.get(split, 0) < num_proc:
            raise DatasetError(f"dataset {record['dataset_id']}: the {split} split has {counts.get(split, 0)} rows, "
                               f"fewer than the {num_proc} training processes that each need a shard "
                               f"(rows per split: {counts})")
    return keys[["track_id", "split", "label"]]


def check_vectors(record: dict[str, Any], family: str, inputs: tuple[str, ...], norm: Normalisation) -> None:
    """Refuse a ``family`` that reads the pretrained model's ``embedding`` or ``tags`` (in ``inputs``) on a dataset
    whose ``datasets`` ``record`` has no statistics for it: build_dataset records them only when every example
    has that vector, from one embedding model. ``DatasetError`` names the dataset and the column."""
    for name in VECTOR_INPUTS:
        if name in inputs and not norm.vector_stats(name)[0]:
            raise DatasetError(f"dataset {record['dataset_id']}: the {family} family reads the {name} column of "
                               f"the examples' features, but not every example has one from one embedding model "
                               f"(see the build_dataset report). extract_features never recomputes a track it has "
                               f"features for: with embeddings on, extract into a new lake (lake.root) or drop the "
                               f"features table, then build_dataset")


# --------------------------------------------------------------------------- plan


def make_plan(config: Config, record: dict[str, Any], keys: pd.DataFrame, num_proc: int, family: str,
              checkpoint_dir: str | None, threads: int | None) -> TrainPlan:
    """The :class:`~hitpredict.train.plan.TrainPlan` every process gets: the ``family`` model for the
    dataset ``record``'s task and spectrogram shape (classes from its label names), its normalisation,
    the ``train`` config's augmentation and optimisation settings, and the row counts of ``keys``
    (split, label per example). ``checkpoint_dir``: where rank 0 writes its best weights (None: nowhere);
    ``threads``: TensorFlow threads per process (None: TensorFlow decides)."""
    cfg = config.train
    task = target_named(record["target"]).task
    n_mels, frames = (int(v) for v in record["mel_shape"])
    a = cfg.augment
    # A spectrogram model trained on crops predicts a whole clip from windows of the crop's length, half a
    # window apart (hitpredict.models.windows): the same in validation, evaluation and scoring.
    norm = Normalisation.from_record(record)
    branches = tuple(cfg.fusion_branches)
    inputs = input_names(family, ModelSpec(task, fusion_branches=branches))
    check_vectors(record, family, inputs, norm)
    window = a.crop_frames if a.crop_frames and a.crop_frames < frames and "mel" in inputs else None
    spec = ModelSpec(task, n_mels=n_mels, frames=frames, summary_size=len(record["summary_mean"]),
                     n_classes=len(record["label_names"] or []) if task == "multiclass" else 2, seed=cfg.seed,
                     window_frames=window, window_hop=max(1, window // 2) if window else None,
                     embedding_size=len(norm.embedding_mean), tags_size=len(norm.tags_mean), fusion_branches=branches,
                     embed_units=tuple(cfg.embed_units), embed_dropout=cfg.embed_dropout,
                     embed_input_dropout=cfg.embed_input_dropout, embed_l2=cfg.embed_l2)
    return TrainPlan(
        family=family, spec=spec, norm=norm,
        augment=Augmentation(a.crop_frames, a.gain_db, a.time_masks, a.time_mask_frames),
        inputs=inputs, train_rows=int((keys["split"] == "train").sum()),
        validation_rows=int((keys["split"] == "validation").sum()), batch_size=cfg.batch_size, epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, warmup_epochs=cfg.warmup_epochs, patience=cfg.patience, seed=cfg.seed,
        reader_workers=cfg.reader_workers, checkpoint_dir=checkpoint_dir, threads_per_process=threads,
    )


def _local_threads(spark: "SparkSession", num_proc: int) -> int | None:
    """On Spark local mode all processes share this machine: split its cores between them."""
    if not local_mode(spark):
        return None
    return max(1, (os.cpu_count() or 1) // num_proc)


def _cache_url(path: str) -> str:
    return path if "://" in path or path.startswith("dbfs:") else "file://" + str(Path(path).resolve())


@lru_cache(maxsize=None)
def _hash_labels(spark: "SparkSession", partitions: int) -> tuple[int, ...]:
    """For each partition ``p`` of ``partitions``, an int that Spark's hash partitioning (``pmod(hash(v),
    partitions)``) sends to ``p``: a column of these values spreads rows over partitions exactly as chosen."""
    from pyspark.sql import functions as F

    found = (spark.range(0, 64 * partitions).select(F.col("id").cast("int").alias("v"))
             .groupBy(F.expr(f"pmod(hash(v), {partitions})").alias("p")).agg(F.min("v").alias("v")).collect())
    labels = {row["p"]: row["v"] for row in found}
    if len(labels) != partitions:   # 64 draws per partition: cannot happen with a uniform hash
        raise RuntimeError(f"no int hashes to every one of {partitions} Spark partitions")
    return tuple(labels[p] for p in range(partitions))


def spread_by_slot(df: "DataFrame", partitions: int) -> "DataFrame":
    """``df`` (with ``slot``, the row's rank in its split from :func:`with_slots`) in
    ``partitions`` partitions, row ``slot`` in partition ``slot % partitions``, each sorted by ``track_id``.

    Which rows a partition holds, and their order, depend on the dataset alone, not on the file layout of the
    lake it was read from; and every partition holds rows (given at least ``partitions`` rows)."""
    from pyspark.sql import functions as F

    labels = F.array(*[F.lit(v) for v in _hash_labels(df.sparkSession, partitions)])
    part = F.element_at(labels, (F.col("slot") % partitions + 1).cast("int"))
    return df.withColumn("_part", part).repartition(partitions, "_part").sortWithinPartitions("track_id")


def petastorm_converter(df: "DataFrame", columns: list[str], partitions: int, row_bytes: int) -> Any:
    """``columns`` of ``df`` materialised by Petastorm in ``partitions`` partitions (:func:`spread_by_slot`), row
    groups of about ``row_bytes`` x rows / ``partitions`` bytes (1 to 32 MiB); its files listed in partition order."""
    from petastorm.spark import make_spark_converter

    # Spark writes one or more row groups per file; Petastorm shards by row group, so
    # every process needs at least one file of its own.
    rows = df.count()
    group_bytes = int(min(32 << 20, max(1 << 20, rows * row_bytes // partitions)))
    converter = make_spark_converter(spread_by_slot(df, partitions).select(*columns),
                                     parquet_row_group_size_bytes=group_bytes)
    # Petastorm takes the files in the order Spark's inputFiles() gives, a hash order of names that hold a
    # fresh UUID per write: so the readers' row-group order and shards changed from one materialisation to
    # the next, and two runs on one dataset trained one of two models. Partition order is fixed.
    converter.file_urls = sorted(converter.file_urls)
    return converter


def with_slots(examples: "DataFrame") -> "DataFrame":
    """``examples`` (with ``track_id`` and ``split``) with ``slot``: the example's 0-based rank within its split by
    a 64-bit hash of its ``track_id`` (then the id itself).

    The order is fixed by the ids alone, yet does not follow their sequence: a catalogue's own sequential ids
    (``t000000``, ``t000001``, ...) with labels alternating at the partition period would otherwise give
    :func:`spread_by_slot` partitions, and so processes, of one class each."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_hash = Window.partitionBy("split").orderBy(F.xxhash64("track_id"), "track_id")
    return examples.withColumn("slot", F.row_number().over(by_hash) - 1)


def training_rows(lake: Lake, dataset_id: str) -> "DataFrame":
    """The examples of ``dataset_id`` joined with their features on ``track_id``: track_id, split, label,
    slot (:func:`with_slots`), mel, summary, embedding, tags (one row per example; an example without an ok
    features row is left out, which :func:`check_examples` refuses first). The examples, keys only, are
    broadcast; the features stream, so the spectrograms are never shuffled."""
    from pyspark.sql import functions as F

    examples = with_slots(lake.read("examples").where(F.col("dataset_id") == dataset_id)
                          .select("track_id", "split", "label"))
    features = lake.read("features").where(F.col("status") == "ok").select("track_id", "mel", "summary",
                                                                           *VECTOR_INPUTS)
    return features.join(F.broadcast(examples), "track_id")


def train_on_processes(spark: "SparkSession", examples: "DataFrame", plan: TrainPlan, num_proc: int,
                       petastorm_cache: str) -> list[dict[str, Any]]:
    """Materialise the train and validation rows of ``examples`` (:func:`training_rows`) with Petastorm and train
    ``plan`` in ``num_proc`` Horovod processes; one result per rank, rank 0 first."""
    from petastorm.spark import SparkDatasetConverter
    from pyspark.sql import functions as F

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, _cache_url(petastorm_cache))
    vectors = [name for name in VECTOR_INPUTS if name in plan.inputs]   # the embedding / tags columns it reads
    row_bytes = (2 * plan.spec.n_mels * plan.spec.frames + 4 * plan.spec.summary_size + 16
                 + 4 * (plan.spec.embedding_size + plan.spec.tags_size))
    converters = []
    try:
        for split in ("train", "validation"):
            converters.append(petastorm_converter(examples.where(F.col("split") == split),
                                         ["mel", "summary", *vectors, "label"], 2 * num_proc, row_bytes))
        return run_processes(train_process, {"plan": plan, "train_converter": converters[0],
                                             "validation_converter": converters[1]}, num_proc)
    finally:
        for converter in converters:
            converter.delete()


# --------------------------------------------------------------------------- run


def run(config: Config, spark: "SparkSession", lake: Lake, family: str | None = None,
        num_proc: int | None = None) -> TrainResult:
    """Train ``family`` (default ``train.family``) with ``num_proc`` processes (default ``train.num_proc``)
    on the dataset, evaluate it on the test split, save its bundle and log the run to MLflow."""
    ensure_keras2()
    started = time.monotonic()
    training = plan_training(config, spark, lake, family or config.train.family, num_proc or config.train.num_proc)
    result = TrainResult(report=StageReport("train_model", rows_in=len(training.keys)), family=training.plan.family,
                         dataset_id=training.dataset_id, task=training.plan.spec.task, num_proc=training.num_proc)
    # The Horovod processes read the progress settings from the environment they inherit.
    with progress_settings(config.progress.interval_s, config.progress.bar):
        ranks = train_on_processes(spark, training.examples, training.plan, training.num_proc,
                                   config.train.petastorm_cache)
    result.history, result.samples_per_s = ranks[0]["history"], samples_per_second(ranks)
    bundle = make_bundle(training, ranks[0]["weights"])
    bundle.save(training.bundle_dir)   # the Spark tasks that predict load it from there
    test, reference = predict_splits(config, spark, training)
    evaluate_test_split(config, training, test, result)
    save_bundle(bundle, config, training, result, reference)
    write_evaluation(training.evaluation_dir, result, test, training.train_labels)
    result.evaluation_dir = str(training.evaluation_dir)
    logged = log_to_mlflow(config, training, result)
    finish_report(result, training, logged, time.monotonic() - started)
    return result


# --------------------------------------------------------------------------- steps


def plan_training(config: Config, spark: "SparkSession", lake: Lake, family: str, num_proc: int) -> Training:
    """Pick the dataset (``train.dataset_id``, or the latest build for ``dataset.target``), refuse one that
    cannot be trained on (``DatasetError``, before any process starts) and plan the run in a new folder
    ``<train.output_dir>/<target>-<family>-<UTC time>``."""
    cfg = config.train
    record = resolve_dataset(lake, cfg.dataset_id, config.dataset.target)
    keys = check_examples(lake, record, num_proc)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    run_dir = Path(cfg.output_dir).resolve() / f"{record['target']}-{family}-{stamp}"
    plan = make_plan(config, record, keys, num_proc, family, str(run_dir / "checkpoints"),
                     _local_threads(spark, num_proc))
    log.info("training %s (%s) on %s: %d train / %d validation rows, %d processes", family, plan.spec.task,
             record["dataset_id"], plan.train_rows, plan.validation_rows, num_proc)
    return Training(record=record, keys=keys, plan=plan, num_proc=num_proc, run_dir=run_dir,
                    examples=training_rows(lake, record["dataset_id"]))


def make_bundle(training: Training, weights: list[np.ndarray]) -> ModelBundle:
    """The trained model (rebuilt, with rank 0's best ``weights``) and what scoring needs to use it; the
    reference distribution and metrics come later (:func:`save_bundle`)."""
    plan, record = training.plan, training.record
    model = build_model(plan.family, plan.spec)
    model.set_weights(weights)
    return ModelBundle(
        family=plan.family, spec=plan.spec, target=record["target"], audio=json.loads(record["config"])["audio"],
        norm=plan.norm, inputs=plan.inputs, dataset_id=training.dataset_id, threshold=record["threshold"],
        label_names=record["label_names"], model=model,
        embedding_model=record.get("embedding_model") if set(plan.inputs) & {"embedding", "tags"} else None,
    )


def reference_ids(keys: pd.DataFrame, rows: int, seed: int) -> list[str]:
    """The track ids of ``rows`` training examples drawn at random (``seed``) from ``keys`` (track_id, split
    per example): all of them when there are no more; the same draw whatever order the rows are stored in."""
    ids = np.sort(keys.loc[keys["split"] == "train", "track_id"].to_numpy(dtype=str))
    return ids[np.random.default_rng(seed).permutation(len(ids))[:rows]].tolist()


def predict_splits(config: Config, spark: "SparkSession", training: Training) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(test, reference): the saved bundle's predictions (track_id, label, prediction) on every test row,
    sorted by track_id, and on ``train.reference_rows`` random training rows (seeded by ``train.seed``,
    :func:`reference_ids`)."""
    from pyspark.sql import functions as F

    cfg, bundle_dir = config.train, str(training.bundle_dir)
    threads = _local_threads(spark, spark.sparkContext.defaultParallelism)
    examples = training.examples
    test = to_pandas(predict_examples(examples.where(F.col("split") == "test"), bundle_dir, threads))
    test = test.sort_values("track_id").reset_index(drop=True)
    chosen = spark.createDataFrame(pd.DataFrame({"track_id": reference_ids(training.keys, cfg.reference_rows,
                                                                           cfg.seed)}), "track_id string")
    reference = predict_examples(examples.where(F.col("split") == "train").join(F.broadcast(chosen), "track_id"),
                                 bundle_dir, threads).toPandas()
    return test, reference


def evaluate_test_split(config: Config, training: Training, test: pd.DataFrame, result: TrainResult) -> None:
    """The model's and the dummy baseline's test-split metrics (``train.bootstrap_rounds`` resamples for
    the intervals) and the table comparing them, into ``result``."""
    spec, rounds, labels = training.plan.spec, config.train.bootstrap_rounds, training.record["label_names"]
    y_test, test_pred = test["label"].to_numpy(), np.stack(test["prediction"].to_numpy())
    result.metrics = evaluate(spec.task, y_test, test_pred, labels, rounds)
    result.baseline = evaluate(spec.task, y_test, baseline_prediction(
        spec.task, training.train_labels, len(y_test), spec.n_classes), labels, rounds)
    result.table = comparison_rows(spec.task, result.metrics, result.baseline)


def save_bundle(bundle: ModelBundle, config: Config, training: Training, result: TrainResult,
                reference: pd.DataFrame) -> None:
    """Complete ``bundle`` with the reference distribution of its training-split predictions
    (``train.reference_points`` quantiles; binary and regression only) and its headline test metrics,
    and save it again over the first save."""
    task = training.plan.spec.task
    if task != "multiclass":
        bundle.reference = reference_quantiles(np.stack(reference["prediction"].to_numpy())[:, 0],
                                               config.train.reference_points)
    bundle.metrics = {k: result.metrics[k] for k, _, _ in HEADLINES[task]}
    bundle.save(training.bundle_dir)
    result.bundle_dir = str(training.bundle_dir)


def log_to_mlflow(config: Config, training: Training, result: TrainResult) -> LoggedModel:
    """One MLflow run: the plan's parameters, the per-epoch history, the model's and the dummy's finite
    headline metrics and the throughput, the evaluation folder and the bundle (registered as
    ``mlflow.model_name`` when ``mlflow.register_model``); its ids go into ``result``."""
    plan, target = training.plan, training.record["target"]
    params = {**plan.as_params(), "dataset_id": training.dataset_id, "num_proc": training.num_proc,
              "target": target}
    flat = {f"test_{k}": result.metrics[k] for k, _, _ in HEADLINES[plan.spec.task]}
    flat.update({f"dummy_{k}": result.baseline[k] for k, _, _ in HEADLINES[plan.spec.task]})
    flat["train_samples_per_s"] = result.samples_per_s
    logged = log_run(config.mlflow, f"{plan.family}-{target}", params, result.history,
                     {k: v for k, v in flat.items() if np.isfinite(v)}, training.evaluation_dir,
                     training.bundle_dir, config.mlflow.model_name.format(target=target))
    result.run_id, result.model_name, result.model_version = logged.run_id, logged.registered_name, logged.version
    return logged


def finish_report(result: TrainResult, training: Training, logged: LoggedModel, seconds: float) -> None:
    """The stage's report: training rows, ``seconds`` and a one-line summary of the run."""
    report, task = result.report, training.plan.spec.task
    report.ok = training.plan.train_rows
    report.seconds = seconds
    key, label, _ = HEADLINES[task][0]
    report.notes = (f"{result.family} on {result.dataset_id}: test {label} {metric_text(result.metrics, key)} "
                    f"(dummy {result.baseline[key]:.3f}), {len(result.history.get('loss', []))} epochs, "
                    f"{result.samples_per_s:.1f} samples/s; MLflow run {logged.run_id}")


def samples_per_second(ranks: list[dict[str, Any]]) -> float:
    """Training samples per second of all processes together (first epoch, which pays
    graph tracing and reader start-up, left out when there are more)."""
    rates = []
    for r in ranks:
        seconds = r["epoch_seconds"][1:] or r["epoch_seconds"]
        rates.append(r["samples_per_epoch"] / float(np.median(seconds)) if seconds else 0.0)
    return float(sum(rates))


def write_evaluation(directory: Path, result: TrainResult, test: pd.DataFrame, train_labels: np.ndarray) -> None:
    """metrics.json, test_predictions.csv and the plots of one run (``test``: track_id, label and
    prediction per test row; ``train_labels``: the training split's, for the calibration plot's prior)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(
        {"dataset_id": result.dataset_id, "family": result.family, "task": result.task, "model": result.metrics,
         "dummy": result.baseline, "history": result.history}, indent=2, default=float))
    table = pd.DataFrame({"track_id": test["track_id"], "label": test["label"]})
    predictions = np.stack(test["prediction"].to_numpy())
    for i in range(predictions.shape[1]):
        table[f"prediction_{i}"] = predictions[:, i]
    table.to_csv(directory / "test_predictions.csv", index=False, float_format="%.9g")
    plots.history_plot(result.history, directory / "history.png")
    if result.task == "binary":
        plots.calibration_plot(result.metrics["calibration"], float(np.mean(train_labels)),
                               directory / "calibration.png")
    elif result.task == "multiclass":
        caption = "; ".join(f"{label} {metric_text(result.metrics, key)}" for key, label, _ in HEADLINES["multiclass"]
                            if key in ("accuracy", "macro_f1"))
        plots.confusion_plot(result.metrics["confusion"], result.metrics["labels"], directory / "confusion.png",
                             caption)
    else:
        plots.regression_plot(test["label"].to_numpy(), predictions[:, 0], directory / "predictions.png")
