"""train_model end to end on a generated catalogue whose popularity is planted in the audio:
Petastorm -> Horovod (gloo, 1 and 2 processes) -> Keras -> evaluation -> MLflow -> reload."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from hitpredict.config import load_config
from hitpredict.dataset import DatasetError
from hitpredict.lake import open_lake
from hitpredict.stages import train_model
from hitpredict.stages.demo import run_demo

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def training_config(root: Path, *extra: str):
    return load_config(None, [
        f"lake.root={root / 'lakehouse'}", f"sample.dir={root / 'sample'}", "sample.tracks=360", "sample.artists=36",
        "sample.seconds=6", "sample.preview_port=0", "audio.clip_seconds=6", "audio.min_seconds=1",
        f"train.output_dir={root / 'models'}", f"train.petastorm_cache={root / 'petastorm'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "train.epochs=10", "train.patience=4",
        "train.bootstrap_rounds=300", "embedding.enabled=false", *extra,   # embeddings: test_embeddings, test_scoring
    ], environ={})


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """360 six-second tracks by 36 artists, through ingest, fetch, features and build_dataset."""
    root = tmp_path_factory.mktemp("training")
    config = training_config(root)
    run_demo(config, spark, train=False)
    return config, open_lake(config.lake, spark)


@pytest.fixture(scope="module")
def cnn_two(planted, spark):
    config, lake = planted
    return train_model.run(config, spark, lake, family="cnn", num_proc=2)


def test_two_process_cnn_hears_the_planted_popularity_and_beats_the_dummy(cnn_two):
    m, dummy = cnn_two.metrics, cnn_two.baseline
    assert cnn_two.num_proc == 2 and cnn_two.task == "binary"
    assert m["roc_auc"] >= 0.85, m
    assert dummy["roc_auc"] == pytest.approx(0.5)
    assert m["roc_auc_ci95"][0] > 0.5 and m["brier"] < dummy["brier"] and m["pr_auc"] > dummy["pr_auc"]
    assert cnn_two.samples_per_s > 0 and len(cnn_two.history["val_loss"]) >= 1


def test_run_is_logged_to_mlflow_with_everything_scoring_needs(cnn_two, planted):
    import mlflow
    from mlflow.tracking import MlflowClient

    config, _ = planted
    run = MlflowClient().get_run(cnn_two.run_id)
    assert run.data.params["family"] == "cnn" and run.data.params["num_proc"] == "2"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(cnn_two.metrics["roc_auc"])
    steps = {m.step for m in MlflowClient().get_metric_history(cnn_two.run_id, "val_loss")}
    assert steps == set(range(len(cnn_two.history["val_loss"])))  # one point per epoch
    evaluation = {a.path for a in MlflowClient().list_artifacts(cnn_two.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/calibration.png", "evaluation/history.png",
            "evaluation/test_predictions.csv"} <= evaluation
    assert cnn_two.model_name == "hitpredict-popular" and cnn_two.model_version is not None
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/hitpredict-popular/{cnn_two.model_version}"))
    bundle = json.loads(next(folder.rglob("bundle.json")).read_text())
    assert bundle["audio"]["clip_seconds"] == 6 and bundle["threshold"] == 39
    assert bundle["label_names"] == ["not_popular", "popular"] and bundle["spec"]["frames"] == 259
    assert len(bundle["norm"]["mel_mean"]) == 128 and len(bundle["reference"]) == config.train.reference_points
    assert np.all(np.diff(bundle["reference"]) >= 0)
    assert (Path(cnn_two.bundle_dir).parent / "checkpoints" / "best.weights.h5").is_file()  # rank 0 only


@pytest.fixture(scope="module")
def cnn_one(planted, spark):
    config, lake = planted
    return train_model.run(config, spark, lake, family="cnn", num_proc=1)


def test_one_and_two_processes_reach_comparable_metrics(cnn_two, cnn_one):
    one = cnn_one
    assert one.metrics["roc_auc"] >= 0.8
    assert abs(one.metrics["roc_auc"] - cnn_two.metrics["roc_auc"]) <= 0.08, (one.metrics, cnn_two.metrics)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_run_on_the_same_dataset_seed_and_processes_trains_the_same_model(processes, cnn_one, cnn_two,
                                                                                     planted, spark):
    # Seeded, ordered Petastorm readers over files in partition order, partitions chosen by the rows, a fixed
    # string hash and TensorFlow's op determinism: a rerun is not a new draw. The training losses (averaged
    # over the ranks) repeat exactly; validation metrics to float rounding (seen: 1 ulp), so early stopping
    # picks the same epoch and the model predicts the same.
    config, lake = planted
    first_run = {1: cnn_one, 2: cnn_two}[processes]
    again = train_model.run(config, spark, lake, family="cnn", num_proc=processes)
    assert again.history["loss"] == first_run.history["loss"]
    assert again.history.keys() == first_run.history.keys()
    for key, values in first_run.history.items():
        np.testing.assert_allclose(again.history[key], values, rtol=1e-5, err_msg=key)
    first = pd.read_csv(Path(first_run.evaluation_dir) / "test_predictions.csv")
    second = pd.read_csv(Path(again.evaluation_dir) / "test_predictions.csv")
    assert len(first) > 20 and list(first.track_id) == list(second.track_id)
    np.testing.assert_allclose(second.prediction_0, first.prediction_0, rtol=0, atol=1e-6)


def test_petastorm_reads_the_materialised_files_in_partition_order(spark, tmp_path):
    # Spark lists a write's files in a hash order of names holding a per-write UUID: unsorted, the readers'
    # row-group order (and each process's shard) changed from one materialisation of the same rows to the next.
    from petastorm.spark import SparkDatasetConverter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{tmp_path}")
    df = spark.createDataFrame([(f"t{i:03d}", i, float(i)) for i in range(60)], "track_id string, slot int, x float")
    for attempt in range(3):
        converter = train_model.petastorm_converter(df.withColumn("attempt", F.lit(attempt)), ["x", "attempt"],
                                                    6, 8)
        try:
            names = [url.rsplit("/", 1)[-1] for url in converter.file_urls]
            assert [name.split("-")[1] for name in names] == [f"{p:05d}" for p in range(6)], names
            assert len({name.split("-", 2)[2] for name in names}) == 1   # one write
        finally:
            converter.delete()


def test_training_partitions_depend_on_the_rows_not_on_the_input_layout(spark):
    rows = [(f"t{i:03d}", i) for i in range(50)]
    shuffled = list(reversed(rows))

    def partitions(data, input_partitions):
        df = spark.createDataFrame(data, "track_id string, slot int").repartition(input_partitions)
        return train_model.spread_by_slot(df, 4).rdd.glom().map(lambda part: [r.track_id for r in part]).collect()

    first, second = partitions(rows, 1), partitions(shuffled, 3)
    assert first == second
    assert [len(p) for p in first] == [13, 13, 12, 12]
    assert first[1] == [f"t{i:03d}" for i in range(1, 50, 4)]   # slot % 4 == 1, sorted by track_id


def test_sequential_ids_with_alternating_labels_give_every_partition_both_classes(spark):
    # A catalogue's own ids counting up, labels alternating at the partition period (4 = two processes): ranked
    # by the ids, partition p would hold only label p % 2. Ranked by a hash of the id, each holds both.
    rows = [(f"t{i:06d}", "train", i % 2) for i in range(400)]
    df = train_model.with_slots(spark.createDataFrame(rows, "track_id string, split string, label int"))
    slots = sorted(r.slot for r in df.collect())
    assert slots == list(range(400))
    parts = train_model.spread_by_slot(df, 4).rdd.glom().map(lambda part: [r.label for r in part]).collect()
    assert [len(p) for p in parts] == [100] * 4
    for labels in parts:
        assert 35 <= sum(labels) <= 65, [sum(p) for p in parts]   # about half of each class
    again = train_model.with_slots(spark.createDataFrame(list(reversed(rows)), "track_id string, split string, "
                                                                               "label int").repartition(3))
    assert sorted((r.track_id, r.slot) for r in again.collect()) == sorted((r.track_id, r.slot) for r in df.collect())


def test_model_reloads_in_a_fresh_process_and_reproduces_its_test_predictions(cnn_two, planted):
    config, lake = planted
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import mlflow, numpy as np, pandas as pd
        from deltalake import DeltaTable
        from hitpredict.train.bundle import ModelBundle
        from hitpredict.train.tracking import configure
        from hitpredict.config import MlflowConfig
        configure(MlflowConfig(tracking_uri={config.mlflow.tracking_uri!r}))
        expected = pd.read_csv({cnn_two.evaluation_dir + '/test_predictions.csv'!r})
        examples = DeltaTable({lake.location('examples')!r}).to_pandas()
        features = DeltaTable({lake.location('features')!r}).to_pandas().set_index("track_id")
        test = examples[(examples.dataset_id == {cnn_two.dataset_id!r}) & (examples.split == "test")]
        test = features.loc[test.track_id].loc[expected.track_id]   # the examples' spectrograms live in features
        bundle = ModelBundle.load({cnn_two.bundle_dir!r})
        direct = bundle.predict(test.mel.tolist(), test.summary.tolist())[:, 0]
        served = mlflow.pyfunc.load_model("models:/hitpredict-popular/{cnn_two.model_version}").predict(
            test.reset_index()[["mel", "summary"]])["prob_popular"].to_numpy()
        stored = expected.prediction_0.to_numpy(dtype=np.float32)
        assert np.array_equal(direct, stored), np.abs(direct - stored).max()
        assert np.array_equal(served.astype(np.float32), stored), np.abs(served - stored).max()
        print("reproduced", len(stored))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reproduced" in done.stdout


def test_multiclass_region_model_writes_a_confusion_matrix(planted, spark):
    config, lake = planted
    region = config.model_copy(update={"dataset": config.dataset.model_copy(update={"target": "region"})})
    from hitpredict.stages import build_dataset

    build_dataset.run(region, spark, lake)
    result = train_model.run(region, spark, lake, family="mlp", num_proc=1)
    assert result.task == "multiclass" and len(result.metrics["labels"]) == 4
    assert result.metrics["accuracy"] > result.baseline["accuracy"]  # tempo and swing tell regions apart
    assert (Path(result.evaluation_dir) / "confusion.png").stat().st_size > 1000


# --------------------------------------------------------------------------- refused before training


def write_dataset(lake, splits_labels_shapes, target="popular"):
    """A datasets row, and examples rows with their tracks' features rows, written straight to the lake."""
    ds = "ds-test"
    rows, features = [], []
    for i, (split, label, shape) in enumerate(splits_labels_shapes):
        rows.append({"track_id": f"t{i}", "primary_artist": f"a{i}", "audio_sha256": f"h{i}", "split": split,
                     "target": target, "label": float(label), "label_name": None, "dataset_id": ds,
                     "created_at": NOW})
        features.append({"track_id": f"t{i}", "audio_sha256": f"h{i}", "status": "ok", "error_kind": None,
                         "error_detail": None, "duration_s": 30.0, "mel": np.zeros(shape, np.float16).tobytes(),
                         "mel_shape": list(shape), "summary": [0.0] * 4, "audio_params": "{}", "extracted_at": NOW,
                         "embedding": None, "tags": None, "embedding_model": None})
    lake.append("features", lake.frame("features", pd.DataFrame(features)))
    lake.append("examples", lake.frame("examples", pd.DataFrame(rows)))
    lake.append("datasets", lake.frame("datasets", pd.DataFrame([{
        "dataset_id": ds, "target": target, "threshold": 39.0, "label_names": ["not_popular", "popular"],
        "split_counts": "{}", "mel_mean": [0.0] * 8, "mel_std": [1.0] * 8, "summary_mean": [0.0] * 4,
        "summary_std": [1.0] * 4, "embedding_mean": None, "embedding_std": None, "tags_mean": None, "tags_std": None,
        "embedding_model": None, "mel_shape": [8, 4], "config": json.dumps({"audio": {}}), "created_at": NOW}])))


