"""The embed and fusion families train through the real path: examples joined with features' embedding and tags ->
Petastorm -> one Horovod process -> Keras, and learn a label planted only in those vectors."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hitpredict.config import load_config
from hitpredict.stages import train_model

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
N_MELS, FRAMES, EMBEDDING, TAGS, SUMMARY = 16, 24, 8, 5, 4


def planted_dataset(lake, n=160, seed=0) -> dict:
    """``n`` examples whose binary label is planted in the tags (tag 0 above 0.5) and in the embedding
    (dimension 0 shifted by 4 standard deviations), never in the spectrogram or the summary; and their
    datasets row with the training split's statistics, as build_dataset writes them."""
    rng = np.random.default_rng(seed)
    tags = rng.uniform(0, 1, (n, TAGS)).astype(np.float32)
    label = (tags[:, 0] > 0.5).astype(float)
    embedding = rng.normal(0, 1, (n, EMBEDDING)).astype(np.float32)
    embedding[:, 0] += 4 * label
    split = np.array(["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    rows = [{"track_id": f"t{i:03d}", "primary_artist": f"a{i}", "audio_sha256": f"h{i}", "split": split[i],
             "target": "popular", "label": label[i], "label_name": None,
             "mel": rng.normal(-30, 6, (N_MELS, FRAMES)).astype(np.float16).tobytes(), "mel_shape": [N_MELS, FRAMES],
             "summary": rng.normal(0, 1, SUMMARY).astype(np.float32).tolist(), "embedding": embedding[i].tolist(),
             "tags": tags[i].tolist(), "dataset_id": "ds-planted", "created_at": NOW, "status": "ok",
             "error_kind": None, "error_detail": None, "duration_s": 30.0, "audio_params": "{}", "extracted_at": NOW,
             "embedding_model": "test/planted"} for i in range(n)]
    # One row per track: its features (spectrogram, summary, embedding, tags) and its example (keys, label).
    lake.append("features", lake.frame("features", pd.DataFrame(rows)))
    lake.append("examples", lake.frame("examples", pd.DataFrame(rows)))
    train = split == "train"
    record = {"dataset_id": "ds-planted", "target": "popular", "threshold": 39.0,
              "label_names": ["not_popular", "popular"], "split_counts": "{}", "mel_mean": [-30.0] * N_MELS,
              "mel_std": [6.0] * N_MELS, "summary_mean": [0.0] * SUMMARY, "summary_std": [1.0] * SUMMARY,
              "embedding_mean": embedding[train].mean(axis=0).tolist(),
              "embedding_std": embedding[train].std(axis=0).tolist(), "tags_mean": tags[train].mean(axis=0).tolist(),
              "tags_std": tags[train].std(axis=0).tolist(), "embedding_model": "test/planted",
              "mel_shape": [N_MELS, FRAMES], "config": json.dumps({"audio": {}}), "created_at": NOW}
    lake.append("datasets", lake.frame("datasets", pd.DataFrame([record])))
    return {"rows": pd.DataFrame(rows), "record": record}


def test_column_list_matches_the_examples_schema():
    """Every column planted_dataset writes is a features/examples/datasets column (lake.frame drops others
    silently): the vectors are features' columns, which training joins to the examples."""
    from hitpredict.schemas import DATASETS, EXAMPLES, FEATURES

    assert {"embedding", "tags", "mel", "summary"} <= set(FEATURES.names)
    assert not {"embedding", "tags", "mel", "summary"} & set(EXAMPLES.names)
    assert {"embedding_mean", "embedding_std", "tags_mean", "tags_std", "embedding_model"} <= set(DATASETS.names)


@pytest.mark.slow
# fusion only (its tags branch reads a vector, its mel branch must learn to count less): embed trains and
# scores through train_model on real embeddings in tests/test_scoring.py, and CI time is short
@pytest.mark.parametrize("family", ["fusion"])
def test_vector_families_learn_a_label_planted_in_their_vectors(spark, lake, tmp_path: Path, family):
    from hitpredict.keras_compat import ensure_keras2
    from hitpredict.models import build_model
    from hitpredict.train.inputs import model_inputs

    data = planted_dataset(lake, n=320)
    config = load_config(None, [
        f"train.output_dir={tmp_path / 'models'}", f"train.petastorm_cache={tmp_path / 'petastorm'}",
        "train.epochs=20", "train.patience=4", "train.batch_size=16", "train.learning_rate=0.003",
        "train.augment.crop_frames=16"], environ={})
    training = train_model.plan_training(config, spark, lake, family, 1)
    plan = training.plan
    assert plan.inputs == {"embed": ("embedding", "summary"), "fusion": ("mel", "tags")}[family]
    assert (plan.spec.embedding_size, plan.spec.tags_size) == (EMBEDDING, TAGS)
    assert plan.spec.window_frames == (16 if family == "fusion" else None)   # fusion's mel branch reads windows
    ranks = train_model.train_on_processes(spark, training.examples, plan, 1, config.train.petastorm_cache)
    history = ranks[0]["history"]
    assert len(history["loss"]) >= 2 and history["loss"][-1] < history["loss"][0]

    ensure_keras2()
    model = build_model(plan.family, plan.spec)
    model.set_weights(ranks[0]["weights"])
    test = data["rows"][data["rows"]["split"] == "test"]
    feed = model_inputs(np.array(test["mel"].tolist(), dtype=object), np.stack(test["summary"]), plan.inputs,
                        N_MELS, FRAMES, plan.norm,
                        vectors={name: np.stack(test[name]) for name in ("embedding", "tags")})
    predicted = model.predict({k: v.numpy() for k, v in feed.items()}, verbose=0)[:, 0]
    accuracy = float(np.mean((predicted > 0.5) == (test["label"].to_numpy() > 0.5)))
    assert accuracy >= 0.8, accuracy   # chance is about 0.5: the label is only in the vectors
