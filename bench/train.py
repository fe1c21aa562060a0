"""Training throughput: Petastorm-fed Horovod process vs the same model fed from memory.

The original studies loaded every spectrogram into one numpy array and called
``model.fit`` on it. hitpredict streams the examples joined with their features through Petastorm into
Horovod processes instead, decoding float16 bytes in the tf.data pipeline. This
measures training samples per second of:

- one Horovod process fed by Petastorm (train_model's own worker function);
- the same model, same inputs (decoded and normalised up front), fed from an in-memory
  numpy array in a fresh process with the same thread count;
- two Horovod processes fed by Petastorm (all processes together; on this 2-core
  machine they share the cores, so do not expect 2x here).

Each side trains ``--epochs`` epochs; the first (graph tracing, reader start-up) is
left out and the median of the rest counts. The examples are ``--rows`` random
128 x 1292 spectrograms (30 s previews), since content does not change the speed.

    .venv/bin/python bench/train.py [--rows 384] [--family cnn] [--epochs 4]

Last line: ``ratio: <Petastorm-fed samples/s over in-memory samples/s, one process each>``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()   # Keras 2 here and in the in-memory child this script starts


def in_memory(plan_path: str, examples_path: str, features_path: str) -> None:
    """The studies' way: every spectrogram in one array, ``model.fit(x, y)``. Prints samples/s."""
    import tensorflow as tf
    from deltalake import DeltaTable

    from hitpredict.models import build_model
    from hitpredict.models.heads import loss_and_metrics
    from hitpredict.train.inputs import model_inputs
    from hitpredict.train.worker import _Throughput

    plan = pickle.loads(Path(plan_path).read_bytes())
    tf.config.threading.set_intra_op_parallelism_threads(plan.threads_per_process)
    tf.config.threading.set_inter_op_parallelism_threads(plan.threads_per_process)
    table = DeltaTable(examples_path).to_pandas()
    features = DeltaTable(features_path).to_pandas()[["track_id", "mel", "summary"]]
    train = table[table["split"] == "train"].merge(features, on="track_id")   # as train_model joins them
    x = model_inputs(np.array(train["mel"].tolist(), dtype=object), np.stack(train["summary"]), plan.inputs,
                     plan.spec.n_mels, plan.spec.frames, plan.norm)
    x = {k: v.numpy() for k, v in x.items()}
    y = train["label"].to_numpy(dtype=np.float32)
    tf.random.set_seed(plan.seed)
    model = build_model(plan.family, plan.spec)
    loss, metrics = loss_and_metrics(plan.spec)
    model.compile(optimizer=tf.keras.optimizers.Adam(plan.learning_rate), loss=loss, metrics=metrics)
    throughput = _Throughput()
    model.fit(x, y, batch_size=plan.batch_size, epochs=plan.epochs, shuffle=True, callbacks=[throughput.callback],
              verbose=0)
    seconds = throughput.callback.seconds[1:] or throughput.callback.seconds
    print(json.dumps({"samples_per_s": len(y) / float(np.median(seconds)), "epoch_seconds": seconds}))


