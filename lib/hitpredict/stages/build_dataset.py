"""build_dataset: catalogue + features -> ``examples`` (keys, split, label) + ``datasets`` (statistics).

Splits and labels are computed on the driver from keys only (track, artist, audio hash,
popularity), by :func:`hitpredict.dataset.label_examples`, and written as they are: an example holds
no copy of its track's spectrogram, summary vector, embedding or tags (training joins them from
``features`` on ``track_id``), so a dataset costs a few dozen bytes per track. The executors read
the training split's features (a join on ``track_id``) for the normalisation statistics, which
come from the training split alone; those of the embedding and the tags only when every
example has them, from one embedding model (else the report says why the ``embed`` and ``fusion``
families cannot train on the dataset). A build with the same config over the same inputs is found in
``datasets`` and not repeated.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from hitpredict.config import Config
from hitpredict.dataset import RunningMoments, check_shapes, dataset_id, label_examples
from hitpredict.models import VECTOR_INPUTS
from hitpredict.lake import Lake
from hitpredict.stages.base import StageReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
#: The pretrained model's per-clip vectors (``features`` columns) the statistics cover.
VECTORS = VECTOR_INPUTS   # embedding, tags
#: Who reads each vector, for the report line that says a dataset lacks it.
USERS = {"embedding": "the embed family", "tags": "the fusion family's tags branch"}
_MOMENTS_DDL = ("frames long, mel_total binary, mel_squares binary, "
                "rows long, summary_total binary, summary_squares binary, "
                + ", ".join(f"{v}_rows long, {v}_total binary, {v}_squares binary, {v}_sizes string" for v in VECTORS))


def _moments_task(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: per-band mel and per-dimension summary, embedding and tag moments of one partition
    (the vector moments over the rows that have one, and the distinct vector lengths seen, as JSON)."""
    mel, summary = RunningMoments(), RunningMoments()
    vectors = {v: RunningMoments() for v in VECTORS}
    sizes: dict[str, set[int]] = {v: set() for v in VECTORS}
    for batch in batches:
        for data, shape, vector in zip(*(batch.column(c).to_pylist() for c in ("mel", "mel_shape", "summary"))):
            frames = np.frombuffer(data, dtype=np.float16).reshape(shape).astype(np.float32)
            mel.add(frames.T)  # each frame is one observation of every band
            summary.add(np.asarray(vector, dtype=np.float32)[None, :])
        for v in VECTORS:
            for values in batch.column(v).to_pylist():
                if values is None:
                    continue
                sizes[v].add(len(values))
                if len(sizes[v]) == 1:   # mixed lengths: no statistics (the driver refuses them by name)
                    vectors[v].add(np.asarray(values, dtype=np.float32)[None, :])
    if mel.count:
        row = {"frames": mel.count, "mel_total": mel.total.tobytes(), "mel_squares": mel.squares.tobytes(),
               "rows": summary.count, "summary_total": summary.total.tobytes(),
               "summary_squares": summary.squares.tobytes()}
        for v in VECTORS:
            row.update({f"{v}_rows": vectors[v].count, f"{v}_total": vectors[v].total.tobytes(),
                        f"{v}_squares": vectors[v].squares.tobytes(), f"{v}_sizes": json.dumps(sorted(sizes[v]))})
        yield pa.RecordBatch.from_pylist([row])


