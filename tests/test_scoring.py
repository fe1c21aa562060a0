"""score_catalogue, score-folder, score FILE: incremental, explained, equal between batch and
one file, and refusing models that do not fit the data."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hitpredict.audio_params import AudioParams
from hitpredict.config import ModelRef, load_config
from hitpredict.lake import open_lake
from hitpredict.scoring.registry import resolve_model
from hitpredict.scoring.scorer import ScoreError, ScoreSettings, segment_bounds
from hitpredict.scoring.single import score_file
from hitpredict.stages import (build_dataset, extract_features, fetch_previews, ingest_catalogue, score_catalogue,
                               score_folder, train_model)
from hitpredict.synth.catalogue import ensure_sample_catalogue, write_catalogue_csv
from hitpredict.preview_server import PreviewServer
from hitpredict.train.bundle import BundleError, ModelBundle

FIRST, ADDED = 120, 50
SECRET = "scoring-s3cr3t-Pq71-must-not-be-logged"   # in the config of every training and scoring run here
ROOT = Path(__file__).resolve().parents[1]


def scoring_config(root: Path, *extra: str):
    return load_config(None, [
        f"lake.root={root / 'lakehouse'}", f"sample.dir={root / 'sample'}", f"sample.tracks={FIRST + ADDED}",
        "sample.artists=17", "sample.seconds=6", "audio.clip_seconds=6", "audio.min_seconds=1",
        f"train.output_dir={root / 'models'}", f"train.petastorm_cache={root / 'petastorm'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "train.epochs=4", "train.bootstrap_rounds=50",
        "train.augment.crop_frames=128", "score.segment_seconds=1", "score.top_k_artists=3",
        f"score.report_dir={root / 'report'}", *extra,
    ], environ={"SPOTIPY_CLIENT_ID": "scoring-client", "SPOTIPY_CLIENT_SECRET": SECRET})


def ingest_and_extract(config, spark, lake, sample, rows, name: str) -> None:
    allow = config.model_copy(update={"fetch": config.fetch.model_copy(update={"allow_hosts": ["127.0.0.1"]})})
    with PreviewServer(directory=sample.audio_dir).start() as server:
        csv_path = write_catalogue_csv(rows, sample.root / name, sample.audio_dir, preview_base_url=server.base_url,
                                       include_audio_uri=False)
        ingest_catalogue.run(allow, spark, lake, str(csv_path))
        fetch_previews.run(allow, spark, lake)
    extract_features.run(allow, spark, lake)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """120 six-second tracks through features (with their musicnn embeddings); a popular CNN (windowed), an
    artist ``embed`` model and a region ``fusion`` model
    trained on them and registered; the catalogue scored once."""
    root = tmp_path_factory.mktemp("scoring")
    config = scoring_config(root)
    s = config.sample
    sample = ensure_sample_catalogue(s.dir, s.tracks, s.artists, seed=s.seed, seconds=s.seconds)
    lake = open_lake(config.lake, spark)
    ingest_and_extract(config, spark, lake, sample, sample.rows[:FIRST], "first.csv")
    refs = []
    for target, family, epochs in (("popular", "cnn", 4), ("artist", "embed", 30), ("region", "fusion", 30)):
        settings = config.model_copy(update={"dataset": config.dataset.model_copy(update={"target": target}),
                                             "train": config.train.model_copy(update={"epochs": epochs})})
        build_dataset.run(settings, spark, lake)
        trained = train_model.run(settings, spark, lake, family=family, num_proc=1)
        refs.append(ModelRef(name=trained.model_name, version=trained.model_version))
    config = config.model_copy(update={"score": config.score.model_copy(update={"models": refs})})
    first = score_catalogue.run(config, spark, lake)
    return {"config": config, "lake": lake, "sample": sample, "first": first, "root": root}


def scores_of(lake):
    return lake.read_arrow("scores").to_pandas()


def test_every_model_scores_every_track_once_and_a_second_run_writes_nothing(world, spark):
    config, lake, first = world["config"], world["lake"], world["first"]
    assert [m.target for m in first.models] == ["popular", "artist", "region"]
    assert first.written == {m.label: FIRST for m in first.models}
    assert first.report.ok == 3 * FIRST and first.report.failed_total == 0
    version = lake.version("scores")
    again = score_catalogue.run(config, spark, lake)
    assert again.written == {m.label: 0 for m in first.models} and again.report.rows_in == 0
    assert "nothing new to score" in again.report.notes
    assert lake.version("scores") == version  # not even an empty commit


def test_scores_hold_probabilities_percentiles_artists_regions_and_explanations(world):
    lake, sample, first = world["lake"], world["sample"], world["first"]
    popular, artist, region = first.models
    rows = scores_of(lake)
    rows = rows[rows["track_id"].isin([r.track_id for r in sample.rows[:FIRST]])]
    pop = rows[rows["model_name"] == popular.name].sort_values("prob_popular")
    assert pop["prob_popular"].between(0, 1).all() and pop["percentile"].between(0, 100).all()
    assert np.all(np.diff(pop["percentile"].to_numpy()) >= -1e-9)  # percentile rises with the score
    assert pop["popularity_pred"].isna().all() and pop["region"].isna().all()
    assert all(len(v) == 6 for v in pop["segment_importance"])     # 6 s window, 1 s segments
    bundle = ModelBundle.load(artist.bundle_dir)
    for similar in rows.loc[rows["model_name"] == artist.name, "similar_artists"]:
        probs = [item["prob"] for item in similar]
        assert len(similar) == 3 and probs == sorted(probs, reverse=True)
        assert {item["artist"] for item in similar} <= set(bundle.label_names)
    truth = {r.track_id: r.region for r in sample.rows}
    regional = rows[rows["model_name"] == region.name]
    assert set(regional["region"]) <= set(truth.values())
    hits = np.mean([truth[t] == r for t, r in zip(regional["track_id"], regional["region"])])
    majority = max(Counter(truth[t] for t in regional["track_id"]).values()) / len(regional)
    assert hits > majority + 0.1, (hits, majority)   # audible in the synthetic catalogue (tempo and swing)


def test_segment_importance_is_the_score_drop_when_a_segment_becomes_the_training_mean(world):
    """Recomputed here with numpy normalisation and one model call per occluded copy."""
    lake, popular = world["lake"], world["first"].models[0]
    bundle = ModelBundle.load(popular.bundle_dir)
    features = lake.read_arrow("features").to_pandas().head(3)
    stored = scores_of(lake).set_index(["model_name", "track_id"]).loc[popular.name]
    n_mels, frames = bundle.mel_shape
    mean = np.array(bundle.norm.mel_mean, np.float32)[:, None]
    std = np.maximum(np.array(bundle.norm.mel_std, np.float32), 1e-3)[:, None]
    segments = segment_bounds(AudioParams.from_dict(bundle.audio), 1.0)
    assert len(segments) == 6 and segments[0][0] == 0 and segments[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
    for row in features.itertuples():
        mel = (np.frombuffer(row.mel, np.float16).reshape(n_mels, frames).astype(np.float32) - mean) / std
        copies = [mel.copy()]
        for begin, end in segments:
            copies.append(mel.copy())
            copies[-1][:, begin:end] = 0.0
        out = bundle.model.predict(np.stack(copies)[..., None], verbose=0)[:, 0]
        assert stored.loc[row.track_id, "prob_popular"] == pytest.approx(out[0], abs=1e-5)
        np.testing.assert_allclose(stored.loc[row.track_id, "segment_importance"], out[0] - out[1:], atol=1e-5)


def test_fifty_new_tracks_are_the_only_ones_scored_next_time(world, spark):
    config, lake, sample = world["config"], world["lake"], world["sample"]
    ingest_and_extract(config, spark, lake, sample, sample.rows, "all.csv")
    before = scores_of(lake)
    result = score_catalogue.run(config, spark, lake)
    assert result.written == {m.label: ADDED for m in result.models}
    after = scores_of(lake)
    new = after[after["scored_at"] > before["scored_at"].max()]
    assert set(new["track_id"]) == {r.track_id for r in sample.rows[FIRST:]}
    assert not after.duplicated(["track_id", "model_name", "model_version"]).any()
    assert len(after) == 3 * (FIRST + ADDED)


def test_one_file_gets_the_batch_jobs_numbers(world):
    config, lake, sample = world["config"], world["lake"], world["sample"]
    models = world["first"].models
    stored = scores_of(lake)
    for track in sample.rows[:3]:
        single = score_file(sample.audio_dir / track.audio_file, models, ScoreSettings.from_config(config),
                            config.audio.min_seconds).iloc[0]
        batch = stored[stored["track_id"] == track.track_id].set_index("model_name")
        popular, artist, region = (batch.loc[m.name] for m in models)
        assert single["prob_popular"] == pytest.approx(popular["prob_popular"], abs=1e-6)
        assert single["percentile"] == pytest.approx(popular["percentile"], abs=1e-4)
        np.testing.assert_allclose(single["segment_importance"], popular["segment_importance"], atol=1e-6)
        assert [a["artist"] for a in single["similar_artists"]] == [a["artist"] for a in artist["similar_artists"]]
        np.testing.assert_allclose([a["prob"] for a in single["similar_artists"]],
                                   [a["prob"] for a in artist["similar_artists"]], atol=1e-6)
        assert single["region"] == region["region"]


def test_score_command_prints_one_files_scores_in_a_fresh_process(world):
    config, sample, popular = world["config"], world["sample"], world["first"].models[0]
    track = sample.rows[0]
    out = subprocess.run(
        [sys.executable, "-m", "hitpredict.cli", "score", str(sample.audio_dir / track.audio_file),
         "--model", f"{popular.name}/{popular.version}", "--set", f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
         "--set", "score.segment_seconds=1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    stored = scores_of(world["lake"])
    prob = stored[(stored["track_id"] == track.track_id) & (stored["model_name"] == popular.name)]["prob_popular"]
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("prob_popular"))
    assert float(line.split()[1]) == pytest.approx(float(prob.iloc[0]), abs=1e-6)
    assert "segment importance" in out.stdout


def test_a_model_trained_on_other_audio_parameters_is_refused(world, spark, tmp_path):
    config, sample = world["config"], world["sample"]
    other = config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(tmp_path / "lake5")}),
                                      "audio": config.audio.model_copy(update={"clip_seconds": 5.0})})
    lake = open_lake(other.lake, spark)
    ingest_and_extract(other, spark, lake, sample, sample.rows[:4], "four.csv")
    with pytest.raises(ScoreError, match=r"hitpredict-popular v\d+ was trained on other audio parameters than the "
                                         r"features of 4 track\(s\) to score: clip_seconds 6.0 \(model\) vs 5.0 "
                                         r"\(features\)"):
        score_catalogue.run(other, spark, lake)
    assert lake.read_columns("scores", ["track_id"]).num_rows == 0


def test_score_folder_uses_the_models_audio_parameters_not_the_config(world, spark, tmp_path):
    config, sample = world["config"], world["sample"]
    demos = tmp_path / "demos"
    demos.mkdir()
    for track in sample.rows[:3]:
        (demos / f"Demo Artist - {track.track_id}.mp3").write_bytes((sample.audio_dir / track.audio_file).read_bytes())
    (demos / "broken.mp3").write_bytes(b"not audio at all")
    other = config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(tmp_path / "demo-lake")}),
                                      "audio": config.audio.model_copy(update={"clip_seconds": 30.0})})
    lake = open_lake(other.lake, spark)
    result = score_folder.run(other, spark, lake, str(demos))
    assert [s.name for s in result.stages] == ["ingest_catalogue", "fetch_previews", "extract_features",
                                               "score_catalogue"]
    previews = lake.read_arrow("previews").to_pandas()
    assert len(previews) == 4 and previews.loc[previews["status"] == "failed", "error_kind"].tolist() == ["not_audio"]
    features = lake.read_arrow("features").to_pandas().set_index("track_id")
    assert len(features) == 3 and (features["status"] == "ok").all()
    assert {json.loads(p)["clip_seconds"] for p in features["audio_params"]} == {6.0}
    assert result.score.written == {m.label: 3 for m in result.score.models}
    popular = world["first"].models[0].name
    same_audio = dict(zip(*(world["lake"].read_arrow("features").to_pandas()[c] for c in ("audio_sha256", "track_id"))))
    stored = scores_of(world["lake"]).set_index(["model_name", "track_id"])
    demo = scores_of(lake).query("model_name == @popular")
    assert len(demo) == 3
    for track_id, prob in zip(demo["track_id"], demo["prob_popular"]):
        original = same_audio[features.loc[track_id, "audio_sha256"]]
        assert prob == pytest.approx(stored.loc[(popular, original), "prob_popular"], abs=1e-6)


def test_missing_version_and_corrupt_model_folder_fail_in_one_line(world, tmp_path):
    config, popular = world["config"], world["first"].models[0]
    with pytest.raises(BundleError, match=r"registered model 'hitpredict-popular' has no version 99 \(versions: "):
        resolve_model(ModelRef.parse("hitpredict-popular/99"), config.mlflow)
    with pytest.raises(BundleError, match="has no alias 'champion'"):
        resolve_model(ModelRef.parse("hitpredict-popular@champion"), config.mlflow)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json")
    (broken / "weights.h5").write_bytes(b"nope")
    with pytest.raises(BundleError, match=r"corrupt model description .*bundle.json: JSONDecodeError"):
        resolve_model(ModelRef.parse(str(broken)), config.mlflow)
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "bundle.json").write_text((Path(popular.bundle_dir) / "bundle.json").read_text())
    (torn / "weights.h5").write_bytes((Path(popular.bundle_dir) / "weights.h5").read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"corrupt model weights .*weights.h5"):
        resolve_model(ModelRef.parse(str(torn)), config.mlflow)
    for args in (["--model", str(torn)], ["--model", "hitpredict-popular/99"]):
        out = subprocess.run(
            [sys.executable, "-m", "hitpredict.cli", "score", str(world["sample"].audio_dir / "x.mp3"), *args,
             "--set", f"mlflow.tracking_uri={config.mlflow.tracking_uri}"],
            capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
        assert out.returncode == 2, out.stderr[-2000:]
        lines = [x for x in out.stderr.splitlines() if x.startswith("hitpredict: ")]
        assert len(lines) == 1 and ("corrupt model weights" in lines[0] or "has no version 99" in lines[0]), \
            out.stderr[-2000:]


def test_an_empty_features_table_fails_in_one_line(world, spark, tmp_path):
    config = world["config"]
    empty = config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(tmp_path / "empty")})})
    lake = open_lake(empty.lake, spark)
    with pytest.raises(ScoreError, match=r"nothing to score: no track has ok features in .*features \(0 features "
                                         r"rows\); run fetch_previews and extract_features first"):
        score_catalogue.run(empty, spark, lake)


# --------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def report(world):
    from hitpredict.scoring.report import write_report

    return write_report(world["lake"], world["root"] / "report", top=50, strips=5, segment_seconds=1.0)


def test_report_csv_lists_every_scored_track_best_first(report, world):
    import pandas as pd

    table = pd.read_csv(report.csv)
    assert len(table) == FIRST + ADDED and table["rank"].tolist() == list(range(1, FIRST + ADDED + 1))
    assert table["percentile"].is_monotonic_decreasing
    assert table["title"].notna().all() and table["region"].notna().all()
    first = table.iloc[0]
    assert len(first["segment_importance"].split(";")) == 6 and len(first["similar_artists"].split("; ")) == 3
    assert {p.name for p in report.images} == {"score_histogram.png", "percentile_curve.png",
                                              *(f"strip_{i:02d}.png" for i in range(1, 6))}


def test_report_opens_in_headless_chromium_with_its_plots_and_top_50(report, tmp_path):
    from PIL import Image

    from hitpredict.testing.browser import open_page

    view = open_page(report.html, tmp_path / "report.png")
    assert view.console == []
    body = re.search(r"<body[^>]*>", view.dom).group(0)
    assert 'data-images="7"' in body and 'data-images-loaded="7"' in body, body
    table = re.search(r'<table id="top-tracks">.*?</table>', view.dom, re.S).group(0)
    assert table.count("<tr>") == 1 + 50   # header + 50 tracks
    assert 'alt="score histogram"' in view.dom
    shot = np.asarray(Image.open(view.screenshot).convert("RGB")).reshape(-1, 3)
    bars = np.all(np.abs(shot.astype(int) - (59, 110, 168)) <= 6, axis=1)   # the histogram's bar colour
    assert bars.sum() > 2000, bars.sum()


def test_console_errors_of_a_page_are_caught(tmp_path):
    """The check above can fail: a page with a script error reports it."""
    from hitpredict.testing.browser import open_page

    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>x</p><script>notDefined();</script></body></html>")
    view = open_page(page, tmp_path / "broken.png", height=200)
    assert any("notDefined is not defined" in line for line in view.console), view.console


def test_credentials_in_the_config_reach_no_mlflow_param_artifact_or_model(world):
    root = world["root"]
    assert world["config"].secrets.spotify_client_secret.get_secret_value() == SECRET
    files = [root / "mlflow.db"] + [p for folder in ("mlartifacts", "models", "report")
                                    for p in (root / folder).rglob("*") if p.is_file()]
    with sqlite3.connect(root / "mlflow.db") as db:   # the runs' params live in the tracking database
        assert db.execute("SELECT COUNT(*) FROM params WHERE key = 'family'").fetchone()[0] >= 3
    assert any(p.name == "bundle.json" for p in files) and any(p.name == "MLmodel" for p in files)
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, f"secret in {leaked}"
