"""Peak RSS of Spark's Python workers during fetch_previews: 1,000 vs 5,000 tracks.

A fetch task holds at most ``2 x fetch.max_concurrency`` downloads and one output batch
at a time and closes a Parquet file every ``lake.bytes_per_file`` bytes, so a worker's
memory must not grow with the number of tracks, even in a single commit chunk (each run
here commits all its tracks at once). Both runs fetch generated previews from the loopback server with the
same config; a sampler thread records the largest RSS of any ``pyspark.daemon`` worker.

    .venv/bin/python bench/memory.py [--small 1000] [--large 5000]

Last line: ``ratio: <peak RSS at --large over peak RSS at --small>`` (flat is 1.0; the
target is at most 1.2).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()  # before anything imports TensorFlow (Spark workers inherit the environment)

import psutil  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch import preview_server_process  # noqa: E402

from hitpredict.config import load_config  # noqa: E402
from hitpredict.lake import open_lake  # noqa: E402
from hitpredict.spark import get_spark  # noqa: E402
from hitpredict.stages import fetch_previews, ingest_catalogue  # noqa: E402
from hitpredict.synth.catalogue import ensure_sample_catalogue  # noqa: E402


class WorkerPeak:
    """Samples the RSS of every Spark Python worker under this process every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    if "pyspark" in " ".join(proc.cmdline()):
                        self.peak = max(self.peak, proc.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            time.sleep(0.02)

    def __enter__(self) -> "WorkerPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_for(tracks: int, audio_dir: str, base_url: str, names: list[str]) -> tuple[int, float]:
    """Peak worker RSS (bytes) and seconds for a fresh fetch_previews over ``tracks`` tracks."""
    work = tempfile.mkdtemp(prefix="hitpredict-bench-memory-")
    config = load_config("conf/local.yaml", [
        f"lake.root={work}/lakehouse", "spark.master=local[2]", "fetch.allow_hosts=[127.0.0.1]",
        "fetch.max_concurrency=32", "fetch.per_host_concurrency=32", f"fetch.commit_every={tracks}",
    ])
    spark = get_spark(config.spark)
    try:
        lake = open_lake(config.lake, spark)
        csv_path = f"{work}/catalogue.csv"
        with open(csv_path, "w") as handle:
            handle.write("track_id,preview_url\n")
            for i in range(tracks):
                # A query string makes each URL distinct (the server ignores it): no duplicates.
                handle.write(f"m{i:06d},{base_url}/{names[i % len(names)]}?copy={i}\n")
        ingest_catalogue.run(config, spark, lake, csv_path)
        with WorkerPeak() as sampler:
            report = fetch_previews.run(config, spark, lake)
        if report.ok != tracks:
            raise RuntimeError(f"fetched {report.ok} of {tracks}: {report.failed}")
        return sampler.peak, report.seconds
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Run the benchmark (module docstring) and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sample = ensure_sample_catalogue("data/bench/previews", 500, 50, seed=101)
    names = [r.audio_file for r in sample.rows]
    with preview_server_process(str(sample.audio_dir), 0.0) as base_url:
        small, small_s = peak_for(args.small, str(sample.audio_dir), base_url, names)
        large, large_s = peak_for(args.large, str(sample.audio_dir), base_url, names)
    mib = 1024 * 1024
    print(f"fetch_previews, {args.small:>5} tracks: peak worker RSS {small / mib:7.1f} MiB ({small_s:.1f} s)")
    print(f"fetch_previews, {args.large:>5} tracks: peak worker RSS {large / mib:7.1f} MiB ({large_s:.1f} s)")
    print(f"ratio: {large / small:.3f}")


if __name__ == "__main__":
    main()
