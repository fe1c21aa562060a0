"""One of two processes appending overlapping keys to one delta-rs lake at the same time (no Spark).

    python tests/lake_race_worker.py LAKE_ROOT NAME OTHER ROUNDS SYNC_DIR

ROUNDS times: writes the catalogue rows of 30 keys shared with process OTHER (shifted by 10 each
round) and 5 of its own, as the executors would (``ParquetTaskWriter``); waits in SYNC_DIR until
OTHER has written its files of the round too, then commits them with the lake's driver-side commit,
so both commit at the same moment (the first round races to create the table). Prints one line per
commit, ``NAME ROUND VERSION``, and logs each lost commit race on stderr.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
import uuid

import pyarrow as pa
from deltalake.transaction import AddAction

from hitpredict.config import LakeConfig
from hitpredict.lake import DeltaRsLake, ParquetTaskWriter
from hitpredict.schemas import arrow_schema

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)


def rows(name: str, number: int) -> pa.RecordBatch:
    ids = [f"t{i:05d}" for i in range(10 * number, 10 * number + 30)] + [f"{name}{number}-{i}" for i in range(5)]
    return pa.RecordBatch.from_pylist([
        {"track_id": track_id, "source": name, "title": f"Song {track_id}", "ingested_at": NOW} for track_id in ids
    ], schema=arrow_schema("catalogue"))


def wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other process never wrote {path}")
        time.sleep(0.001)


def main() -> None:
    root, name, other, rounds, sync = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    logging.basicConfig(level=logging.INFO, format=f"{name} %(message)s")  # the retries, on stderr
    lake = DeltaRsLake(LakeConfig(root=root, commit_retries=50), spark=None)  # type: ignore[arg-type]
    location = lake.location("catalogue")
    os.makedirs(location, exist_ok=True)
    for number in range(rounds):
        write_id = uuid.uuid4().hex
        writer = ParquetTaskWriter({"catalogue": location}, None, write_id, rows_per_file=10)
        files = pa.Table.from_batches(list(writer(iter([rows(name, number)])))).to_pylist()
        adds = [AddAction(f["path"], f["size"], {}, f["modification_time"], True, f["stats"]) for f in files]
        open(os.path.join(sync, f"{name}-{number}"), "w").close()
        wait_for(os.path.join(sync, f"{other}-{number}"))
        version, _ = lake._commit("catalogue", write_id, adds, {"hitpredict.stage": f"race-{name}"})
        print(name, number, version, flush=True)


if __name__ == "__main__":
    main()
