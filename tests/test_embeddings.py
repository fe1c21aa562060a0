"""Pretrained music embeddings (musicnn): front end, equality with the stock graph, eager mode kept,
the features row (and its failures), the stage's child-process path, and an older lake's schema.

The model tests need musicnn (installed with ``--no-deps``); they are skipped, visibly, without it.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import features_row
from hitpredict.config import EmbeddingConfig
from hitpredict.embeddings import (
    PATCH_FRAMES, Embedder, log_compress, musicnn_input, musicnn_installed, patches,
)
from hitpredict.synth.music import TrackStyle, render

needs_musicnn = pytest.mark.skipif(not musicnn_installed(), reason="musicnn is not installed")


def _clip(seed: int, seconds: float = 30.0, rate: int = 22050) -> np.ndarray:
    return render(TrackStyle(seconds=seconds, seed=seed), rate)


def _wav(samples: np.ndarray, rate: int = 22050) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV")
    return out.getvalue()


def test_front_end_is_librosas_mel_at_16k_and_stock_batching():
    import librosa

    audio = _clip(1, seconds=30.0, rate=16000)
    ours = musicnn_input(audio, 16000)
    stock = librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, n_fft=512, n_mels=96).T
    assert ours.dtype == np.float16 and ours.shape == stock.shape == (1876, 96)
    np.testing.assert_allclose(ours.astype(np.float32), stock.astype(np.float16).astype(np.float32),
                               rtol=2e-3, atol=1e-6)
    batch = patches(log_compress(ours))
    assert batch.shape == (10, PATCH_FRAMES, 96) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[3], np.log10(10000 * ours[3 * 187:4 * 187].astype(np.float32) + 1))
    sampled = patches(log_compress(ours), max_patches=3)   # evenly spaced: the first, a middle, the last
    np.testing.assert_array_equal(sampled, batch[[0, 4, 9]])
    with pytest.raises(ValueError, match="shorter than one 187-frame patch"):
        patches(np.zeros((100, 96), np.float32))


def test_config_switch_and_layer_check():
    assert EmbeddingConfig(enabled=False).active is False
    assert EmbeddingConfig().active is musicnn_installed()   # the default: on when installed
    assert EmbeddingConfig(model="MTT_vgg", layer="pool5", max_patches=None).name == "MTT_vgg/pool5"
    assert EmbeddingConfig().name == "MTT_musicnn/penultimate/patches=3"   # the default samples 3 patches
    with pytest.raises(ValueError, match="MTT_vgg has no layer 'penultimate'"):
        EmbeddingConfig(model="MTT_vgg", layer="penultimate")
    assert Embedder.from_config(EmbeddingConfig(enabled=False)) is None


#: Builds the graph exactly as musicnn.extractor.extractor does (after importing it: graph mode for the
#: whole process, so this runs in a subprocess) and feeds it the given patches one at a time, as it does.
STOCK = textwrap.dedent("""
    import os, sys, numpy as np
    import musicnn.extractor
    import tensorflow as tf
    from musicnn import models
    model, src, dst = sys.argv[1:4]
    batch = np.load(src)
    tf.compat.v1.reset_default_graph()
    with tf.name_scope('model'):
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        layers = models.define_model(x, is_training, model, 50)
        y = tf.nn.sigmoid(layers[0])
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver().restore(sess, os.path.dirname(musicnn.extractor.__file__) + '/' + model + '/')
    fetch = {"tags": y, "penultimate": layers[8]}
    out = [sess.run(fetch, {x: batch[i:i + 1], is_training: False}) for i in range(len(batch))]
    np.savez(dst, **{k: np.concatenate([o[k] for o in out]) for k in fetch})