@pytest.mark.parametrize("rows, message", [
    ([("validation", 0, (8, 4)), ("validation", 1, (8, 4)), ("test", 1, (8, 4)), ("test", 0, (8, 4))],
     r"the training split is empty \(rows per split: \{'validation': 2, 'test': 2\}\)"),
    ([("train", 1, (8, 4))] * 5 + [("validation", 1, (8, 4))] * 2 + [("test", 0, (8, 4))] * 2,
     r"single class \(1.0 for all 5 rows\)"),
    ([("train", 1, (8, 4))] * 3 + [("train", 0, (8, 3))] * 2 + [("validation", 1, (8, 4))] * 2,
     r"mixed spectrogram shapes: 5 x \[8, 4\], 2 x \[8, 3\]"),
    ([("train", 1, (8, 4)), ("train", 0, (8, 4)), ("validation", 1, (8, 4)), ("test", 0, (8, 4))] ,
     r"the validation split has 1 rows, fewer than the 2 training processes"),
])
def test_bad_datasets_are_refused_before_any_process_starts(spark, lake, tmp_path, rows, message):
    write_dataset(lake, rows)
    config = load_config(None, [f"train.petastorm_cache={tmp_path / 'petastorm'}",
                                f"train.output_dir={tmp_path / 'models'}"], environ={})
    with pytest.raises(DatasetError, match=message):
        train_model.run(config, spark, lake, family="cnn", num_proc=2)
    assert not (tmp_path / "petastorm").exists() and not (tmp_path / "models").exists()


def test_missing_dataset_says_to_build_one(spark, lake):
    with pytest.raises(DatasetError, match="no dataset for target .popular. in the datasets table; run build_dataset"):
        train_model.run(load_config(None, [], environ={}), spark, lake)
