"""Pretrained music embeddings (musicnn): front end, equality with the stock graph, eager mode kept,
the features row (and its failures), the stage's child-process path, Keras models cached by a Spark
worker across an embedder build, and an older lake's schema.

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
from hitpredict import embeddings
from hitpredict.config import EmbeddingConfig, embedding_name, musicnn_installed, parse_embedding_name
from hitpredict.embeddings import PATCH_FRAMES, Embedder, generation, log_compress, musicnn_input, patches
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
    assert EmbeddingConfig().name == "MSD_musicnn/max_pool/patches=3"   # the default samples 3 patches
    # one name format, read back by Embedder.named (a bundle's embedding_model -> its embedder)
    assert parse_embedding_name(EmbeddingConfig().name) == ("MSD_musicnn", "max_pool", 3)
    assert parse_embedding_name(embedding_name("MSD_vgg", "pool5", None)) == ("MSD_vgg", "pool5", None)
    with pytest.raises(ValueError, match="not an embedding model name: 'MTT_musicnn/penultimate/3'"):
        parse_embedding_name("MTT_musicnn/penultimate/3")
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


@needs_musicnn
def test_every_embedder_build_bumps_the_generation(monkeypatch):
    """A new embedder's graph counts one generation, a reused shared one none, and a build that fails after
    its graph was begun counts too (Keras models built before it may be unusable all the same)."""
    start = generation()
    Embedder("MTT_vgg", "tags", max_patches=1)
    assert generation() == start + 1
    shared = Embedder.shared("MTT_vgg", "tags", max_patches=2)
    assert generation() == start + 2
    assert Embedder.shared("MTT_vgg", "tags", max_patches=2) is shared and generation() == start + 2

    def no_weights(model):
        raise RuntimeError(f"musicnn has no weights for {model}")

    monkeypatch.setattr(embeddings, "_weights_dir", no_weights)
    with pytest.raises(RuntimeError, match="no weights for MTT_vgg"):
        Embedder("MTT_vgg", "tags")
    assert generation() == start + 3


def test_cached_bundles_are_loaded_again_when_an_embedder_was_built_since(monkeypatch):
    """ScoreTask keeps a worker's bundles across tasks (``_LOADED``) and loads one again once it is
    ``outdated`` (an embedder built in the worker since), and only then."""
    import pyspark

    from hitpredict.scoring.scorer import ScoreSettings
    from hitpredict.stages import score_catalogue

    class Bundle:
        def __init__(self, where):
            self.where, self.generation = where, generation()

        @property
        def outdated(self):
            return self.generation != generation()

    loads: list[str] = []
    monkeypatch.setattr(score_catalogue, "_LOADED", {})
    monkeypatch.setattr(score_catalogue.ModelBundle, "load", staticmethod(lambda where: loads.append(where) or Bundle(where)))
    monkeypatch.setattr(pyspark.SparkFiles, "get", staticmethod(lambda archive: f"/shipped/{archive}"))
    task = score_catalogue.ScoreTask([("m", "1", "m.zip")], ScoreSettings(explain=False), threads=None)
    first = task._load()
    assert task._load() == first and loads == ["/shipped/m.zip"]   # no embedder built since: kept
    monkeypatch.setattr(embeddings, "_GENERATION", generation() + 1)   # as an Embedder build does
    again = task._load()
    assert again[0] is not first[0] and loads == ["/shipped/m.zip"] * 2 and not again[0].outdated
    assert task._load() == again and len(loads) == 2   # loaded once more, not on every task


def test_a_task_whose_embedder_cannot_be_built_keeps_its_mel_rows(monkeypatch):
    """FeatureTask (in-process) when the embedder cannot be built: every row stays ok, with null embedding and
    the same ``embedding failed`` note as a clip the network fails on (clip_features.embedding_failed)."""
    from hitpredict.stages import extract_features

    def cannot(config):
        raise RuntimeError("musicnn has no weights for MTT_musicnn")

    monkeypatch.setattr(extract_features.Embedder, "from_config", cannot)
    task = extract_features.FeatureTask(AudioParams(), 5.0, isolate=False, embedding=EmbeddingConfig(enabled=True))
    rows = list(task.rows(iter([("a", None, _wav(_clip(11, seconds=6.0)))])))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["mel"] is not None
    assert rows[0]["embedding"] is None and rows[0]["tags"] is None and rows[0]["embedding_model"] is None
    assert rows[0]["error_detail"] == "embedding failed: RuntimeError: musicnn has no weights for MTT_musicnn"
    assert "_embed_input" not in rows[0]


#: One Spark task (a Python worker) scores (its bundles cached in score_catalogue._LOADED), builds an embedder
#: and embeds, then scores again: the reverse of the test above.
@needs_musicnn
def test_scoring_then_extraction_then_scoring_in_one_spark_python_worker(spark, tmp_path):
    """The first scoring reads model m1 only (its tracks were scored by m2 already), so m2 is loaded and cached
    but not called; building an embedder's graph then leaves it unusable ("invalid state"). The worker loads
    its models again: the second scoring gives m1's first scores and m2's scores from a fresh load, to 1e-6."""
    import pyarrow as pa

    from hitpredict.keras_compat import ensure_keras2
    from hitpredict.models import ModelSpec, build_model, input_names
    from hitpredict.scoring.scorer import ScoreSettings
    from hitpredict.stages.score_catalogue import ScoreTask, ship_folder
    from hitpredict.train.bundle import ModelBundle
    from hitpredict.train.plan import Normalisation

    ensure_keras2()
    folders, shipped = [], []
    for seed in (1, 2):
        spec = ModelSpec("binary", n_mels=8, frames=16, summary_size=4, seed=seed)
        bundle = ModelBundle(family="mlp", spec=spec, target="popular", audio={},
                             norm=Normalisation([0.0] * 8, [1.0] * 8, [0.0] * 4, [1.0] * 4),
                             inputs=input_names("mlp"), dataset_id="d", model=build_model("mlp", spec))
        folders.append(str(bundle.save(tmp_path / f"m{seed}")))
        shipped.append((f"m{seed}", "1", ship_folder(spark, folders[-1])))
    rng = np.random.default_rng(4)
    mel = [rng.normal(size=(8, 16)).astype(np.float16).tobytes() for _ in range(3)]
    summary = rng.normal(size=(3, 4)).tolist()

    def task(_):
        import os

        from hitpredict.stages import score_catalogue
        from hitpredict.synth.music import TrackStyle, render

        def score(wanted):
            batch = pa.RecordBatch.from_pylist([{"track_id": f"t{i}", "mel": mel[i], "summary": summary[i],
                                                 "models": wanted} for i in range(3)])
            out = ScoreTask(shipped, ScoreSettings(), 1)([batch])
            return {f"{r['model_name']}/{r['track_id']}": r["prob_popular"] for b in out for r in b.to_pylist()}

        first = score([0])
        cached = sorted(score_catalogue._LOADED)
        before = generation()
        clip = Embedder("MTT_musicnn", "tags", max_patches=1).embed_samples(
            render(TrackStyle(seconds=4.0, seed=8), 22050), 22050)
        built = generation() - before
        try:
            second, error = score([0, 1]), None
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which says what failed
            second, error = {}, f"{type(exc).__name__}: {exc}"[:400]
        yield json.dumps({"pid": os.getpid(), "first": first, "second": second, "error": error, "built": built,
                          "cached": cached, "tags": len(clip.tags)})

    out = json.loads(spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()[0])
    assert out["built"] == 1 and out["tags"] == 50
    assert len(out["cached"]) == 2 and set(out["first"]) == {"m1/t0", "m1/t1", "m1/t2"}   # m2 cached, not called
    assert out["error"] is None, out["error"]
    assert set(out["second"]) == {f"m{m}/t{i}" for m in (1, 2) for i in range(3)}
    fresh = ModelBundle.load(folders[1]).predict(mel, summary)[:, 0]
    for i in range(3):
        assert out["second"][f"m1/t{i}"] == pytest.approx(out["first"][f"m1/t{i}"], abs=1e-6)
        assert out["second"][f"m2/t{i}"] == pytest.approx(float(fresh[i]), abs=1e-6)


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
    assert "embedding MSD_musicnn/max_pool/patches=3:" in report.notes and "CPU-s per clip over 2" in report.notes
    per_clip = float(report.notes.split("embedding MSD_musicnn/max_pool/patches=3: ")[1].split()[0])
    assert 0.0 < per_clip < 30.0
    names = {r.track_id: r.audio_uri.rsplit("/", 1)[-1] for r in lake.read("catalogue").collect()}
    rows = {names[r["track_id"]]: r for r in lake.read_arrow("features").to_pylist()}
    embedder = Embedder.from_config(config.embedding)
    for name, data in wavs.items():
        row = rows[name]
        assert row["embedding_model"] == "MSD_musicnn/max_pool/patches=3" and len(row["tags"]) == 50
        alone = features_row("x", None, data, AudioParams.from_config(config.audio), config.audio.min_seconds,
                             embedder=embedder)
        assert row["embedding"] == alone["embedding"] and row["tags"] == alone["tags"]


def test_a_model_loaded_before_an_embedder_build_still_scores_in_score_file_and_the_pyfunc(tmp_path):
    """``score FILE`` with an already resolved model, and a pyfunc loaded earlier, both used after an embedder's
    graph was built in this process (another model's load, features in a notebook): each loads its bundle
    again (``ModelBundle.outdated``) instead of failing with Keras' "invalid state"."""
    import types

    import pandas as pd
    import soundfile as sf

    from hitpredict.features import SUMMARY_SIZE
    from hitpredict.keras_compat import ensure_keras2
    from hitpredict.models import ModelSpec, build_model, input_names
    from hitpredict.scoring.registry import ResolvedModel
    from hitpredict.scoring.scorer import ScoreSettings
    from hitpredict.scoring.single import score_file
    from hitpredict.train.bundle import ModelBundle
    from hitpredict.train.plan import Normalisation
    from hitpredict.train.pyfunc_model import HitpredictModel

    ensure_keras2()
    params = AudioParams()
    spec = ModelSpec("binary", n_mels=params.n_mels, frames=params.frames, summary_size=SUMMARY_SIZE, seed=3)
    norm = Normalisation([0.0] * params.n_mels, [1.0] * params.n_mels, [0.0] * SUMMARY_SIZE, [1.0] * SUMMARY_SIZE)
    folder = str(ModelBundle(family="mlp", spec=spec, target="popular", audio=params.model_dump(), norm=norm,
                             inputs=input_names("mlp"), dataset_id="d", model=build_model("mlp", spec))
                 .save(str(tmp_path / "bundle")))
    wav = io.BytesIO()
    sf.write(wav, render(TrackStyle(seconds=8.0, seed=1), 22050), 22050, format="WAV")
    path = tmp_path / "track.wav"
    path.write_bytes(wav.getvalue())
    resolved = ResolvedModel(name="m", version="1", bundle_dir=folder, target="popular", family="mlp",
                             audio=params.model_dump(), bundle=ModelBundle.load(folder))
    pyfunc = HitpredictModel()
    pyfunc.load_context(types.SimpleNamespace(artifacts={"bundle": folder}))
    fresh = float(score_file(str(path), [resolved], ScoreSettings(explain=False))["prob_popular"].iloc[0])
    resolved = ResolvedModel(name="m", version="1", bundle_dir=folder, target="popular", family="mlp",
                             audio=params.model_dump(), bundle=ModelBundle.load(folder))   # loaded, not yet called
    pyfunc.load_context(types.SimpleNamespace(artifacts={"bundle": folder}))
    assert not resolved.bundle.outdated
    Embedder("MTT_musicnn", "tags", max_patches=1)   # a new graph: Keras models built before it are unusable
    assert resolved.bundle.outdated and pyfunc.bundle.outdated
    after = float(score_file(str(path), [resolved], ScoreSettings(explain=False))["prob_popular"].iloc[0])
    by_pyfunc = float(pyfunc.predict(None, pd.DataFrame({"path": [str(path)]})).iloc[0, 0])
    assert abs(after - fresh) < 1e-6 and abs(by_pyfunc - fresh) < 1e-6


def test_score_file_runs_the_embedder_with_the_configs_threads_and_clips_per_run(tmp_path, monkeypatch):
    """``score FILE`` builds the embedder its model names with the ``embedding`` config's ``threads`` and
    ``batch_clips``, as ``extract_features`` does (1 and 1 without a config); one that cannot be built is a
    ``ScoreError`` naming the file."""
    from hitpredict.keras_compat import ensure_keras2
    from hitpredict.models import ModelSpec, build_model, input_names
    from hitpredict.scoring.registry import ResolvedModel
    from hitpredict.scoring.scorer import ScoreError, ScoreSettings
    from hitpredict.scoring.single import score_file
    from hitpredict.train.bundle import ModelBundle
    from hitpredict.train.plan import Normalisation

    ensure_keras2()
    params = AudioParams()
    spec = ModelSpec("binary", summary_size=4, embedding_size=3)
    norm = Normalisation([0.0], [1.0], [0.0] * 4, [1.0] * 4, [0.0] * 3, [1.0] * 3)
    bundle = ModelBundle(family="embed", spec=spec, target="popular", audio=params.model_dump(), norm=norm,
                         inputs=input_names("embed"), dataset_id="d", embedding_model="MSD_musicnn/max_pool/patches=3",
                         model=build_model("embed", spec))
    resolved = ResolvedModel(name="m", version="1", bundle_dir=str(tmp_path), target="popular", family="embed",
                             audio=params.model_dump(), bundle=bundle)
    asked = []

    def named(name, threads=1, batch_clips=1):
        asked.append((name, threads, batch_clips))
        raise RuntimeError("not built in this test")

    monkeypatch.setattr(Embedder, "named", staticmethod(named))
    path = tmp_path / "demo.wav"
    path.write_bytes(b"RIFF")
    for embedding, expected in ((EmbeddingConfig(threads=2, batch_clips=4), (2, 4)), (None, (1, 1))):
        with pytest.raises(ScoreError, match=r"demo\.wav: cannot embed with MSD_musicnn/max_pool/patches=3: "
                                             r"RuntimeError: not built in this test"):
            score_file(path, [resolved], ScoreSettings(explain=False), embedding=embedding)
        assert asked.pop() == ("MSD_musicnn/max_pool/patches=3", *expected)
