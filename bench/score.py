"""score_catalogue vs a per-request loop: tracks scored per CPU-second.

Inputs: generated 30 s MP3 previews (44.1 kHz stereo, as Deezer and iTunes serve them)
in a folder, and one model bundle of the configured family (``train.family``, the demo's
CRNN) at the full 128 x 1292 input, built as ``train_model`` builds it: trained on crops of
``train.augment.crop_frames`` frames, it predicts a clip from windows of that length half a
window apart; its weights are freshly initialised because speed does not depend on their values.

- **job from stored features**: ``score_catalogue`` over a lake whose features were
  extracted beforehand (not timed), with the default settings: popularity, percentile
  and the occlusion explanation of every 3 s segment; then again with ``score.explain``
  off, to show what the explanations cost.
- **job from raw MP3**: ``score-folder`` on a fresh lake: ingest the folder -> read the
  files -> extract features -> score (with explanations), Spark local[2].
- **per-request loop** (what the Mando-pop API did), in a fresh process: for each file,
  load the model from disk, ``librosa.load`` + ``melspectrogram`` + ``power_to_db``,
  normalise, predict one track.

CPU time is the busy time of this process and every process under it over each run
(``/proc/<pid>/stat``: the driver, the JVM, Spark's Python workers and the children they
reaped for the job; the loop's process for the loop), so nothing a side spends is left out
and nothing another program on the machine spends is counted in. The job's one-time start-up
(Python workers importing TensorFlow, loading the model, tracing its graphs) is measured
by a 4-track warm-up and printed on its own: a catalogue run pays it once, not per track.
The loop's model loads are its per-request cost and count.

    .venv/bin/python bench/score.py [--tracks 96] [--loop-tracks 24]

Last line: ``ratio: <job's raw-MP3 tracks per CPU-second over the per-request loop's>``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from hitpredict.keras_compat import ensure_keras2  # noqa: E402

ensure_keras2()   # before TensorFlow loads, here and in the processes this one starts

from hitpredict.audio_params import AudioParams  # noqa: E402
from hitpredict.config import ModelRef, load_config  # noqa: E402
from hitpredict.synth.catalogue import ensure_sample_catalogue  # noqa: E402

CORE_HOURS_FOR = 1_000_000


def busy_cpu_seconds() -> float:
    """CPU seconds all cores of this machine have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: "psutil.Process | None" = None) -> float:
    """CPU seconds (user + system) of ``root`` (default: this process) and its live descendants, each with
    the CPU of the children it reaped (``/proc/<pid>/stat`` utime, stime, cutime, cstime, through psutil)."""
    import psutil

    root = root or psutil.Process()
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):   # the process ended meanwhile
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def make_bundle(directory: Path, family: str, audio: dict, crop_frames: int | None = None) -> Path:
    """A model bundle of ``family`` at the full input size, weights freshly initialised. ``crop_frames``
    (``train.augment.crop_frames``): a spectrogram model trained on crops of that many frames predicts a
    clip from windows of that length half a window apart, as ``train_model`` builds it; None: one pass
    over the whole clip."""
    from hitpredict.features import SUMMARY_SIZE
    from hitpredict.models import ModelSpec, build_model, input_names
    from hitpredict.train.bundle import ModelBundle
    from hitpredict.train.plan import Normalisation

    ensure_keras2()
    params = AudioParams.from_dict(audio)
    window = crop_frames if crop_frames and crop_frames < params.frames and "mel" in input_names(family) else None
    spec = ModelSpec("binary", n_mels=params.n_mels, frames=params.frames, summary_size=SUMMARY_SIZE, n_classes=2,
                     seed=1, window_frames=window, window_hop=max(1, window // 2) if window else None)
    norm = Normalisation([-40.0] * params.n_mels, [15.0] * params.n_mels, [0.0] * SUMMARY_SIZE, [1.0] * SUMMARY_SIZE)
    bundle = ModelBundle(family=family, spec=spec, target="popular", audio=audio, norm=norm,
                         inputs=input_names(family), dataset_id="bench", threshold=39.0,
                         label_names=["not_popular", "popular"], reference=[i / 100 for i in range(101)],
                         model=build_model(family, spec))
    return bundle.save(directory)


LOOP = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import librosa
    from hitpredict.keras_compat import ensure_keras2
    ensure_keras2()
    from hitpredict.train.bundle import ModelBundle

    bundle_dir, paths = sys.argv[1], json.loads(sys.argv[2])
    scores = []
    for path in paths:                       # one request per file
        bundle = ModelBundle.load(bundle_dir)  # a freshly loaded model per request
        y, sr = librosa.load(path, sr=bundle.audio["sample_rate"], duration=bundle.audio["clip_seconds"])
        mel = librosa.power_to_db(librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=bundle.audio["n_fft"], hop_length=bundle.audio["hop_length"],
            n_mels=bundle.audio["n_mels"]), ref=1.0, top_db=80.0)
        frames = bundle.spec.frames
        mel = np.pad(mel, ((0, 0), (0, max(0, frames - mel.shape[1]))))[:, :frames]
        mean = np.array(bundle.norm.mel_mean)[:, None]
        std = np.array(bundle.norm.mel_std)[:, None]
        x = ((mel - mean) / std).astype(np.float32)[None, :, :, None]
        scores.append(float(bundle.model.predict({"mel": x}, verbose=0)[0, 0]))
    print(json.dumps(scores))
''')


def per_request_loop(bundle_dir: Path, paths: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the loop in a fresh process, start-up included."""
    cpu, wall = tree_cpu_seconds(), time.monotonic()
    done = subprocess.run([sys.executable, "-c", LOOP, str(bundle_dir), json.dumps(paths)], capture_output=True,
                          text=True)
    cpu, wall = tree_cpu_seconds() - cpu, time.monotonic() - wall
    if done.returncode != 0:
        raise SystemExit(f"per-request loop failed: {done.stderr[-2000:]}")
    assert len(json.loads(done.stdout.strip().splitlines()[-1])) == len(paths)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=96, help="tracks the job scores")
    parser.add_argument("--loop-tracks", type=int, default=24, help="tracks the per-request loop scores")
    parser.add_argument("--work", default="data/bench-score", help="scratch folder (lakes are recreated)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from hitpredict.lake import open_lake
    from hitpredict.spark import get_spark
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue, score_catalogue, score_folder

    work = Path(args.work).resolve()
    sample = ensure_sample_catalogue(work / "sample", args.tracks, max(4, args.tracks // 8), seed=11, seconds=30,
                                     sample_rate=44100, channels=2)
    folder = work / "previews"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for row in sample.rows:
        os.link(sample.audio_dir / row.audio_file, folder / row.audio_file)
    base = load_config("conf/local.yaml", [f"lake.root={work / 'lake'}", "spark.conf.spark.ui.enabled=false"],
                       environ={})
    family = base.train.family
    bundle_dir = make_bundle(Path(tempfile.mkdtemp(prefix="hitpredict-bench-")) / "model", family,
                             base.audio.model_dump(mode="json"), crop_frames=base.train.augment.crop_frames)
    refs = [ModelRef(path=str(bundle_dir))]
    config = base.model_copy(update={"score": base.score.model_copy(update={"models": refs})})
    spark = get_spark(config.spark)
    cores = spark.sparkContext.defaultParallelism
    window = json.loads((bundle_dir / "bundle.json").read_text())["spec"].get("window_frames")
    print(f"{args.tracks} x 30 s MP3 previews (44.1 kHz stereo), model: {family} 128x1292"
          f"{f' from windows of {window} frames' if window else ''} ({bundle_dir}); Spark local[{cores}], "
          f"{os.cpu_count()} cores; CPU of this process tree only")

    # -- warm-up: the Spark session's Python workers start, import TensorFlow, load the model and
    # trace its graphs once; every later job reuses them (as a long scoring run does after its
    # first tasks). Measured and printed, not counted in the per-track rates.
    warm_folder = work / "warm-up"
    shutil.rmtree(warm_folder, ignore_errors=True)
    warm_folder.mkdir()
    for row in sample.rows[:4]:
        os.link(sample.audio_dir / row.audio_file, warm_folder / row.audio_file)
    warm_config = config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(work / "lake-warm")})})
    shutil.rmtree(work / "lake-warm", ignore_errors=True)
    cpu, wall = tree_cpu_seconds(), time.monotonic()
    score_folder.run(warm_config, spark, open_lake(warm_config.lake, spark), str(warm_folder))
    print(f"warm-up (worker start, TensorFlow import, model load and graph tracing, 4 tracks): "
          f"{tree_cpu_seconds() - cpu:.1f} CPU-s, {time.monotonic() - wall:.1f} s wall, once per Spark session")

    # -- job from stored features (features extracted first, not timed)
    results = {}
    for explain in (True, False):
        lake_root = work / f"lake-features-{explain}"
        shutil.rmtree(lake_root, ignore_errors=True)
        run_config = config.model_copy(update={
            "lake": config.lake.model_copy(update={"root": str(lake_root)}),
            "score": config.score.model_copy(update={"explain": explain}),
            "ingest": config.ingest.model_copy(update={"source": "folder"})})
        lake = open_lake(run_config.lake, spark)
        ingest_catalogue.run(run_config, spark, lake, str(folder))
        fetch_previews.run(run_config, spark, lake)
        extract_features.run(run_config, spark, lake)
        cpu, wall = tree_cpu_seconds(), time.monotonic()
        result = score_catalogue.run(run_config, spark, lake)
        cpu, wall = tree_cpu_seconds() - cpu, time.monotonic() - wall
        assert result.report.ok == args.tracks, result.report
        results[explain] = (cpu, wall)
        print(f"job from stored features, explanations {'on ' if explain else 'off'}: "
              f"{args.tracks / cpu:7.2f} tracks/CPU-s  ({cpu:.1f} CPU-s, {wall:.1f} s wall)")
    explain_cost = (results[True][0] - results[False][0]) / args.tracks * 1000

    # -- job from raw MP3: score-folder on a fresh lake
    raw_root = work / "lake-raw"
    shutil.rmtree(raw_root, ignore_errors=True)
    raw_config = config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(raw_root)})})
    cpu, wall = tree_cpu_seconds(), time.monotonic()
    scored = score_folder.run(raw_config, spark, open_lake(raw_config.lake, spark), str(folder))
    raw_cpu, raw_wall = tree_cpu_seconds() - cpu, time.monotonic() - wall
    assert scored.score.report.ok == args.tracks, scored.stages
    job_rate = args.tracks / raw_cpu
    print(f"job from raw MP3 (score-folder):            {job_rate:7.2f} tracks/CPU-s  ({raw_cpu:.1f} CPU-s, "
          f"{raw_wall:.1f} s wall)")
    spark.stop()

    # -- per-request loop, fresh process
    paths = [str(folder / r.audio_file) for r in sample.rows[: args.loop_tracks]]
    loop_cpu, loop_wall = per_request_loop(bundle_dir, paths)
    loop_rate = len(paths) / loop_cpu
    print(f"per-request loop (fresh model per file):    {loop_rate:7.2f} tracks/CPU-s  ({loop_cpu:.1f} CPU-s, "
          f"{loop_wall:.1f} s wall, {len(paths)} files)")
    from hitpredict.scoring.scorer import segment_bounds

    copies = len(segment_bounds(AudioParams.from_config(base.audio), config.score.segment_seconds))
    print(f"explanations ({copies} occluded copies per track, {family} trunk recomputed around each segment) "
          f"cost {explain_cost:.1f} ms CPU per track")
    for name, rate in (("job from stored features", args.tracks / results[True][0]), ("job from raw MP3", job_rate),
                       ("per-request loop", loop_rate)):
        print(f"projected for {CORE_HOURS_FOR:,} tracks, {name}: {CORE_HOURS_FOR / rate / 3600:,.0f} core-hours")
    print(f"ratio: {job_rate / loop_rate:.2f}")


if __name__ == "__main__":
    main()
