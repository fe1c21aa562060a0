"""The ``examples`` table holds keys, labels and splits; training joins the spectrograms from ``features``.

A dataset costs a few dozen bytes per track, not a copy of its 317 KB log-mel; an example whose features
were deleted is refused by name and count before training; and an ``examples`` table written by the
release that copied the features (the old schema below) keeps working for new builds and for training.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from hitpredict.config import load_config
from hitpredict.dataset import DatasetError
from hitpredict.lake.files import file_stats, write_data_file
from hitpredict.lake.spark_delta import with_table_columns
from hitpredict.schemas import EXAMPLES, TIMESTAMP
from hitpredict.stages import build_dataset, train_model

NOW = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)

#: The ``examples`` schema of the release that copied each track's features into every dataset.
OLD_EXAMPLES = pa.schema([
    pa.field("track_id", pa.string(), nullable=False),
    pa.field("primary_artist", pa.string()),
    pa.field("audio_sha256", pa.string()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("label", pa.float64()),
    pa.field("label_name", pa.string()),
    pa.field("mel", pa.binary()),
    pa.field("mel_shape", pa.list_(pa.int32())),
    pa.field("summary", pa.list_(pa.float32())),
    pa.field("embedding", pa.list_(pa.float32())),
    pa.field("tags", pa.list_(pa.float32())),
    pa.field("dataset_id", pa.string(), nullable=False),
    pa.field("created_at", TIMESTAMP, nullable=False),
])
COPIES = ("mel", "mel_shape", "summary", "embedding", "tags")


def seed(lake, n_artists: int, per_artist: int, shape: tuple[int, int], apart: int = 0) -> pd.DataFrame:
    """Catalogue rows and ok features rows (random log-mel of ``shape``, popularity planted in its level);
    the last ``apart`` tracks' features go into a file of their own (so a test can delete them)."""
    rng = np.random.default_rng(3)
    catalogue, features = [], []
    for a in range(n_artists):
        for k in range(per_artist):
            track, pop = f"t{a:02d}{k}", float(rng.uniform(0, 100))
            catalogue.append({"track_id": track, "source": "test", "source_row": None, "title": track,
                              "artists": [f"artist{a}"], "primary_artist": f"artist{a}", "isrc": None,
                              "release_date": None, "audio_uri": None, "preview_url": "http://x", "popularity": pop,
                              "popularity_source": "label", "streams": None, "region": ["N", "S"][a % 2],
                              "genre": None, "ingested_at": NOW})
            features.append({"track_id": track, "audio_sha256": f"sha-{track}", "status": "ok", "error_kind": None,
                             "error_detail": None, "duration_s": 30.0,
                             "mel": rng.normal(-40 + pop / 5, 6, shape).astype(np.float16).tobytes(),
                             "mel_shape": list(shape),
                             "summary": rng.normal(pop / 50, 1, 4).astype(np.float32).tolist(),
                             "audio_params": "{}", "extracted_at": NOW, "embedding": None, "tags": None,
                             "embedding_model": None})
    lake.append("catalogue", lake.frame("catalogue", pd.DataFrame(catalogue)))
    kept = features[:len(features) - apart]
    lake.append("features", lake.frame("features", pd.DataFrame(kept)))
    if apart:
        lake.append("features", lake.frame("features", pd.DataFrame(features[-apart:])))
    return pd.DataFrame(features)


def live_bytes(lake, table: str) -> tuple[int, int]:
    """(bytes of the live data files, rows) of ``table``, from its Delta log."""
    from deltalake import DeltaTable

    adds = pa.table(DeltaTable(lake.location(table)).get_add_actions(flatten=True))
    return int(sum(adds.column("size_bytes").to_pylist())), int(sum(adds.column("num_records").to_pylist()))


def config_for(tmp_path, *extra: str):
    return load_config(None, [f"train.petastorm_cache={tmp_path / 'petastorm'}",
                              f"train.output_dir={tmp_path / 'models'}",
                              f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *extra], environ={})


