"""extract_features vs the hip-hop study's reference loop: clips per CPU-second.

Both sides process the same 200 generated 30 s MP3s, at 44.1 kHz stereo like the
previews Deezer and iTunes serve. The reference loop is the study's
(``librosa.load(path, duration=30)``, ``librosa.feature.melspectrogram``,
``librosa.power_to_db``); hitpredict's side is the extract_features path per clip
(decode, downmix, resample, centre window, log-mel and summary vector), single-threaded
as each Spark task runs it, in the task's child process (``features.decode_in_child``;
its CPU time counts). Each side runs in a fresh process of its own (so process-wide
settings of one cannot help the other), twice, alternating; the better of the two runs
of each side counts. CPU time is process time (all threads). Then the whole Spark job's
clips per second on local[2] (ingest -> fetch from disk -> extract_features).

    .venv/bin/python bench/features.py [--clips 200]

Last line: ``ratio: <hitpredict clips per CPU-second over the reference loop's>``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()   # before TensorFlow loads, here and in the Spark workers this process starts

from hitpredict.audio_params import AudioParams  # noqa: E402
from hitpredict.config import load_config  # noqa: E402
from hitpredict.stages.extract_features import FeatureTask  # noqa: E402
from hitpredict.synth.catalogue import ensure_sample_catalogue  # noqa: E402


def reference_loop(paths: list[str]) -> float:
    """The study's loop; returns CPU seconds."""
    import librosa

    started = time.process_time()
    for path in paths:
        y, sr = librosa.load(path, duration=30)
        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr))
    return time.process_time() - started


def hitpredict_path(paths: list[str], params: AudioParams) -> float:
    """extract_features' per-clip work as a Spark task runs it (``FeatureTask.rows``: decoding and
    the mel front end in the task's child process); returns CPU seconds of this process and the child."""
    import resource

    from threadpoolctl import threadpool_limits

    from hitpredict.features import keep_freed_memory

    def cpu_with_children() -> float:
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + reaped.ru_utime + reaped.ru_stime

    def items():
        for path in paths:
            with open(path, "rb") as handle:
                yield path, None, handle.read()

    keep_freed_memory()  # as FeatureTask does in each Spark worker
    started = cpu_with_children()
    with threadpool_limits(1):
        for row in FeatureTask(params, 5.0).rows(items()):
            if row["status"] != "ok":
                raise RuntimeError(f"{row['track_id']}: {row['error_kind']} {row['error_detail']}")
    # The child has exited and been reaped here: its CPU time is in RUSAGE_CHILDREN.
    return cpu_with_children() - started


def spark_job(audio_dir: str, clips: int) -> float:
    """Clips per second of ingest -> fetch (local files) -> extract_features on local[2]."""
    from hitpredict.lake import open_lake
    from hitpredict.spark import get_spark
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue

    work = tempfile.mkdtemp(prefix="hitpredict-bench-features-")
    config = load_config("conf/local.yaml", [f"lake.root={work}/lakehouse", "spark.master=local[2]"])
    spark = get_spark(config.spark)
    try:
        lake = open_lake(config.lake, spark)
        ingest_catalogue.run(config, spark, lake, audio_dir)
        fetch_previews.run(config, spark, lake)
        report = extract_features.run(config, spark, lake)
        if report.ok != clips:
            raise RuntimeError(f"extract_features: {report.ok} ok of {clips}: {report.failed}")
        return report.ok / report.seconds
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_side(side: str, paths: list[str]) -> float:
    """CPU seconds of one side over ``paths``, measured in a fresh Python process."""
    out = subprocess.run(
        [sys.executable, __file__, "--side", side, "--paths", json.dumps(paths)],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--side", choices=["reference", "hitpredict"], help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.side:  # child process: warm up on two clips, then measure all of them
        paths = json.loads(args.paths)
        measure = reference_loop if args.side == "reference" else lambda p: hitpredict_path(p, AudioParams())
        measure(paths[:2])
        print(measure(paths))
        return

    sample = ensure_sample_catalogue("data/bench/features", args.clips, max(1, args.clips // 10), seed=202,
                                     sample_rate=44100, channels=2)
    paths = sorted(str(sample.audio_dir / r.audio_file) for r in sample.rows)
    ref_runs, our_runs = [], []
    for _ in range(2):
        ref_runs.append(run_side("reference", paths))
        our_runs.append(run_side("hitpredict", paths))
    ref_cpu, ours_cpu = min(ref_runs), min(our_runs)
    job_rate = spark_job(str(sample.audio_dir), len(paths))

    print(f"clips: {len(paths)} x 30 s MP3, 44.1 kHz stereo")
    print(f"reference loop (librosa.load + melspectrogram + power_to_db): {ref_cpu / len(paths) * 1000:6.1f} ms CPU/clip"
          f"  {len(paths) / ref_cpu:6.2f} clips/CPU-s  (runs: {', '.join(f'{r:.1f}' for r in ref_runs)} s)")
    print(f"hitpredict extract_features path:                           {ours_cpu / len(paths) * 1000:6.1f} ms CPU/clip"
          f"  {len(paths) / ours_cpu:6.2f} clips/CPU-s  (runs: {', '.join(f'{r:.1f}' for r in our_runs)} s)")
    print(f"whole Spark job (ingest, fetch from disk, extract_features) on local[2]: {job_rate:.1f} clips/s")
    print(f"ratio: {ref_cpu / ours_cpu:.2f}")


if __name__ == "__main__":
    main()
