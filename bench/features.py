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

The pretrained embedding (musicnn, config ``embedding``) on the same clips, each side once in a fresh
process, the model loaded once before timing: hitpredict's path (decode the window, our 16 kHz mel,
the network in its own graph, one thread) and the stock extractor's (``librosa.load`` +
``musicnn.extractor.batch_data``, the graph built once as ``extractor()`` builds it, all patches of a
clip in one run, one thread), with the mean cosine similarity of the two embeddings (the front ends
differ: our decoder's window and soxr from 22,050 Hz against librosa.load's).

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


def embedding_ours(paths: list[str], out: str, max_patches: int | None = None) -> tuple[float, float]:
    """hitpredict's embedding path per clip (``max_patches``: the config's setting of that name); saves the
    embeddings to ``out`` (.npy); returns CPU seconds: in all, and the embedding's own part (musicnn's mel and
    the network: what extract_features adds, since it decodes the window for the mel path anyway)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from hitpredict.audio import decode_clip
    from hitpredict.embeddings import Embedder, musicnn_input

    params, cfg = AudioParams(), load_config("conf/local.yaml").embedding
    embedder = Embedder.shared(cfg.model, cfg.layer, cfg.threads, cfg.batch_clips, max_patches)
    vectors, own = [], 0.0
    with threadpool_limits(1):
        started = time.process_time()
        for path in paths:
            with open(path, "rb") as handle:
                clip = decode_clip(handle.read(), params.sample_rate, params.clip_seconds, 5.0)
            decoded = time.process_time()
            vectors.append(embedder.embed([musicnn_input(clip.samples, clip.sample_rate)])[0].embedding)
            own += time.process_time() - decoded
        cpu = time.process_time() - started
    np.save(out, np.stack(vectors))
    return cpu, own


def embedding_stock(paths: list[str], out: str) -> tuple[float, float]:
    """The stock extractor's path (librosa.load, its batch_data, its graph built once, one thread); the
    configured layer's (``embedding.layer``) mean per clip saved to ``out``; returns CPU seconds."""
    import os

    import musicnn.extractor as extractor  # graph mode for this whole (bench) process
    import numpy as np
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    embedding = load_config("conf/local.yaml").embedding
    model = embedding.model
    tf.compat.v1.reset_default_graph()   # as extractor() does: a second call builds a fresh graph
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        layers = extractor.models.define_model(x, is_training, model, 50)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    sess = tf.compat.v1.Session(config=config)
    tf.compat.v1.train.Saver().restore(sess, os.path.dirname(extractor.__file__) + "/" + model + "/")
    # define_model's outputs: (taggram, timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool, penultimate);
    # the config's layer, so that the two embeddings compare (penultimate where the layer is not a pooled one).
    layer = {"mean_pool": 6, "max_pool": 7, "penultimate": 8}.get(embedding.layer, 8)
    vectors = []
    with threadpool_limits(1):
        started = time.process_time()
        for path in paths:
            batch, _ = extractor.batch_data(path, 187, 187)
            vectors.append(sess.run(layers[layer], {x: batch, is_training: False}).mean(axis=0))
        cpu = time.process_time() - started
    np.save(out, np.stack(vectors))
    return cpu, cpu


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
    parser.add_argument("--side", choices=["reference", "hitpredict", "embed-ours", "embed-ours-3", "embed-stock"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.side in ("embed-ours", "embed-ours-3", "embed-stock"):  # child: model loaded and warmed, then timed
        paths = json.loads(args.paths)
        measure = {"embed-ours": embedding_ours, "embed-stock": embedding_stock,
                   "embed-ours-3": lambda p, o: embedding_ours(p, o, max_patches=3)}[args.side]
        measure(paths[:2], args.out)
        print(*measure(paths, args.out))
        return
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
    embed_rows = []
    if load_config("conf/local.yaml").embedding.active:
        import numpy as np

        work = tempfile.mkdtemp(prefix="hitpredict-bench-embed-")
        cpu = {}
        for side in ("embed-ours", "embed-stock", "embed-ours-3"):
            out = subprocess.run([sys.executable, __file__, "--side", side, "--paths", json.dumps(paths),
                                  "--out", f"{work}/{side}.npy"], check=True, capture_output=True, text=True).stdout
            cpu[side], cpu[side + "/own"] = map(float, out.strip().splitlines()[-1].split())
        ours, stock = np.load(f"{work}/embed-ours.npy"), np.load(f"{work}/embed-stock.npy")
        sampled = np.load(f"{work}/embed-ours-3.npy")

        def cosine_mean(a, b) -> float:
            a, b = a.astype(np.float64), b.astype(np.float64)
            return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                                                          + 1e-12)))

        cosine, cosine_sampled = cosine_mean(ours, stock), cosine_mean(sampled, ours)
        shutil.rmtree(work, ignore_errors=True)
        embedding = load_config("conf/local.yaml").embedding
        name = embedding.name
        compared = embedding.layer if embedding.layer in ("mean_pool", "max_pool") else "penultimate"   # as stock
        embed_rows = [
            f"embedding {name}, hitpredict path (our decode + 16 kHz mel, own graph, 1 thread): "
            f"{cpu['embed-ours'] / len(paths):.3f} CPU-s/clip; without the decode the mel path shares "
            f"(what extract_features adds): {cpu['embed-ours/own'] / len(paths):.3f} CPU-s/clip",
            f"embedding, stock musicnn.extractor path (librosa.load + batch_data, loaded once, batched, 1 thread): "
            f"{cpu['embed-stock'] / len(paths):.3f} CPU-s/clip",
            f"embedding vs mel path: its own part is {cpu['embed-ours/own'] / ours_cpu:.1f}x the mel path's CPU; "
            f"mean cosine similarity ours vs stock ({compared}): {cosine:.5f}, max |difference| "
            f"{float(np.abs(ours - stock).max()):.2e}",
            f"embedding with embedding.max_patches=3 (3 of the 10 patches): {cpu['embed-ours-3'] / len(paths):.3f} "
            f"CPU-s/clip, own part {cpu['embed-ours-3/own'] / len(paths):.3f}; mean cosine similarity to all 10 "
            f"patches' mean: {cosine_sampled:.5f}",
        ]

    print(f"clips: {len(paths)} x 30 s MP3, 44.1 kHz stereo")
    print(f"reference loop (librosa.load + melspectrogram + power_to_db): {ref_cpu / len(paths) * 1000:6.1f} ms CPU/clip"
          f"  {len(paths) / ref_cpu:6.2f} clips/CPU-s  (runs: {', '.join(f'{r:.1f}' for r in ref_runs)} s)")
    print(f"hitpredict extract_features path:                           {ours_cpu / len(paths) * 1000:6.1f} ms CPU/clip"
          f"  {len(paths) / ours_cpu:6.2f} clips/CPU-s  (runs: {', '.join(f'{r:.1f}' for r in our_runs)} s)")
    print(f"whole Spark job (ingest, fetch from disk, extract_features) on local[2]: {job_rate:.1f} clips/s")
    for line in embed_rows:
        print(line)
    print(f"ratio: {ref_cpu / ours_cpu:.2f}")


if __name__ == "__main__":
    main()