""")


@needs_musicnn
def test_embedding_matches_the_stock_graph_and_leaves_the_process_eager(tmp_path):
    import tensorflow as tf

    specs = [musicnn_input(_clip(seed), 22050) for seed in (3, 4)]
    embedder = Embedder.shared("MTT_musicnn", "penultimate")
    ours = embedder.embed(specs)
    assert "musicnn.extractor" not in sys.modules and tf.executing_eagerly()
    batch = np.concatenate([patches(log_compress(s)) for s in specs])
    np.save(tmp_path / "in.npy", batch)
    subprocess.run([sys.executable, "-c", STOCK, "MTT_musicnn", str(tmp_path / "in.npy"), str(tmp_path / "out.npz")],
                   check=True, capture_output=True)
    stock = np.load(tmp_path / "out.npz")
    for i, clip in enumerate(ours):
        rows = slice(10 * i, 10 * i + 10)
        assert clip.embedding.shape == (200,) and clip.tags.shape == (50,)
        np.testing.assert_allclose(clip.embedding, stock["penultimate"][rows].mean(axis=0), rtol=0, atol=1e-4)
        np.testing.assert_allclose(clip.tags, stock["tags"][rows].mean(axis=0), rtol=0, atol=1e-4)
    assert not np.allclose(ours[0].embedding, ours[1].embedding, atol=1e-3)   # two clips, two embeddings


@needs_musicnn
def test_features_row_embeds_bit_identically_and_keeps_the_mel_when_the_embedder_fails():
    params = AudioParams()
    wav = _wav(_clip(5, seconds=12.0))
    embedder = Embedder.shared("MTT_musicnn", "penultimate")
    first = features_row("t1", None, wav, params, 5.0, embedder=embedder)
    second = features_row("t1", None, wav, params, 5.0, embedder=embedder)
    assert first["status"] == "ok" and first["embedding_model"] == "MTT_musicnn/penultimate"
    assert len(first["embedding"]) == 200 and len(first["tags"]) == 50 and first["error_detail"] is None
    assert first["embedding"] == second["embedding"] and first["tags"] == second["tags"]   # same bytes, same bits
    assert 0.0 <= min(first["tags"]) and max(first["tags"]) <= 1.0

    class Broken:
        name = "broken/none"

        def embed(self, inputs):
            raise RuntimeError("no session")

    row = features_row("t1", None, wav, params, 5.0, embedder=Broken())  # type: ignore[arg-type]
    assert row["status"] == "ok" and row["mel"] == first["mel"] and row["summary"] == first["summary"]
    assert row["embedding"] is None and row["tags"] is None and row["embedding_model"] is None
    assert row["error_detail"] == "embedding failed: RuntimeError: no session"


@needs_musicnn
def test_stage_task_embeds_in_the_parent_after_the_capped_child(tmp_path):
    """FeatureTask with the child process (512 MiB cap): the rows carry the same embedding bits as
    features_row in-process, a file the decoder rejects stays a failed row, and the task's cost adds up."""
    from hitpredict.stages.extract_features import FeatureTask

    class Sum:
        def __init__(self):
            self.value = 0.0

        def add(self, v):
            self.value += v

    params = AudioParams()
    wavs = [_wav(_clip(seed, seconds=12.0)) for seed in (6, 7)]
    cost = (Sum(), Sum())
    task = FeatureTask(params, 5.0, isolate=True, memory_mib=512, embedding=EmbeddingConfig(enabled=True),
                       cost=cost)
    items = [("a", None, wavs[0]), ("bad", None, b"not audio at all"), ("b", None, wavs[1])]
    rows = {r["track_id"]: r for r in task.rows(iter(items))}
    assert rows["bad"]["status"] == "failed" and rows["bad"]["embedding"] is None
    alone = Embedder.from_config(EmbeddingConfig(enabled=True))   # the task's settings (3 patches by default)
    for tid, wav in (("a", wavs[0]), ("b", wavs[1])):
        assert rows[tid]["status"] == "ok" and "_embed_input" not in rows[tid]
        assert rows[tid]["embedding"] == features_row(tid, None, wav, params, 5.0, embedder=alone)["embedding"]
    assert cost[1].value == 2 and 0.0 < cost[0].value / 2 < 5.0


