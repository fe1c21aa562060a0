"""The delta-rs lake: appends from executors, one transaction each, nothing lost or stray."""
from __future__ import annotations

import datetime as dt
import inspect
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from hitpredict.config import LakeConfig
from hitpredict.lake import DeltaRsLake, Lake, LakeWriteError, SchemaMismatchError, SparkDeltaLake, file_stats, open_lake
from hitpredict.lake.base import collect_arrow, declared_arrow
from hitpredict.schemas import TABLES, arrow_schema, spark_schema

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)


def catalogue_rows(start: int, count: int) -> list[dict]:
    return [
        {
            "track_id": f"t{i:05d}",
            "source": "test",
            "source_row": i + 1,
            "title": f"Song {i}",
            "artists": [f"artist{i % 7}"],
            "primary_artist": f"artist{i % 7}",
            "isrc": None,
            "release_date": dt.date(2020, 1, 1) + dt.timedelta(days=i),
            "audio_uri": None,
            "preview_url": f"http://127.0.0.1/{i}.mp3",
            "popularity": float(i % 101),
            "popularity_source": "label",
            "streams": i * 10,
            "region": None,
            "genre": "hip hop",
            "ingested_at": NOW,
        }
        for i in range(start, start + count)
    ]


def catalogue_df(spark, start: int, count: int, partitions: int = 4):
    return spark.createDataFrame(catalogue_rows(start, count), spark_schema("catalogue")).repartition(partitions)


def data_files(lake, table: str) -> set[str]:
    folder = lake.location(table)
    return {name for name in os.listdir(folder) if name.endswith(".parquet")} if os.path.isdir(folder) else set()


def test_two_appends_from_many_partitions_make_two_versions_with_every_row_once(spark, lake):
    first = lake.append("catalogue", catalogue_df(spark, 0, 300))
    second = lake.append("catalogue", catalogue_df(spark, 300, 200))

    table = DeltaTable(lake.location("catalogue"))
    assert (first, second) == (0, 1)
    assert table.version() == 1
    assert len(table.history()) == 2
    ids = table.to_pyarrow_table().column("track_id").to_pylist()
    assert sorted(ids) == [f"t{i:05d}" for i in range(500)]
    # Several executors wrote files: more than one file per version.
    assert len(table.file_uris()) >= 4
    # The Spark reader sees exactly the committed rows, with the declared types.
    df = lake.read("catalogue")
    assert df.count() == 500 and df.select("track_id").distinct().count() == 500
    assert df.schema.simpleString() == spark_schema("catalogue").simpleString()
    info = lake.describe("catalogue")
    assert (info.version, info.rows) == (1, 500)


def test_compaction_rewrites_small_files_into_one_and_keeps_every_row(spark, lake):
    assert lake.compact("catalogue") is None                         # no table yet
    for start in range(0, 60, 10):
        lake.append("catalogue", catalogue_df(spark, start, 10, partitions=2))
    before = lake.describe("catalogue")
    rows = lake.read_arrow("catalogue").sort_by("track_id")
    assert before.files >= 6
    assert lake.compact("catalogue") == (before.files, 1)
    after = lake.describe("catalogue")
    assert (after.version, after.rows) == (before.version + 1, 60)
    assert lake.read_arrow("catalogue").sort_by("track_id").equals(rows)
    assert DeltaTable(lake.location("catalogue")).history(1)[0]["operation"] == "OPTIMIZE"
    assert lake.compact("catalogue") == (1, 1) and lake.version("catalogue") == after.version   # nothing to do


def test_time_travel_sees_the_first_append_only(spark, lake):
    lake.append("catalogue", catalogue_df(spark, 0, 40))
    lake.append("catalogue", catalogue_df(spark, 40, 10))
    old = DeltaTable(lake.location("catalogue"), version=0).to_pyarrow_table()
    assert old.num_rows == 40


def test_failed_write_leaves_table_unchanged_and_no_stray_files(spark, lake):
    lake.append("catalogue", catalogue_df(spark, 0, 100))
    before_files = data_files(lake, "catalogue")

    # One partition's rows blow up half-way through the write, after other
    # partitions have already written their Parquet files.
    @F.udf("string")
    def explode_on_one_row(track_id):
        if track_id == "t00150":
            raise RuntimeError("simulated executor crash")
        return track_id

    bad = catalogue_df(spark, 100, 100, partitions=4).withColumn("track_id", explode_on_one_row("track_id"))
    with pytest.raises(LakeWriteError, match="table unchanged"):
        lake.append("catalogue", bad)

    assert DeltaTable(lake.location("catalogue")).version() == 0
    assert lake.read("catalogue").count() == 100
    assert data_files(lake, "catalogue") == before_files


def test_not_null_violation_is_refused_with_the_column_named(spark, lake):
    rows = catalogue_rows(0, 5)
    rows[3]["track_id"] = None
    from pyspark.sql.types import StructField, StructType

    nullable = StructType([StructField(f.name, f.dataType, True) for f in spark_schema("catalogue").fields])
    df = spark.createDataFrame(rows, nullable)
    with pytest.raises(LakeWriteError, match="column track_id is NOT NULL"):
        lake.append("catalogue", df)
    assert not lake.exists("catalogue") or lake.read("catalogue").count() == 0
    assert data_files(lake, "catalogue") == set()


def test_schema_mismatch_is_refused_naming_each_difference(spark, lake):
    df = catalogue_df(spark, 0, 10).drop("genre").withColumn("popularity", F.col("popularity").cast("string")) \
        .withColumn("mood", F.lit("happy"))
    with pytest.raises(SchemaMismatchError) as err:
        lake.append("catalogue", df)
    message = str(err.value)
    assert "'catalogue'" in message
    assert "missing column genre (string)" in message
    assert "unexpected column mood (string)" in message
    assert "column popularity is string, table has double" in message
    assert not lake.exists("catalogue")


