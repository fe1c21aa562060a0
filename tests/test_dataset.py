"""build_dataset: artist-grouped splits, identical audio together, training-only statistics, bad input."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from hitpredict.config import load_config
from hitpredict.dataset import (
    LABEL_RULES, DatasetError, RunningMoments, assign_splits, check_classes, check_shapes, label_examples,
    popular_threshold, split_groups,
)
from hitpredict.schemas import EXAMPLES
from hitpredict.stages import build_dataset
from hitpredict.targets import TARGETS

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)


def test_shared_audio_merges_groups():
    groups = split_groups(["a", "b", "c", "d"], ["h1", "h2", "h1", None])
    assert groups[0] == groups[2] and len({groups[0], groups[1], groups[3]}) == 3


def test_assign_splits_keeps_groups_whole_is_reproducible_and_near_the_fractions():
    rng = np.random.default_rng(0)
    group = [f"artist{int(i)}" for i in rng.integers(0, 60, 1200)]
    stratum = [str(int(x)) for x in rng.integers(0, 2, 1200)]
    splits = assign_splits(group, stratum, (0.7, 0.15, 0.15), seed=5)
    assert splits == assign_splits(group, stratum, (0.7, 0.15, 0.15), seed=5)
    frame = pd.DataFrame({"group": group, "split": splits, "stratum": stratum})
    assert frame.groupby("group")["split"].nunique().max() == 1
    shares = frame["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.06) and shares["test"] == pytest.approx(0.15, abs=0.06)
    by_class = frame.groupby("split")["stratum"].apply(lambda s: (s == "1").mean())
    assert by_class.max() - by_class.min() < 0.1  # stratified as far as grouping allows
    assert splits != assign_splits(group, stratum, (0.7, 0.15, 0.15), seed=6)


def test_quantile_threshold_ignores_test_rows():
    popularity = pd.Series([10.0, 20, 30, 40, 90, 95])
    split = pd.Series(["train", "train", "train", "train", "test", "test"])
    base = popular_threshold(popularity, split, None, 0.5)
    assert base == 25.0
    popularity[4:] = [0.0, 1.0]  # move the test rows: the threshold must not move
    assert popular_threshold(popularity, split, None, 0.5) == base
    assert popular_threshold(popularity, split, 39.0, None) == 39.0


def test_class_and_shape_checks_say_which_and_how_many():
    with pytest.raises(DatasetError, match=r"training split is empty \(rows per split: \{'test': 2\}\)"):
        check_classes(pd.Series([1.0, 0.0]), pd.Series(["test", "test"]), "popular")
    with pytest.raises(DatasetError, match=r"single class \(1.0 for all 3 rows\)"):
        check_classes(pd.Series([1.0, 1.0, 1.0]), pd.Series(["train"] * 3), "popular")
    with pytest.raises(DatasetError, match=r"mixed spectrogram shapes: 3 x \[128, 20\], 1 x \[128, 10\]"):
        check_shapes([[128, 20]] * 3 + [[128, 10]])


def test_running_moments_merge_equals_one_pass():
    rng = np.random.default_rng(1)
    a, b = rng.normal(3, 2, (50, 4)), rng.normal(3, 2, (70, 4))
    left, right = RunningMoments(), RunningMoments()
    left.add(a)
    right.add(b)
    mean, std = left.merge(right).mean_std()
    both = np.vstack([a, b])
    assert np.allclose(mean, both.mean(0), atol=1e-5) and np.allclose(std, both.std(0), atol=1e-4)


# --------------------------------------------------------------------------- labelling rules (no Spark)


def keys_frame(n_artists=12, per_artist=6, popularity=None, popularity_source=lambda a: "label", region=None):
    """What build_dataset reads for each track with ok features: catalogue and feature keys."""
    rng = np.random.default_rng(3)
    rows = [{"track_id": f"t{a:02d}{k}", "audio_sha256": f"sha-t{a:02d}{k}", "mel_shape": [16, 8],
             "primary_artist": f"artist{a}",
             "popularity": popularity(a, k) if popularity else float(rng.uniform(0, 100)),
             "popularity_source": popularity_source(a), "region": region(a) if region else ["N", "S"][a % 2]}
            for a in range(n_artists) for k in range(per_artist)]
    rows[1]["audio_sha256"] = rows[per_artist * 5]["audio_sha256"] = "sha-shared"  # one recording, two artists
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # the lake gives no order


def labelled(target, keys=None, **overrides):
    config = load_config(None, [f"dataset.target={target}"] + [f"dataset.{k}={v}" for k, v in overrides.items()],
                         environ={}).dataset
    return label_examples(keys_frame() if keys is None else keys, config, (16, 8))


def assert_honest_splits(rows, group="primary_artist"):
    assert list(rows["track_id"]) == sorted(rows["track_id"])
    assert set(rows["split"]) == {"train", "validation", "test"}
    assert rows.groupby(group)["split"].nunique().max() == 1            # a group never spans splits
    assert rows.groupby("audio_sha256")["split"].nunique().max() == 1    # identical audio together


def test_every_target_has_a_labelling_rule():
    assert set(LABEL_RULES) == set(TARGETS)


def test_popular_labels_by_a_threshold_from_the_training_split():
    rows, meta = labelled("popular")
    assert_honest_splits(rows)
    assert len(rows) == 72 and meta["threshold"] == 39.0 and meta["mel_shape"] == [16, 8]
    assert (rows["label"] == (rows["popularity"] >= 39.0).astype(float)).all()
    assert (rows["label_name"] == np.where(rows["label"] > 0, "popular", "not_popular")).all()
    assert meta["label_names"] == ["not_popular", "popular"] and meta["popularity_sources"] == {"label": 72}
    rows, meta = labelled("popular", popular_threshold="null", popular_quantile=0.5)
    assert meta["threshold"] == pytest.approx(float(np.quantile(rows.loc[rows["split"] == "train", "popularity"], 0.5)))
    again, _ = labelled("popular", popular_threshold="null", popular_quantile=0.5)
    assert again["split"].tolist() == rows["split"].tolist()           # reproducible from the seed


def test_popularity_labels_are_the_score_and_sources_are_chosen():
    keys = keys_frame(popularity_source=lambda a: [None, "label", "deezer_rank"][a % 3])
    rows, meta = labelled("popularity", keys)
    assert_honest_splits(rows)
    assert (rows["label"] == rows["popularity"]).all() and rows["label_name"].isna().all()
    assert (meta["threshold"], meta["label_names"]) == (None, None)
    assert meta["popularity_sources"] == {"deezer_rank": 24, "label": 24, "unnamed": 24}
    rows, meta = labelled("popularity", keys, popularity_sources="[deezer_rank]")
    assert set(rows["primary_artist"]) == {f"artist{a}" for a in (2, 5, 8, 11)}
    assert meta["popularity_sources"] == {"deezer_rank": 24}


def test_a_popularity_source_no_track_has_is_refused_naming_it():
    keys = keys_frame(popularity_source=lambda a: [None, "label"][a % 2])
    with pytest.raises(DatasetError, match=r"^target 'popular': no track with ok features has popularity from "
                                           r"spotify, itunes \(dataset.popularity_sources\); these have: label 36, "
                                           r"unnamed 36$"):
        labelled("popular", keys, popularity_sources="[spotify, itunes]")


def test_artist_labels_the_top_artists_and_groups_by_track():
    keys = keys_frame()
    more = keys[keys["primary_artist"] == "artist7"].head(4)  # artist7 has 10 tracks, the others 6
    keys = pd.concat([keys, more.assign(track_id="x" + more["track_id"], audio_sha256="x" + more["audio_sha256"])])
    rows, meta = labelled("artist", keys, artist_top_n=3)
    assert_honest_splits(rows, group="track_id")
    assert rows["primary_artist"].nunique() == 3 and "artist7" in set(rows["primary_artist"])
    assert meta["label_names"] == sorted(rows["primary_artist"].unique())
    assert (rows["label"] == rows["primary_artist"].map(meta["label_names"].index).astype(float)).all()
    assert (rows["label_name"] == rows["primary_artist"]).all() and meta["threshold"] is None


def test_region_labels_the_tracks_that_have_one():
    rows, meta = labelled("region", keys_frame(n_artists=24, region=lambda a: [None, "N", "S"][a % 3]))
    assert_honest_splits(rows)
    assert len(rows) == 96 and meta["label_names"] == ["N", "S"] and meta["popularity_sources"] == {}
    assert (rows["label"] == (rows["region"] == "S").astype(float)).all()


def test_a_fifth_target_is_one_row_one_rule(monkeypatch):
    """What ARCHITECTURE.md promises: a new target (here 'charted', popularity >= 70, an example) is a row of
    TARGETS and a rule of LABEL_RULES; config validation, the task and labelling then know it."""
    import hitpredict.dataset as dataset
    import hitpredict.targets as targets
    from hitpredict.dataset import Labelled, split_rows

    def label_charted(keys, config):
        rows = split_rows(keys[keys["popularity"].notna()], config, "region")
        rows["label"] = (rows["popularity"] >= 70).astype(float)
        rows["label_name"] = np.where(rows["label"] > 0, "charted", "not_charted")
        return Labelled(rows, label_names=["not_charted", "charted"])

    with pytest.raises(Exception, match="dataset.target = 'charted' is not allowed"):
        labelled("charted")
    monkeypatch.setitem(targets.TARGETS, "charted", targets.Target("charted", "binary", "prob_popular",
                                                                   explained=True, label_column="popularity"))
    monkeypatch.setitem(dataset.LABEL_RULES, "charted", label_charted)
    rows, meta = labelled("charted")
    assert_honest_splits(rows)
    assert (rows["label"] == (rows["popularity"] >= 70).astype(float)).all()
    assert meta["target"] == "charted" and meta["label_names"] == ["not_charted", "charted"]
    assert targets.target_named("charted").task == "binary"


def test_a_target_no_track_qualifies_for_is_refused():
    with pytest.raises(DatasetError, match=r"^target 'region': no track has both ok features and a region value$"):
        labelled("region", keys_frame(region=lambda a: None))


# --------------------------------------------------------------------------- the stage


def seed_lake(lake, n_artists=12, per_artist=6, shape=(16, 8), duplicate_audio=True, popularity=None,
              popularity_source=lambda a: "label", embedding_model=lambda track: None, embedding_size=5, tags_size=3):
    """Catalogue + ok features rows written straight to the lake (no audio needed); a track whose
    ``embedding_model`` is not None has an embedding and tags of that model (seeded random values)."""
    rng = np.random.default_rng(2)
    catalogue, features = [], []
    for a in range(n_artists):
        for k in range(per_artist):
            track = f"t{a:02d}{k}"
            pop = popularity(a, k) if popularity else float(rng.uniform(0, 100))
            catalogue.append({"track_id": track, "source": "test", "source_row": None, "title": track,
                              "artists": [f"artist{a}"], "primary_artist": f"artist{a}", "isrc": None,
                              "release_date": None, "audio_uri": None, "preview_url": "http://x", "popularity": pop,
                              "popularity_source": popularity_source(a), "streams": None, "region": ["N", "S"][a % 2],
                              "genre": None, "ingested_at": NOW})
            mel = rng.normal(-30 + pop / 10, 5, shape).astype(np.float16)
            model = embedding_model(track)
            features.append({"track_id": track, "audio_sha256": f"sha-{track}", "status": "ok", "error_kind": None,
                             "error_detail": None, "duration_s": 30.0, "mel": mel.tobytes(), "mel_shape": list(shape),
                             "summary": rng.normal(0, 1, 4).astype(np.float32).tolist(), "audio_params": "{}",
                             "extracted_at": NOW,
                             "embedding": None if model is None else rng.normal(pop / 50, 1, embedding_size)
                             .astype(np.float32).tolist(),
                             "tags": None if model is None else rng.uniform(0, 1, tags_size)
                             .astype(np.float32).tolist(),
                             "embedding_model": model})
    if duplicate_audio:  # the same recording released under two artists
        features[1]["audio_sha256"] = features[per_artist * 5]["audio_sha256"] = "sha-shared"
    lake.append("catalogue", lake.frame("catalogue", pd.DataFrame(catalogue)))
    lake.append("features", lake.frame("features", pd.DataFrame(features)))
    return pd.DataFrame(catalogue), pd.DataFrame(features)


def dataset_config(**overrides):
    return load_config(None, [f"dataset.{k}={v}" for k, v in overrides.items()], environ={})


def test_stage_writes_grouped_examples_and_training_only_statistics(spark, lake):
    _, features = seed_lake(lake)
    report = build_dataset.run(dataset_config(popular_threshold="null", popular_quantile=0.5), spark, lake)
    assert report.ok == 72
    examples = lake.read("examples").toPandas()
    assert list(examples.columns) == EXAMPLES.names and "mel" not in EXAMPLES.names   # keys only: no copies
    assert examples.groupby("primary_artist")["split"].nunique().max() == 1       # no artist in two splits
    assert examples.groupby("audio_sha256")["split"].nunique().max() == 1         # identical audio together
    assert set(examples["split"]) == {"train", "validation", "test"}
    record = lake.read_arrow("datasets").to_pylist()[0]
    train = examples[examples["split"] == "train"]
    train_pop = lake.read("catalogue").toPandas().set_index("track_id").loc[train["track_id"], "popularity"]
    assert record["threshold"] == pytest.approx(float(np.quantile(train_pop, 0.5)))
    assert (examples["label"] == (examples["track_id"].map(
        lake.read("catalogue").toPandas().set_index("track_id")["popularity"]) >= record["threshold"])).all()
    train_mel = features.set_index("track_id").loc[train["track_id"], "mel"]   # the statistics read the features
    mels = np.stack([np.frombuffer(m, np.float16).reshape(16, 8).astype(np.float32) for m in train_mel])
    assert np.allclose(record["mel_mean"], mels.mean(axis=(0, 2)), atol=1e-3)
    assert np.allclose(record["mel_std"], mels.transpose(1, 0, 2).reshape(16, -1).std(axis=1), atol=1e-3)
    counts = json.loads(record["split_counts"])
    assert sum(sum(c.values()) for c in counts.values()) == 72

    again = build_dataset.run(dataset_config(popular_threshold="null", popular_quantile=0.5), spark, lake)
    assert again.ok == 0 and again.notes.endswith("(up to date)")
    assert lake.read("examples").count() == 72


def test_popularity_signals_are_chosen_by_source_and_a_mix_is_reported(spark, lake):
    seed_lake(lake, duplicate_audio=False, popularity_source=lambda a: [None, "label", "deezer_rank"][a % 3])
    mixed = build_dataset.run(dataset_config(), spark, lake)
    assert mixed.ok == 72
    assert mixed.details == ["popularity from: deezer_rank 24, label 24, unnamed 24 "
                             "(different scales mixed: dataset.popularity_sources picks one)"]
    label = build_dataset.run(dataset_config(popularity_sources="[label, unnamed]"), spark, lake)
    assert (label.ok, label.details) == (48, ["popularity from: label 24, unnamed 24 (different scales mixed: "
                                             "dataset.popularity_sources picks one)"])
    only = build_dataset.run(dataset_config(popularity_sources="[deezer_rank]"), spark, lake)
    assert (only.ok, only.details) == (24, ["popularity from: deezer_rank 24"])
    examples = lake.read("examples").toPandas()
    chosen = examples[examples["dataset_id"] == only.notes.split(",")[0]]
    assert set(chosen["primary_artist"]) == {f"artist{a}" for a in (2, 5, 8, 11)}
    with pytest.raises(DatasetError, match=r"no track with ok features has popularity from spotify "
                                           r"\(dataset.popularity_sources\); these have: deezer_rank 24, label 24, "
                                           r"unnamed 24$"):
        build_dataset.run(dataset_config(popularity_sources="[spotify]"), spark, lake)


def test_artist_target_groups_by_track_and_names_the_classes(spark, lake):
    seed_lake(lake, duplicate_audio=False)
    build_dataset.run(dataset_config(target="artist", artist_top_n=5), spark, lake)
    examples = lake.read("examples").toPandas()
    assert examples["primary_artist"].nunique() == 5
    assert examples.groupby("primary_artist")["split"].nunique().min() > 1  # artists span splits, tracks do not
    record = lake.read_arrow("datasets").to_pylist()[0]
    assert record["label_names"] == sorted(examples["primary_artist"].unique())


def test_single_class_target_fails_before_training(spark, lake):
    seed_lake(lake, popularity=lambda a, k: 80.0)
    with pytest.raises(DatasetError, match="single class"):
        build_dataset.run(dataset_config(), spark, lake)
    assert lake.read("examples").count() == 0


def test_mixed_spectrogram_shapes_fail_naming_them(spark, lake):
    seed_lake(lake, n_artists=2, per_artist=3, duplicate_audio=False)
    odd = lake.read("features").limit(1).toPandas()
    odd["track_id"], odd["mel_shape"] = "odd", [[16, 4]]
    odd["mel"] = [np.zeros((16, 4), np.float16).tobytes()]
    lake.append("features", lake.frame("features", odd))
    with pytest.raises(DatasetError, match=r"mixed spectrogram shapes: 6 x \[16, 8\], 1 x \[16, 4\]"):
        build_dataset.run(dataset_config(), spark, lake)


# --------------------------------------------------------------------------- embeddings and tags


def test_vector_statistics_need_every_example_one_model_and_one_length():
    def part(rows, total, squares, sizes):
        return {"embedding_rows": rows, "embedding_total": np.asarray(total, float).tobytes(),
                "embedding_squares": np.asarray(squares, float).tobytes(), "embedding_sizes": json.dumps(sizes)}

    parts = [part(2, [2.0, 4.0], [2.0, 10.0], [2]), part(2, [2.0, 0.0], [2.0, 2.0], [2])]
    mean, std, problem = build_dataset.vector_statistics("embedding", parts, 4, {"m/penultimate": 6})
    assert problem is None and mean.tolist() == [1.0, 1.0] and std.tolist() == [0.0, pytest.approx(np.sqrt(2.0))]
    assert build_dataset.vector_statistics("embedding", [part(0, [], [], [])], 4, {None: 6}) == (None, None, None)
    assert build_dataset.vector_statistics("embedding", parts, 4, {"m": 5, None: 1})[2] == \
        "embedding: missing for 1 of 6 examples (their features have no embedding)"
    assert build_dataset.vector_statistics("embedding", parts, 4, {"a": 3, "b": 3})[2] == \
        "embedding: the examples mix embedding models (a, b)"
    mixed = [parts[0], part(1, [1.0] * 3, [1.0] * 3, [3])]
    assert build_dataset.vector_statistics("embedding", mixed, 3, {"m": 6})[2] == \
        "embedding: the training examples' vectors have mixed lengths [2, 3]"


def test_training_rows_join_the_features_and_datasets_hold_the_vectors_training_statistics(spark, lake):
    from hitpredict.stages import train_model

    seed_lake(lake, duplicate_audio=False, embedding_model=lambda track: "MTT_musicnn/penultimate")
    report = build_dataset.run(dataset_config(), spark, lake)
    assert report.ok == 72 and report.details == ["popularity from: label 72"]
    record = lake.read_arrow("datasets").to_pylist()[0]
    examples = lake.read("examples").toPandas().set_index("track_id")
    joined = train_model.training_rows(lake, record["dataset_id"]).toPandas().set_index("track_id")
    features = lake.read("features").toPandas().set_index("track_id")
    assert sorted(joined.index) == sorted(examples.index) and len(joined) == 72
    assert (joined["split"] == examples.loc[joined.index, "split"]).all()
    assert (joined["label"] == examples.loc[joined.index, "label"]).all()
    for column in ("mel", "summary", "embedding", "tags"):   # each example's own track's features, joined
        assert all(np.array_equal(joined.loc[t, column], features.loc[t, column]) for t in joined.index), column
    train = joined[joined["split"] == "train"]
    embedding, tags = np.stack(train["embedding"]), np.stack(train["tags"])
    np.testing.assert_allclose(record["embedding_mean"], embedding.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(record["embedding_std"], embedding.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(record["tags_mean"], tags.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(record["tags_std"], tags.std(axis=0), atol=1e-5)
    assert record["embedding_model"] == "MTT_musicnn/penultimate"
    assert json.loads(record["config"])["embedding_models"] == ["MTT_musicnn/penultimate"]


def test_a_dataset_with_missing_embeddings_says_so_and_the_embed_family_is_refused_by_name(spark, lake, tmp_path):
    from hitpredict.stages import train_model

    seed_lake(lake, duplicate_audio=False, embedding_model=lambda track: None if track.endswith("0") else "m/pooled")
    report = build_dataset.run(dataset_config(), spark, lake)
    assert report.ok == 72 and report.details[1:] == [
        "embedding: missing for 12 of 72 examples (their features have no embedding): the embed family cannot "
        "train on this dataset",
        "tags: missing for 12 of 72 examples (their features have no embedding): the fusion family's tags branch "
        "cannot train on this dataset"]
    record = lake.read_arrow("datasets").to_pylist()[0]
    examples = train_model.training_rows(lake, record["dataset_id"]).toPandas()
    assert examples["embedding"].isna().sum() == 12 and examples["tags"].isna().sum() == 12
    assert record["embedding_mean"] is None and record["tags_mean"] is None and record["embedding_model"] is None
    config = load_config(None, [f"train.petastorm_cache={tmp_path / 'petastorm'}",
                                f"train.output_dir={tmp_path / 'models'}"], environ={})
    for family in ("embed", "fusion"):
        with pytest.raises(DatasetError, match=rf"^dataset {record['dataset_id']}: the {family} family reads the "
                                               rf"(embedding|tags) column of the examples' features, but not every "
                                               rf"example has one"):
            train_model.run(config, spark, lake, family=family, num_proc=1)
    assert not (tmp_path / "petastorm").exists() and not (tmp_path / "models").exists()
    tags_dropped = load_config(None, ["train.fusion_branches=[mel]"], environ={})
    plan = train_model.make_plan(tags_dropped, record, examples[["split", "label"]], 1, "fusion", None, None)
    assert plan.inputs == ("mel",) and plan.spec.tags_size == 0   # the mel branch alone needs no tags