#: One Spark task (a Python worker) extracts an embedding, then trains and predicts with an eager Keras model.
@needs_musicnn
def test_extraction_then_keras_in_one_spark_python_worker(spark):
    def task(_):
        import os

        import numpy as np

        from hitpredict.embeddings import Embedder
        from hitpredict.keras_compat import keras
        from hitpredict.synth.music import TrackStyle, render

        clip = Embedder.shared("MTT_musicnn", "penultimate").embed_samples(
            render(TrackStyle(seconds=6.0, seed=8), 22050), 22050)
        k = keras()
        import tensorflow as tf

        eager_after_embedding = tf.executing_eagerly()
        model = k.Sequential([k.layers.Input((200,)), k.layers.Dense(4, activation="relu"), k.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        x = np.stack([clip.embedding] * 8)
        history = model.fit(x, np.ones(8), epochs=2, verbose=0)
        predict = tf.function(lambda t: model(t, training=False))
        yield json.dumps({"pid": os.getpid(), "eager": eager_after_embedding and tf.executing_eagerly(),
                          "loss": [float(v) for v in history.history["loss"]],
                          "pred": float(predict(tf.constant(x[:1]))[0, 0]),
                          "same": float(model.predict(x[:1], verbose=0)[0, 0]),
                          "extractor": "musicnn.extractor" in sys.modules})

    out = json.loads(spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()[0])
    assert out["eager"] is True and out["extractor"] is False
    assert len(out["loss"]) == 2 and all(np.isfinite(out["loss"]))
    assert out["pred"] == pytest.approx(out["same"], abs=1e-6)


def test_an_older_features_table_gains_the_embedding_columns(lake):
    """A lake made before the embedding columns: ensure() adds them (nullable), old rows read them as null,
    new rows keep them."""
    import datetime as dt

    import pyarrow as pa
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import create_table_with_add_actions

    from hitpredict.schemas import FEATURES, spark_schema

    old = pa.schema([f for f in FEATURES if f.name not in ("embedding", "tags", "embedding_model")])
    path = lake.location("features")
    create_table_with_add_actions(path, Schema.from_arrow(old), [], mode="ignore", name="features")
    now = dt.datetime.now(dt.timezone.utc)
    from deltalake import write_deltalake

    write_deltalake(path, pa.Table.from_pylist([{"track_id": "old", "status": "ok", "extracted_at": now}],
                                               schema=old), mode="append")
    lake.ensure("features")
    assert {"embedding", "tags", "embedding_model"} <= {f.name for f in DeltaTable(path).schema().fields}
    new = {"track_id": "new", "status": "ok", "extracted_at": now, "embedding": [0.5, 1.5], "tags": [0.25],
           "embedding_model": "MTT_musicnn/penultimate"}
    frame = pa.Table.from_pylist([new], schema=FEATURES).to_pandas()
    lake.append("features", lake.spark.createDataFrame(frame, spark_schema("features")), {"hitpredict.stage": "test"})
    got = {r["track_id"]: r for r in lake.read_columns("features", ["track_id", "embedding", "embedding_model"])
           .to_pylist()}
    assert got["old"]["embedding"] is None and got["old"]["embedding_model"] is None
    assert got["new"]["embedding"] == [0.5, 1.5] and got["new"]["embedding_model"] == "MTT_musicnn/penultimate"
    spark_rows = {r.track_id: r.embedding for r in lake.read("features").select("track_id", "embedding").collect()}
    assert spark_rows == {"old": None, "new": [0.5, 1.5]}


@needs_musicnn
def test_extract_features_stores_embeddings_and_reports_their_cost(spark, tmp_path):
    """The stage end to end on two clips: the rows carry the embedding, the tags and the model's name, the
    same bits as features_row in-process (what ``score FILE`` uses), and the report gives the cost per clip."""
    from hitpredict.config import load_config
    from hitpredict.lake import DeltaRsLake
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue

    folder = tmp_path / "audio"
    folder.mkdir()
    wavs = {f"c{seed}.wav": _wav(_clip(seed, seconds=8.0)) for seed in (9, 10)}
    for name, data in wavs.items():
        (folder / name).write_bytes(data)
    config = load_config(None, [f"lake.root={tmp_path / 'lakehouse'}", "embedding.enabled=true"], environ={})
    lake = DeltaRsLake(config.lake, spark)
    ingest_catalogue.run(config, spark, lake, str(folder))
    assert fetch_previews.run(config, spark, lake).ok == 2
    report = extract_features.run(config, spark, lake)
    assert report.ok == 2
    assert "embedding MTT_musicnn/penultimate/patches=3:" in report.notes and "CPU-s per clip over 2" in report.notes
    per_clip = float(report.notes.split("embedding MTT_musicnn/penultimate/patches=3: ")[1].split()[0])
    assert 0.0 < per_clip < 30.0
    names = {r.track_id: r.audio_uri.rsplit("/", 1)[-1] for r in lake.read("catalogue").collect()}
    rows = {names[r["track_id"]]: r for r in lake.read_arrow("features").to_pylist()}
    embedder = Embedder.from_config(config.embedding)
    for name, data in wavs.items():
        row = rows[name]
        assert row["embedding_model"] == "MTT_musicnn/penultimate/patches=3" and len(row["tags"]) == 50
        alone = features_row("x", None, data, AudioParams.from_config(config.audio), config.audio.min_seconds,
                             embedder=embedder)
        assert row["embedding"] == alone["embedding"] and row["tags"] == alone["tags"]