def write_examples(lake, rows: int, n_mels: int, frames: int, seed: int = 0) -> dict:
    """``rows`` random training examples (and a few validation/test rows), their tracks' features rows and
    their datasets row."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    now = dt.datetime.now(dt.timezone.utc)
    ds = "ds-bench"
    splits = ["train"] * rows + ["validation"] * 32 + ["test"] * 8
    chunk, features = [], []
    for i, split in enumerate(splits):
        chunk.append({"track_id": f"t{i:06d}", "primary_artist": f"a{i}", "audio_sha256": f"h{i}", "split": split,
                      "target": "popular", "label": float(i % 2), "label_name": None, "dataset_id": ds,
                      "created_at": now})
        features.append({"track_id": f"t{i:06d}", "audio_sha256": f"h{i}", "status": "ok", "error_kind": None,
                         "error_detail": None, "duration_s": 30.0,
                         "mel": rng.normal(-40, 12, (n_mels, frames)).astype(np.float16).tobytes(),
                         "mel_shape": [n_mels, frames], "summary": rng.normal(0, 1, 62).astype(np.float32).tolist(),
                         "audio_params": "{}", "extracted_at": now, "embedding": None, "tags": None,
                         "embedding_model": None})
        if len(chunk) == 128 or i == len(splits) - 1:
            lake.append("features", lake.frame("features", pd.DataFrame(features)))
            lake.append("examples", lake.frame("examples", pd.DataFrame(chunk)))
            chunk, features = [], []
    record = {"dataset_id": ds, "target": "popular", "threshold": 39.0, "label_names": ["not_popular", "popular"],
              "split_counts": "{}", "mel_mean": [-40.0] * n_mels, "mel_std": [12.0] * n_mels,
              "summary_mean": [0.0] * 62, "summary_std": [1.0] * 62, "embedding_mean": None, "embedding_std": None,
              "tags_mean": None, "tags_std": None, "embedding_model": None, "mel_shape": [n_mels, frames],
              "config": json.dumps({"audio": {}}), "created_at": now}
    lake.append("datasets", lake.frame("datasets", pd.DataFrame([record])))
    return record


def petastorm_rate(spark, lake, config, record, num_proc: int) -> tuple[float, object]:
    """Samples/s of ``num_proc`` Petastorm-fed Horovod processes, via train_model's own pieces."""
    from hitpredict.stages.train_model import (
        _local_threads, check_examples, make_plan, samples_per_second, train_on_processes, training_rows,
    )

    keys = check_examples(lake, record, num_proc)
    plan = make_plan(config, record, keys, num_proc, config.train.family, None, _local_threads(spark, num_proc))
    examples = training_rows(lake, record["dataset_id"])
    ranks = train_on_processes(spark, examples, plan, num_proc, config.train.petastorm_cache)
    return samples_per_second(ranks), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--in-memory", nargs=3, metavar=("PLAN", "EXAMPLES", "FEATURES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_memory:
        in_memory(*args.in_memory)
        return
    logging.basicConfig(level=logging.WARNING)
    from hitpredict.config import load_config
    from hitpredict.lake import open_lake
    from hitpredict.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="hitpredict-bench-train-"))
    config = load_config(None, [
        "spark.master=local[2]", f"lake.root={work / 'lakehouse'}", f"train.family={args.family}",
        f"train.epochs={args.epochs}", f"train.patience={args.epochs}", f"train.petastorm_cache={work / 'petastorm'}",
        "train.batch_size=16",
    ], environ={})
    spark = get_spark(config.spark)
    lake = open_lake(config.lake, spark)
    record = write_examples(lake, args.rows, 128, 1292)
    print(f"{args.rows} training examples of 128 x 1292 (30 s), family {args.family}, batch 16, "
          f"{args.epochs} epochs (first left out), {os.cpu_count()} cores")

    started = time.monotonic()
    one, plan = petastorm_rate(spark, lake, config, record, 1)
    print(f"Petastorm -> 1 Horovod process:   {one:7.1f} samples/s  ({time.monotonic() - started:.0f}s)")
    plan_path = work / "plan.pkl"
    plan_path.write_bytes(pickle.dumps(plan))
    started = time.monotonic()
    done = subprocess.run([sys.executable, __file__, "--in-memory", str(plan_path), lake.location("examples"),
                           lake.location("features")], capture_output=True, text=True, check=True)
    memory = json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"]
    print(f"in-memory numpy -> model.fit:     {memory:7.1f} samples/s  ({time.monotonic() - started:.0f}s)")
    started = time.monotonic()
    two, _ = petastorm_rate(spark, lake, config, record, 2)
    print(f"Petastorm -> 2 Horovod processes: {two:7.1f} samples/s  ({time.monotonic() - started:.0f}s, "
          f"both processes together on {os.cpu_count()} cores)")
    spark.stop()
    print(f"ratio: {one / memory:.3f}")


if __name__ == "__main__":
    main()