def test_column_order_does_not_matter(spark, lake):
    df = catalogue_df(spark, 0, 20)
    lake.append("catalogue", df.select(*reversed(df.columns)))
    assert lake.read("catalogue").count() == 20


def test_empty_append_creates_an_empty_table(spark, lake):
    lake.append("catalogue", catalogue_df(spark, 0, 0, partitions=1))
    assert lake.exists("catalogue")
    assert lake.read("catalogue").count() == 0
    assert [t.name for t in lake.tables()] == ["catalogue"]


def test_rows_per_file_rolls_files(spark, tmp_path):
    from hitpredict.config import LakeConfig
    from hitpredict.lake import DeltaRsLake

    small = DeltaRsLake(LakeConfig(root=str(tmp_path / "lh"), rows_per_file=25), spark)
    small.append("catalogue", catalogue_df(spark, 0, 100, partitions=1))
    assert len(DeltaTable(small.location("catalogue")).file_uris()) == 4


def test_file_stats_are_delta_stats():
    import pyarrow as pa

    data = pa.Table.from_pylist(catalogue_rows(0, 3), schema=TABLES["catalogue"])
    stats = file_stats(data)
    assert stats["numRecords"] == 3
    assert stats["minValues"]["source_row"] == 1 and stats["maxValues"]["source_row"] == 3
    assert stats["nullCount"]["isrc"] == 3
    assert stats["maxValues"]["ingested_at"] == "2026-11-22T12:00:00.000Z"
    assert "artists" not in stats["nullCount"]


def test_every_declared_table_has_a_spark_schema():
    for name, schema in TABLES.items():
        assert [f.name for f in spark_schema(name).fields] == schema.names


def test_bytes_per_file_bounds_what_a_writer_holds(spark, tmp_path):
    from hitpredict.config import LakeConfig
    from hitpredict.lake import DeltaRsLake

    small = DeltaRsLake(LakeConfig(root=str(tmp_path / "lh"), bytes_per_file=4096), spark)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "20")  # the writer sees many small batches, as a fetch task's output
    try:
        small.append("catalogue", catalogue_df(spark, 0, 200, partitions=1))
    finally:
        spark.conf.set(key, before)
    files = DeltaTable(small.location("catalogue")).file_uris()
    assert len(files) > 3
    assert small.read("catalogue").count() == 200


def test_both_engines_implement_every_method_of_the_lake_interface(spark, tmp_path):
    """What a stage may call on a lake is declared on ``Lake`` (the type check holds stages to it), and
    each engine implements all of it: ``lake.engine: delta`` no longer lacks ``read_arrow``."""
    assert "read_arrow" in Lake.__abstractmethods__
    for engine in (DeltaRsLake, SparkDeltaLake):
        missing = sorted(name for name in Lake.__abstractmethods__ if getattr(engine, name) is getattr(Lake, name))
        assert not inspect.isabstract(engine) and not missing, f"{engine.__name__} lacks {missing}"
    root = str(tmp_path / "lh")
    assert isinstance(open_lake(LakeConfig(engine="delta", root=root), spark), SparkDeltaLake)
    assert isinstance(open_lake(LakeConfig(engine="delta-rs", root=root), spark), DeltaRsLake)


def test_read_arrow_and_read_columns_return_the_declared_schema(spark, lake):
    assert lake.read_arrow("catalogue").equals(arrow_schema("catalogue").empty_table())   # no table yet
    lake.append("catalogue", catalogue_df(spark, 0, 30))
    rows = lake.read_arrow("catalogue")
    assert rows.schema.equals(arrow_schema("catalogue"))
    assert sorted(rows.column("track_id").to_pylist()) == [f"t{i:05d}" for i in range(30)]
    columns = lake.read_columns("catalogue", ["ingested_at", "track_id"])
    assert columns.schema.equals(pa.schema([arrow_schema("catalogue").field(c) for c in ("ingested_at", "track_id")]))
    assert columns.sort_by("track_id").equals(rows.select(["ingested_at", "track_id"]).sort_by("track_id"))


def test_reading_through_spark_gives_what_delta_rs_reads_exactly(spark, lake, monkeypatch):
    """The Spark read path (``SparkDeltaLake.read_arrow`` and ``Lake.read_columns``, shared code) over the rows
    of a table equals delta-rs's own read of it, with a session time zone other than UTC: timestamps stay the
    same instants. (The ``delta`` engine's Delta reader needs the delta-spark jars: the rows come from delta-rs.)"""
    lake.append("catalogue", catalogue_df(spark, 0, 50))
    expected = lake.read_arrow("catalogue").sort_by("track_id")
    spark_lake = SparkDeltaLake(LakeConfig(engine="delta", root=lake.config.root), spark)
    monkeypatch.setattr(spark_lake, "read", lake.read)
    monkeypatch.setattr(spark_lake, "exists", lake.exists)
    key = "spark.sql.session.timeZone"
    before = spark.conf.get(key)
    spark.conf.set(key, "America/New_York")
    try:
        whole = spark_lake.read_arrow("catalogue")
        columns = spark_lake.read_columns("catalogue", ["release_date", "ingested_at", "track_id"])
        empty = collect_arrow("catalogue", lake.read("catalogue").limit(0))
    finally:
        spark.conf.set(key, before)
    assert whole.schema.equals(arrow_schema("catalogue"))
    assert whole.sort_by("track_id").equals(expected)
    assert columns.sort_by("track_id").equals(expected.select(["release_date", "ingested_at", "track_id"]))
    assert empty.equals(declared_arrow("catalogue", None)) and empty.num_rows == 0