def test_examples_hold_keys_only_and_cost_a_small_fraction_of_the_features_bytes(spark, lake):
    seed(lake, n_artists=12, per_artist=4, shape=(128, 130))    # 3 s clips: 33 KB of log-mel per track
    build_dataset.run(load_config(None, [], environ={}), spark, lake)
    features_bytes, features_rows = live_bytes(lake, "features")
    examples_bytes, examples_rows = live_bytes(lake, "examples")
    assert (features_rows, examples_rows) == (48, 48)
    per_feature, per_example = features_bytes / features_rows, examples_bytes / examples_rows
    assert per_feature > 128 * 130 * 2 * 0.9                    # the features row holds the spectrogram
    assert per_example < 0.05 * per_feature, (per_example, per_feature)
    assert lake.read("examples").columns == EXAMPLES.names


def test_examples_whose_features_are_gone_are_refused_by_dataset_and_count(spark, lake, tmp_path):
    from deltalake import DeltaTable
    from deltalake.transaction import RemoveAction

    seed(lake, n_artists=12, per_artist=4, shape=(16, 8), apart=3)
    build_dataset.run(load_config(None, [], environ={}), spark, lake)
    record = lake.read_arrow("datasets").to_pylist()[0]
    # A user deletes some tracks' features (here: the file holding the last three) after the build.
    table = DeltaTable(lake.location("features"))
    adds = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    base = lake.location("features")
    held = {a["path"]: set(pq.read_table(f"{base}/{a['path']}", columns=["track_id"]).column(0).to_pylist())
            for a in adds}
    gone = [a for a in adds if held[a["path"]] <= {"t111", "t112", "t113"}]   # the second append's files
    assert set().union(*(held[a["path"]] for a in gone)) == {"t111", "t112", "t113"}
    table.create_write_transaction([RemoveAction(a["path"], True, int(time.time() * 1000), a["size_bytes"])
                                    for a in gone], "append", table.schema())
    with pytest.raises(DatasetError, match=rf"^dataset {record['dataset_id']}: 3 of 48 examples have no ok row in the "
                                           r"features table \(track_id t111, t112, t113\); their features were "
                                           r"deleted or vacuumed"):
        train_model.run(config_for(tmp_path), spark, lake, family="cnn", num_proc=1)
    assert not (tmp_path / "petastorm").exists() and not (tmp_path / "models").exists()


def write_old_examples(lake, features: pd.DataFrame, dataset_id: str) -> dict:
    """An ``examples`` table as the copying release wrote it (old schema, features copied into every row)
    holding one dataset, and that dataset's ``datasets`` row (statistics from its training split)."""
    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    rows = features.copy()
    rows["primary_artist"] = "artist" + rows["track_id"].str[1:3].astype(int).astype(str)
    rows["split"] = np.where(rows["track_id"].str[1:3].astype(int) < 8, "train",
                             np.where(rows["track_id"].str[1:3].astype(int) < 10, "validation", "test"))
    rows["label"] = (rows.index % 2).astype(float)
    rows = rows.assign(target="popular", label_name=None, dataset_id=dataset_id, created_at=NOW)
    data = pa.Table.from_pandas(rows[OLD_EXAMPLES.names], schema=OLD_EXAMPLES, preserve_index=False)
    fs, base = pafs.FileSystem.from_uri(lake.location("examples"))
    fs.create_dir(base, recursive=True)
    name = "part-00000000000000000000000000000000-old.snappy.parquet"
    size = write_data_file(fs, f"{base}/{name}", data)
    add = AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps(file_stats(data)))
    create_table_with_add_actions(lake.location("examples"), Schema.from_arrow(OLD_EXAMPLES), [add],
                                  mode="error", name="examples")
    train = rows[rows["split"] == "train"]
    mels = np.stack([np.frombuffer(m, np.float16).reshape(16, 8).astype(np.float32) for m in train["mel"]])
    summary = np.stack(train["summary"])
    record = {"dataset_id": dataset_id, "target": "popular", "threshold": 50.0,
              "label_names": ["not_popular", "popular"], "split_counts": "{}",
              "mel_mean": mels.mean(axis=(0, 2)).tolist(), "mel_std": mels.transpose(1, 0, 2).reshape(16, -1)
              .std(axis=1).tolist(), "summary_mean": summary.mean(axis=0).tolist(),
              "summary_std": summary.std(axis=0).tolist(), "embedding_mean": None, "embedding_std": None,
              "tags_mean": None, "tags_std": None, "embedding_model": None, "mel_shape": [16, 8],
              "config": json.dumps({"audio": {}}), "created_at": NOW}
    lake.append("datasets", lake.frame("datasets", pd.DataFrame([record])))
    return record


