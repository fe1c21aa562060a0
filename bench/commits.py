"""The driver's time per commit to a keyed Delta table as the table grows (``delta-rs`` engine).

A stage commits in chunks (``fetch.commit_every`` and so on). For each commit to a keyed table the driver must know
every key already in it. This script appends ``--commits`` writes of ``--rows`` new ``previews`` rows each (one
Parquet file per write, as an executor task writes it) through ``DeltaRsLake._commit``, the driver's whole commit
(loading the table, the key check, the transaction, finding the write in the log), on a fresh lake under
``--work``. At every tenth of the run it also times the reference: reading every key of the table (the table
already loaded), as each commit did before ``KnownKeys``.

Loading a table replays the JSON commits since its last checkpoint, which delta-rs writes every 100 versions
(``delta.checkpointInterval``), so a commit's time rises over each 100 commits and drops at the checkpoint. The
ratio therefore compares whole checkpoint intervals.

    .venv/bin/python bench/commits.py [--commits 300] [--rows 500] [--work data/bench-commits]

Prints, per tenth: rows already in, the mean commit time over that tenth and the reference's read. Last line:
``ratio: <mean commit time over the last 100 commits over that of the first 100>`` (1: a commit costs the same
however big the table; the reference grows with it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from hitpredict.config import LakeConfig
from hitpredict.lake.delta_rs import DeltaRsLake, key_values
from hitpredict.lake.files import file_stats, write_data_file
from hitpredict.schemas import arrow_schema, table_key

TABLE = "previews"
#: delta-rs writes a checkpoint every this many versions (the table property's default).
CHECKPOINT_INTERVAL = 100


def previews_rows(n: int) -> pa.Table:
    """``n`` rows of the ``previews`` schema with fresh random ``track_id``s (required columns filled, the rest
    null)."""
    schema = arrow_schema(TABLE)
    columns = {}
    for field in schema:
        if field.name == "track_id":
            columns[field.name] = pa.array([uuid.uuid4().hex for _ in range(n)], field.type)
        elif field.nullable:
            columns[field.name] = pa.nulls(n, field.type)
        elif pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array([0] * n, pa.int64()).cast(field.type)
        elif pa.types.is_boolean(field.type):
            columns[field.name] = pa.array([True] * n)
        elif pa.types.is_string(field.type) or pa.types.is_binary(field.type):
            columns[field.name] = pa.array(["x"] * n).cast(field.type)
        else:
            columns[field.name] = pa.array([0] * n).cast(field.type)
    return pa.table(columns, schema=schema)


def read_every_key(location: str) -> float:
    """Seconds to read every key of the table at ``location``, once loaded: what each commit did before
    ``KnownKeys``."""
    from deltalake import DeltaTable

    table = DeltaTable(location)
    started = time.perf_counter()
    key_values(TABLE, table.to_pyarrow_dataset().to_table(columns=list(table_key(TABLE))))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--rows", type=int, default=500, help="new rows per commit")
    parser.add_argument("--work", default="data/bench-commits", help="scratch folder (recreated)")
    args = parser.parse_args()
    if args.commits < 2 * CHECKPOINT_INTERVAL:
        raise SystemExit(f"--commits must be at least {2 * CHECKPOINT_INTERVAL} (two checkpoint intervals)")
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    lake = DeltaRsLake(LakeConfig(engine="delta-rs", root=str(work / "lake")), None)   # type: ignore[arg-type]
    location = lake.location(TABLE)
    Path(location).mkdir(parents=True)
    fs, base = pafs.FileSystem.from_uri(location)
    from deltalake.transaction import AddAction

    tenth = args.commits // 10
    print(f"{args.commits} commits of {args.rows} new {TABLE} rows each (one file per commit), delta-rs engine")
    print(f"{'rows already in':>16}{'commit ms (mean of tenth)':>28}{'reading every key ms':>22}")
    times: list[float] = []
    for i in range(args.commits):
        data = previews_rows(args.rows)
        name = f"part-{uuid.uuid4().hex}.snappy.parquet"
        size = write_data_file(fs, f"{base}/{name}", data)
        add = AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps(file_stats(data)))
        started = time.perf_counter()
        lake._commit(TABLE, uuid.uuid4().hex, [add], None)
        times.append(time.perf_counter() - started)
        if (i + 1) % tenth == 0:
            print(f"{(i + 1 - tenth) * args.rows:>16,}{statistics.mean(times[-tenth:]) * 1e3:>28.1f}"
                  f"{read_every_key(location) * 1e3:>22.1f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    first, last = times[:CHECKPOINT_INTERVAL], times[-CHECKPOINT_INTERVAL:]
    print(f"mean commit: first {CHECKPOINT_INTERVAL} commits {statistics.mean(first) * 1e3:.1f} ms, last "
          f"{CHECKPOINT_INTERVAL} {statistics.mean(last) * 1e3:.1f} ms; total {sum(times):.1f} s")
    print(f"ratio: {statistics.mean(last) / statistics.mean(first):.2f}")


if __name__ == "__main__":
    main()
