"""Issue 12, section 1: a lake write happens exactly once.

A commit that landed is never undone; overlapping runs never duplicate a key; a killed
writer's files do not stay; two first writes racing to create a table both land.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from hitpredict.config import LakeConfig
from hitpredict.lake import DeltaRsLake, ParquetTaskWriter, key_values, new_key_mask
from hitpredict.schemas import KEYS, TABLES, arrow_schema, spark_schema

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)


def catalogue_df(spark, ids, partitions: int = 2, source: str = "test"):
    rows = [{"track_id": f"t{i:05d}", "source": source, "source_row": i, "title": f"Song {i}", "ingested_at": NOW}
            for i in ids]
    return spark.createDataFrame(rows, spark_schema("catalogue")).repartition(partitions)


def track_ids(lake: DeltaRsLake, table: str = "catalogue") -> Counter:
    return Counter(lake.read_arrow(table).column("track_id").to_pylist())


def parquet_files(lake: DeltaRsLake, table: str) -> set[str]:
    return {n for n in os.listdir(lake.location(table)) if n.endswith(".parquet")}


# --------------------------------------------------------------------------- pure functions


def test_every_key_is_not_null_columns_of_its_table():
    for table, key in KEYS.items():
        schema = TABLES[table]
        assert key and all(not schema.field(c).nullable for c in key), table


def test_new_key_mask_drops_existing_keys_and_later_repeats():
    keys = pa.chunked_array([["a", "b", "a"], ["c", "b", "d"]])
    assert new_key_mask(keys, pa.array(["c"])).to_pylist() == [True, True, False, False, False, True]
    assert new_key_mask(keys, None).to_pylist() == [True, True, False, True, False, True]


def test_composite_keys_do_not_collide():
    scores = pa.table({"model_name": ["m", "m", "m1"], "model_version": ["1", "11", "1"],
                       "track_id": ["1x", "x", "x"]})
    assert len(set(key_values("scores", scores).to_pylist())) == 3


# --------------------------------------------------------------------------- a landed commit stands


def test_a_commit_that_landed_is_never_undone(spark, lake, monkeypatch):
    lake.append("catalogue", catalogue_df(spark, range(0, 10)))
    # The log read after the commit fails once (a transient storage error): the commit has landed.
    original_commit, original_version = DeltaTable.create_write_transaction, DeltaTable.version
    state = {"committed": False, "raised": 0}

    def commit(self, *args, **kwargs):
        result = original_commit(self, *args, **kwargs)
        state["committed"] = True
        return result

    def version(self):
        if state["committed"] and not state["raised"]:
            state["raised"] += 1
            raise OSError("simulated transient storage error reading _delta_log")
        return original_version(self)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit)
    monkeypatch.setattr(DeltaTable, "version", version)
    assert lake.append("catalogue", catalogue_df(spark, range(10, 20))) == 1
    monkeypatch.undo()

    assert state["raised"] == 1
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(20))      # readable, every row once
    assert lake.read("catalogue").count() == 20
    assert DeltaTable(lake.location("catalogue")).version() == 1


def test_when_the_log_cannot_be_read_after_a_commit_its_files_are_kept(spark, lake, monkeypatch):
    import hitpredict.lake.delta_rs

    from hitpredict.lake import LakeWriteError

    lake.append("catalogue", catalogue_df(spark, range(0, 10)))

    def unreadable(*_args, **_kwargs):
        raise OSError("simulated: _delta_log unreachable")

    monkeypatch.setattr(hitpredict.lake.delta_rs, "_version_of_write", unreadable)
    with pytest.raises(LakeWriteError, match="may have landed"):
        lake.append("catalogue", catalogue_df(spark, range(10, 20)))
    monkeypatch.undo()
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(20))   # it had landed: still readable


# --------------------------------------------------------------------------- keyed tables: insert-if-absent


def test_keyed_table_holds_one_row_per_key_across_writes_and_within_one(spark, lake):
    lake.append("catalogue", catalogue_df(spark, range(0, 20), partitions=3))
    # A rerun overlapping the first, with a key repeated inside the write (two partitions).
    again = catalogue_df(spark, list(range(10, 30)) + [25, 26], partitions=3, source="rerun")
    lake.append("catalogue", again)
    ids = track_ids(lake)
    assert ids == Counter(f"t{i:05d}" for i in range(30))
    # Insert-if-absent: the rows already there are kept as they were.
    sources = {r["track_id"]: r["source"] for r in lake.read_arrow("catalogue").to_pylist()}
    assert sources["t00010"] == "test" and sources["t00025"] == "rerun"
    # Every file the log names exists, none of the write's dropped files is left behind.
    table = DeltaTable(lake.location("catalogue"))
    live = {os.path.basename(u) for u in table.file_uris()}
    assert parquet_files(lake, "catalogue") == live
    # Nothing new at all: no commit.
    version = table.version()
    assert lake.append("catalogue", catalogue_df(spark, range(5, 15))) == version
    assert DeltaTable(lake.location("catalogue")).version() == version


def test_each_commit_reads_the_keys_of_only_the_files_added_since_the_last_one(spark, lake):
    """The driver's key check reads each data file once (bench/scale.py: reading every key at every commit made
    the commits' cost grow with the table), and still sees a rival writer's keys and a compaction's new files."""
    import pickle

    location = lake.location("catalogue")
    files_after = []
    for start in range(0, 40, 10):
        lake.append("catalogue", catalogue_df(spark, range(start, start + 10), partitions=2))
        files_after.append(len(DeltaTable(location).file_uris()))
    known = lake._known_keys(location)
    assert known.files_read == files_after[-2]   # every file read once, by the commit after its own
    assert len(known.keys) == 30                  # the last write's keys are read by the next commit
    lake.append("catalogue", catalogue_df(spark, range(35, 45), source="overlap"))
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(45))
    assert known.files_read == files_after[-1]

    rival = DeltaRsLake(lake.config, spark)      # another driver: its commit is new to this one
    rival.append("catalogue", catalogue_df(spark, range(45, 50), source="rival"))
    lake.append("catalogue", catalogue_df(spark, range(45, 55), source="mine"))
    sources = {r["track_id"]: r["source"] for r in lake.read_arrow("catalogue").to_pylist()}
    assert sources["t00047"] == "rival" and sources["t00052"] == "mine" and len(sources) == 55

    lake._optimize("catalogue")                   # compaction: the files known are no longer live
    read_before, compacted = known.files_read, len(DeltaTable(location).file_uris())
    assert compacted < files_after[-1]
    lake.append("catalogue", catalogue_df(spark, [*range(0, 5), 55, 56], source="late"))
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(57))
    assert known.files_read - read_before == compacted   # every live file again
    assert pickle.loads(pickle.dumps(known)).files == set()