@pytest.mark.slow
def test_an_old_examples_table_with_feature_copies_takes_new_builds_and_trains(spark, lake, tmp_path):
    from deltalake import DeltaTable

    features = seed(lake, n_artists=12, per_artist=6, shape=(16, 8))
    old = write_old_examples(lake, features, "ds-old")
    # The old dataset trains from the features, which hold exactly the bytes its rows copied.
    joined = train_model.training_rows(lake, "ds-old").toPandas().set_index("track_id")
    copies = DeltaTable(lake.location("examples")).to_pandas().set_index("track_id")
    assert len(joined) == 72
    for column in ("mel", "summary"):
        assert all(np.array_equal(joined.loc[t, column], copies.loc[t, column]) for t in joined.index), column
    assert len(train_model.check_examples(lake, old, 1)) == 72

    # A new build writes its rows (keys only) into the old table; the table keeps its columns, new rows hold nulls.
    report = build_dataset.run(load_config(None, ["dataset.popular_threshold=null", "dataset.popular_quantile=0.5"],
                                           environ={}), spark, lake)
    assert report.ok == 72
    new_id = report.notes.split(",")[0]
    stored = DeltaTable(lake.location("examples"))
    assert set(COPIES) <= set(stored.schema().to_arrow().names)    # not dropped under the old rows
    everything = pa.table(stored.to_pyarrow_table()).to_pandas()
    assert everything.groupby("dataset_id")["mel"].apply(lambda m: int(m.isna().sum())).to_dict() == \
        {"ds-old": 0, new_id: 72}
    assert lake.read("examples").columns == EXAMPLES.names and lake.read("examples").count() == 144
    assert lake.read_columns("examples", ["dataset_id"]).num_rows == 144

    # It trains: its examples joined with the features, through Petastorm, in a Horovod process.
    config = config_for(tmp_path, "train.epochs=1", "train.batch_size=8")
    training = train_model.plan_training(config, spark, lake, "cnn", 1)
    assert training.dataset_id == new_id and training.plan.train_rows == report_rows(report, "train")
    ranks = train_model.train_on_processes(spark, training.examples, training.plan, 1, config.train.petastorm_cache)
    assert len(ranks[0]["history"]["loss"]) == 1 and np.isfinite(ranks[0]["history"]["loss"][0])


def report_rows(report, split: str) -> int:
    """The rows of ``split`` a build_dataset report's notes give (``ds-..., target popular: train 48, ...``)."""
    return int(report.notes.split(f"{split} ")[1].split(",")[0].split(" ")[0])


def test_the_spark_delta_engine_fills_an_old_tables_undeclared_columns_with_nulls(spark):
    from pyspark.sql.pandas.types import from_arrow_schema

    new = spark.createDataFrame(pd.DataFrame([{"track_id": "t1", "primary_artist": "a", "audio_sha256": "h",
                                               "split": "train", "target": "popular", "label": 1.0,
                                               "label_name": None, "dataset_id": "ds", "created_at": NOW}]),
                                from_arrow_schema(EXAMPLES))
    filled = with_table_columns(new, from_arrow_schema(OLD_EXAMPLES))
    assert filled.columns == EXAMPLES.names + list(COPIES)          # every column the stored table has
    assert {f.name: f.dataType for f in filled.schema.fields if f.name in COPIES} == \
        {f.name: f.dataType for f in from_arrow_schema(OLD_EXAMPLES).fields if f.name in COPIES}
    row = filled.first()
    assert row is not None and all(row[c] is None for c in COPIES) and row["track_id"] == "t1"
    assert with_table_columns(new, from_arrow_schema(EXAMPLES)) is new   # nothing to fill: unchanged


def test_the_reference_rows_are_drawn_from_the_keys_whatever_order_the_rows_are_stored_in():
    keys = pd.DataFrame({"track_id": [f"t{i:03d}" for i in range(50)], "split": ["train", "test"] * 25})
    drawn = train_model.reference_ids(keys, 10, seed=7)
    assert len(set(drawn)) == 10 and set(drawn) <= set(keys.loc[keys["split"] == "train", "track_id"])
    assert train_model.reference_ids(keys.sample(frac=1, random_state=1), 10, seed=7) == drawn
    assert train_model.reference_ids(keys, 10, seed=8) != drawn
    assert sorted(train_model.reference_ids(keys, 5000, seed=7)) == sorted(keys.loc[keys["split"] == "train",
                                                                                     "track_id"])
