"""fetch_previews vs a sequential requests.get loop: previews per second.

Both sides download the same 500 generated previews from the loopback preview server
(its own process) with 100 ms of added latency per response. hitpredict's side is the
whole fetch_previews stage on local[2] (read the catalogue, fan out, write and commit to
Delta), best of three runs on fresh lakes; the other side is the loop the original
studies ran.

    .venv/bin/python bench/fetch.py [--tracks 500] [--latency 0.1]

Last line: ``ratio: <fetch_previews previews/s over the sequential loop's>``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()  # before anything imports TensorFlow (Spark workers inherit the environment)

import requests  # noqa: E402

from hitpredict.config import load_config  # noqa: E402
from hitpredict.lake import open_lake  # noqa: E402
from hitpredict.spark import get_spark  # noqa: E402
from hitpredict.stages import fetch_previews, ingest_catalogue  # noqa: E402
from hitpredict.synth.catalogue import ensure_sample_catalogue, write_catalogue_csv  # noqa: E402


@contextlib.contextmanager
def preview_server_process(directory: str, latency: float):
    """The loopback preview server in a process of its own (a CDN is not in the Spark driver)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hitpredict.preview_server", str(directory), "--latency", str(latency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("serving "):
            raise RuntimeError(f"preview server did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def main() -> None:
    """Run the benchmark (module docstring) and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--audio-dir", default="data/bench/previews")
    parser.add_argument("--repeats", type=int, default=3, help="stage runs, each on a fresh lake")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sample = ensure_sample_catalogue(args.audio_dir, args.tracks, max(1, args.tracks // 10), seed=101)
    work = tempfile.mkdtemp(prefix="hitpredict-bench-fetch-")
    config = load_config("conf/local.yaml", [
        "spark.master=local[2]", "fetch.allow_hosts=[127.0.0.1]",
        "fetch.max_concurrency=128", "fetch.per_host_concurrency=128", "fetch.commit_every=1000",
    ])
    spark = get_spark(config.spark)
    stage_runs: list[float] = []
    try:
        with preview_server_process(sample.audio_dir, args.latency) as base_url:
            csv_path = write_catalogue_csv(sample.rows, f"{work}/catalogue.csv", sample.audio_dir,
                                           preview_base_url=base_url, include_audio_uri=False)
            # The stage runs right after ingest, as in the pipeline (same session, same
            # workers), on a fresh lake each time; the best of --repeats runs counts.
            for run in range(args.repeats):
                run_config = config.model_copy(update={"lake": config.lake.model_copy(
                    update={"root": f"{work}/lakehouse-{run}"})})
                lake = open_lake(run_config.lake, spark)
                ingest_catalogue.run(run_config, spark, lake, str(csv_path))
                started = time.monotonic()
                report = fetch_previews.run(run_config, spark, lake)
                stage_runs.append(time.monotonic() - started)
                if report.ok != len(sample.rows):
                    sys.exit(f"fetch_previews fetched {report.ok} of {len(sample.rows)}: {report.failed}")

            urls = [f"{base_url}/{r.audio_file}" for r in sample.rows]
            started = time.monotonic()
            got = 0
            for url in urls:
                reply = requests.get(url, timeout=30)
                reply.raise_for_status()
                got += len(reply.content)
            loop_seconds = time.monotonic() - started
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    stage_seconds = min(stage_runs)
    loop_rate = len(urls) / loop_seconds
    stage_rate = len(urls) / stage_seconds
    print(f"previews: {len(urls)}, {got / len(urls) / 1024:.0f} KiB each, {args.latency * 1000:.0f} ms latency")
    print(f"sequential requests.get loop: {loop_seconds:7.2f} s  {loop_rate:8.1f} previews/s")
    print(f"fetch_previews (local[2]):    {stage_seconds:7.2f} s  {stage_rate:8.1f} previews/s"
          f"  (best of runs: {', '.join(f'{t:.2f}' for t in stage_runs)} s)")
    print(f"ratio: {stage_rate / loop_rate:.2f}")


if __name__ == "__main__":
    main()