def test_unkeyed_tables_keep_every_row(spark, lake):
    rows = [{"track_id": "t1", "error_kind": "timeout", "run": 1, "fetched_at": NOW}] * 2
    lake.append("fetch_attempts", spark.createDataFrame(rows, spark_schema("fetch_attempts")))
    lake.append("fetch_attempts", spark.createDataFrame(rows, spark_schema("fetch_attempts")))
    assert len(lake.read_arrow("fetch_attempts")) == 4


def test_a_write_that_loses_the_commit_race_rechecks_its_keys(spark, lake, monkeypatch):
    """Another writer commits overlapping keys between this write's read of the table and its commit."""
    lake.append("catalogue", catalogue_df(spark, range(0, 5)))
    original = DeltaTable.create_write_transaction
    raced = []

    def commit_after_a_rival(self, *args, **kwargs):
        if not raced:
            raced.append(True)
            # A rival with a fresh view of the table lands first (same keys, partly).
            lake.append("catalogue", catalogue_df(spark, range(10, 30), source="rival"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit_after_a_rival)
    lake.append("catalogue", catalogue_df(spark, range(0, 20)))
    monkeypatch.undo()
    assert raced
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(30))
    sources = {r["track_id"]: r["source"] for r in lake.read_arrow("catalogue").to_pylist()}
    assert sources["t00015"] == "rival" and sources["t00007"] == "test"