def vector_statistics(name: str, parts: list[dict], train_rows: int, models: dict[str | None, int]
                      ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(mean, std, problem) of the ``name`` vectors (``embedding`` or ``tags``) of a dataset's training split
    from the executors' moment ``parts``: the statistics when every one of ``train_rows`` has one of one
    length and every example's features come from one embedding model (``models``: model name or None ->
    examples), else (None, None, a one-line reason; None when no example has any vector)."""
    sizes = sorted({size for part in parts for size in json.loads(part[f"{name}_sizes"])})
    total = sum(models.values())
    without = models.get(None, 0)
    named = sorted(m for m in models if m is not None)
    if without == total and not sizes:
        return None, None, None
    if without:
        return None, None, f"{name}: missing for {without} of {total} examples (their features have no embedding)"
    if len(named) > 1:
        return None, None, f"{name}: the examples mix embedding models ({', '.join(named)})"
    if len(sizes) > 1:
        return None, None, f"{name}: the training examples' vectors have mixed lengths {sizes}"
    moments = RunningMoments()
    for part in parts:
        if part[f"{name}_rows"]:
            moments = moments.merge(RunningMoments(part[f"{name}_rows"], np.frombuffer(part[f"{name}_total"]),
                                                   np.frombuffer(part[f"{name}_squares"])))
    if moments.count != train_rows:
        return None, None, (f"{name}: missing for {train_rows - moments.count} of {train_rows} training examples "
                            f"(their features have none)")
    mean, std = moments.mean_std()
    return mean, std, None


def popularity_sources_line(counts: dict[str, int]) -> str:
    """``popularity from: label 100, deezer_rank 20 (...)``: which signals a popularity dataset holds."""
    line = "popularity from: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    if len(counts) > 1:
        line += " (different scales mixed: dataset.popularity_sources picks one)"
    return line


def plan(config: Config, lake: Lake) -> tuple[pd.DataFrame, dict]:
    """Keys, splits and labels of every usable track (driver side, no spectrograms): the keys of
    tracks with ok features, read from the lake, labelled by :func:`~hitpredict.dataset.label_examples`."""
    features = lake.read_columns("features", ["track_id", "status", "audio_sha256", "mel_shape",
                                              "embedding_model"]).to_pandas()
    features = features[features["status"] == "ok"].drop(columns="status")
    shape = check_shapes(features["mel_shape"].tolist())
    catalogue = lake.read_columns("catalogue", ["track_id", "primary_artist", "popularity", "popularity_source",
                                                "region"]).to_pandas()
    keys = features.merge(catalogue, on="track_id", how="inner")
    return label_examples(keys, config.dataset, shape)


def run(config: Config, spark: "SparkSession", lake: Lake) -> StageReport:
    """Build the examples of ``config.dataset.target`` unless this exact build exists."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    report = StageReport("build_dataset")
    for table in ("features", "examples", "datasets"):   # features: a table from before embeddings gains their columns
        lake.ensure(table)
    rows, meta = plan(config, lake)
    report.rows_in = len(rows)
    settings: dict[str, Any] = {"dataset": config.dataset.model_dump(mode="json"),
                                "audio": config.audio.model_dump(mode="json")}
    models = {(m if isinstance(m, str) else None): int(n)
              for m, n in rows["embedding_model"].value_counts(dropna=False).items()}
    if any(m is not None for m in models):   # features with embeddings make another dataset than without
        settings["embedding_models"] = sorted(m for m in models if m is not None)
    ds_id = dataset_id({**settings, "inputs": list(zip(rows["track_id"], rows["audio_sha256"], rows["split"]))})
    known = set(lake.read_columns("datasets", ["dataset_id"]).column("dataset_id").to_pylist())
    counts = {s: rows[rows["split"] == s]["label_name" if meta["label_names"] else "split"].value_counts().to_dict()
              for s in ("train", "validation", "test")}
    report.notes = f"{ds_id}, target {meta['target']}: " + ", ".join(
        f"{s} {int((rows['split'] == s).sum())}" for s in ("train", "validation", "test"))
    if meta["popularity_sources"]:
        report.details.append(popularity_sources_line(meta["popularity_sources"]))
    if ds_id in known:
        report.notes += " (up to date)"
        report.seconds = time.monotonic() - started
        return report

    now = dt.datetime.now(dt.timezone.utc)
    examples = rows[["track_id", "primary_artist", "audio_sha256", "split", "label", "label_name"]].assign(
        target=meta["target"], dataset_id=ds_id, created_at=now)
    lake.append("examples", lake.frame("examples", examples),
                {"hitpredict.stage": "build_dataset", "hitpredict.dataset": ds_id})

    train_keys = spark.createDataFrame(rows.loc[rows["split"] == "train", ["track_id"]], "track_id string")
    train = lake.read("features").where("status = 'ok'").join(F.broadcast(train_keys), "track_id")
    mel, summary = RunningMoments(), RunningMoments()
    parts = train.select("mel", "mel_shape", "summary", *VECTORS).mapInArrow(_moments_task, _MOMENTS_DDL).collect()
    for part in parts:
        mel = mel.merge(RunningMoments(part["frames"], np.frombuffer(part["mel_total"]),
                                       np.frombuffer(part["mel_squares"])))
        summary = summary.merge(RunningMoments(part["rows"], np.frombuffer(part["summary_total"]),
                                               np.frombuffer(part["summary_squares"])))
    mel_mean, mel_std = mel.mean_std()
    summary_mean, summary_std = summary.mean_std()
    train_rows = int((rows["split"] == "train").sum())
    stats = {}
    for name in VECTORS:
        mean, std, problem = vector_statistics(name, [p.asDict() for p in parts], train_rows, models)
        stats[f"{name}_mean"] = None if mean is None else mean.tolist()
        stats[f"{name}_std"] = None if std is None else std.tolist()
        if problem:
            report.details.append(f"{problem}: {USERS[name]} cannot train on this dataset")
    embedding_model = next(iter(models)) if len(models) == 1 and stats["embedding_mean"] is not None else None
    record = pd.DataFrame([{
        "dataset_id": ds_id, "target": meta["target"], "threshold": meta["threshold"],
        "label_names": meta["label_names"], "split_counts": json.dumps(counts, sort_keys=True),
        "mel_mean": mel_mean.tolist(), "mel_std": mel_std.tolist(), "summary_mean": summary_mean.tolist(),
        "summary_std": summary_std.tolist(), **stats, "embedding_model": embedding_model,
        "mel_shape": meta["mel_shape"], "config": json.dumps(settings),
        "created_at": now,
    }])
    lake.append("datasets", lake.frame("datasets", record), {"hitpredict.stage": "build_dataset"})
    report.ok = len(rows)
    report.seconds = time.monotonic() - started
    return report