def test_two_first_writes_racing_to_create_a_table_both_land(spark, lake, monkeypatch):
    import deltalake.transaction

    original = deltalake.transaction.create_table_with_add_actions
    raced = []

    def create_after_a_rival(*args, **kwargs):
        if not raced:
            raced.append(True)
            lake.append("fetch_attempts", spark.createDataFrame(
                [{"track_id": "rival", "error_kind": "timeout", "run": 1, "fetched_at": NOW}],
                spark_schema("fetch_attempts")))
        return original(*args, **kwargs)

    monkeypatch.setattr(deltalake.transaction, "create_table_with_add_actions", create_after_a_rival)
    lake.append("fetch_attempts", spark.createDataFrame(
        [{"track_id": "mine", "error_kind": "timeout", "run": 1, "fetched_at": NOW}], spark_schema("fetch_attempts")))
    monkeypatch.undo()
    assert raced
    assert sorted(lake.read_arrow("fetch_attempts").column("track_id").to_pylist()) == ["mine", "rival"]
    assert DeltaTable(lake.location("fetch_attempts")).version() == 1


def test_two_processes_appending_overlapping_keys_at_once_write_each_key_once(tmp_path):
    """Two OS processes, 6 rounds each, committing at the same moment keys that overlap the other
    process's; the first round of each races to create the table."""
    root, sync = tmp_path / "lakehouse", tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "lake_race_worker.py"), str(root), name, other,
                               "6", str(sync)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, other in (("a", "b"), ("b", "a"))]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    table = DeltaTable(str(root / "catalogue"))
    ids = Counter(table.to_pyarrow_dataset().to_table(columns=["track_id"]).column("track_id").to_pylist())
    own = [f"{name}{number}-{i}" for name in ("a", "b") for number in range(6) for i in range(5)]
    assert ids == Counter([f"t{i:05d}" for i in range(80)] + own)
    assert {os.path.basename(u) for u in table.file_uris()} == {
        n for n in os.listdir(root / "catalogue") if n.endswith(".parquet")}
    # The processes did race: commits were lost to the other process and retried.
    retries = sum(err.count("a concurrent write committed first") for _, err in outputs)
    assert retries >= 1, outputs


# --------------------------------------------------------------------------- killed writers leave nothing for long


def _killed_write(lake: DeltaRsLake, ids, age_hours: float) -> set[str]:
    """What a driver killed between the executors' writes and its commit leaves: data files, no commit."""
    location = lake.location("catalogue")
    batch = pa.RecordBatch.from_pylist(
        [{"track_id": f"t{i:05d}", "source": "killed", "ingested_at": NOW} for i in ids], schema=arrow_schema("catalogue"))
    writer = ParquetTaskWriter({"catalogue": location}, None, uuid.uuid4().hex, rows_per_file=5)
    files = pa.Table.from_batches(list(writer(iter([batch])))).column("path").to_pylist()
    when = time.time() - age_hours * 3600
    for name in files:
        os.utime(os.path.join(location, name), (when, when))
    return set(files)


def test_the_next_write_removes_a_killed_writes_files_but_not_a_live_ones(spark, lake):
    lake.append("catalogue", catalogue_df(spark, range(0, 10)))
    lake.compact("catalogue", min_files=2)       # files replaced by compaction stay for time travel
    replaced = parquet_files(lake, "catalogue") - {os.path.basename(u) for u in
                                                   DeltaTable(lake.location("catalogue")).file_uris()}
    assert replaced
    for name in replaced:
        old = time.time() - 48 * 3600
        os.utime(os.path.join(lake.location("catalogue"), name), (old, old))
    dead = _killed_write(lake, range(100, 112), age_hours=24)   # past lake.orphan_grace_hours (12)
    live = _killed_write(lake, range(200, 212), age_hours=0)     # a concurrent writer, not committed yet
    assert dead and live

    lake.append("catalogue", catalogue_df(spark, range(10, 15)))

    left = parquet_files(lake, "catalogue")
    assert not dead & left
    assert live <= left
    assert replaced <= left
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(15))
    assert len(DeltaTable(lake.location("catalogue"), version=0).to_pyarrow_dataset().to_table()) == 10


def test_tables_vacuum_removes_a_killed_writes_files(spark, lake, capsys):
    from hitpredict import cli
    from hitpredict.config import load_config

    lake.append("catalogue", catalogue_df(spark, range(0, 10)))
    dead = _killed_write(lake, range(100, 110), age_hours=3)
    config = load_config(None, [f"lake.root={lake.config.root}"], environ={})
    args = cli.build_parser().parse_args(["tables", "--vacuum", "--retain-hours", "2"])
    assert cli.cmd_tables(config, args, spark=spark) == 0
    out = capsys.readouterr().out
    assert "catalogue: vacuum deleted 2 file(s)" in out
    assert not dead & parquet_files(lake, "catalogue")
    assert track_ids(lake) == Counter(f"t{i:05d}" for i in range(10))
    with pytest.raises(SystemExit, match="needs --vacuum"):
        cli.cmd_tables(config, cli.build_parser().parse_args(["tables", "--retain-hours", "2"]), spark=spark)


def test_vacuum_keeps_files_younger_than_the_retention(spark, lake):
    lake.append("catalogue", catalogue_df(spark, range(0, 10)))
    fresh = _killed_write(lake, range(100, 110), age_hours=0)
    assert lake.vacuum("catalogue", retain_hours=1) == 0
    assert fresh <= parquet_files(lake, "catalogue")
    assert lake.vacuum("features") is None


@pytest.mark.slow
def test_two_fetch_previews_runs_at_once_write_every_track_once(spark, tmp_path, mp3):
    """A scheduled fetch_previews overlapping a slow one (two driver processes, one lake)."""
    from hitpredict.config import load_config
    from hitpredict.stages import ingest_catalogue
    from hitpredict.preview_server import PreviewServer

    n = 4
    root = tmp_path / "lakehouse"
    with PreviewServer(files={f"{i}.mp3": mp3 for i in range(n)}, latency_s=2.0) as server:
        csv_path = tmp_path / "cat.csv"
        csv_path.write_text("track_id,preview_url\n" + "".join(f"t{i},{server.url(f'{i}.mp3')}\n" for i in range(n)))
        config = load_config(None, [f"lake.root={root}"], environ={})
        lake = DeltaRsLake(config.lake, spark)
        ingest_catalogue.run(config, spark, lake, str(csv_path))
        args = ["--set", f"lake.root={root}", "--set", "spark.master=local[1]", "--set", "spark.driver_memory=1g",
                "--set", "fetch.allow_hosts=[127.0.0.1]", "--set", "fetch.max_concurrency=1",
                "--set", "fetch.per_host_concurrency=1", "--set", "fetch.read_timeout_s=20",
                "--set", "fetch.total_timeout_s=60"]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        procs = [subprocess.Popen([sys.executable, "-m", "hitpredict.cli", "fetch_previews", *args], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        outputs = [p.communicate(timeout=400)[0] for p in procs]
        for proc, out in zip(procs, outputs):
            assert proc.returncode == 0, out[-3000:]
        hits = dict(server.hits)
    # Both runs fetched every track (they overlapped) ...
    assert all(hits.get(f"{i}.mp3", 0) >= 2 for i in range(n)), (hits, outputs)
    # ... and previews holds each track once, its audio intact.
    previews = lake.read_arrow("previews").to_pylist()
    assert Counter(r["track_id"] for r in previews) == Counter(f"t{i}" for i in range(n))
    assert all(r["status"] == "ok" and r["audio"] == mp3 for r in previews)
