"""The notebooks in notebooks/: valid Databricks source files, and each runs top to bottom as plain
Python on a sample project (the demo's stages on a small generated catalogue, then a second model
family) and shows what it says it shows."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
NAMES = ["01_catalogue", "02_features", "03_model_results", "04_report"]
SEPARATOR = "# COMMAND ----------"
SECRET = "notebook-s3cr3t-Zq93-never-shown"   # in the environment of every notebook run here
TRACKS, ARTISTS = 60, 20

#: The sample project's config: paths relative to its folder, as `hitpredict demo` leaves them.
PROJECT_CONFIG = f"""\
spark:
  master: "local[2]"
  driver_memory: 1g
  shuffle_partitions: 4
  conf:
    spark.ui.enabled: "false"
    spark.driver.host: "127.0.0.1"
    spark.driver.bindAddress: "127.0.0.1"
audio: {{clip_seconds: 6, min_seconds: 1}}
sample: {{tracks: {TRACKS}, artists: {ARTISTS}, seconds: 6, preview_port: 0}}
train:
  num_proc: 1
  epochs: 1
  bootstrap_rounds: 50
  reference_rows: 20
  reference_points: 11
  augment: {{crop_frames: null}}
score: {{segment_seconds: 1, top_k_artists: 3, report_top: 20, report_strips: 3}}
demo: {{models: {{popular: cnn, artist: mlp, region: mlp}}}}
embedding: {{enabled: false}}
"""

#: The demo (popular cnn, artist mlp, region mlp, scoring, report), then a second family for popular.
BUILD = """\
import sys
from hitpredict.cli import main
sys.exit(main(["demo", "--conf", "hitpredict.yaml"])
         or main(["train_model", "--conf", "hitpredict.yaml", "--family", "logreg", "--num-proc", "1"]))
"""


def environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITPREDICT")}
    env.update(HITPREDICT_CONF=str(project / "hitpredict.yaml"), MPLBACKEND="Agg", TF_USE_LEGACY_KERAS="1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, SPOTIPY_CLIENT_ID="nb-client",
               SPOTIPY_CLIENT_SECRET=SECRET)
    return env


# --------------------------------------------------------------------------- the source format


def cells(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.split(f"\n\n{SEPARATOR}\n\n")


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_databricks_source_that_python_compiles(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# Databricks notebook source"
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    # Every separator stands alone between blank lines, as Databricks exports them.
    for i, line in enumerate(lines):
        if line.startswith("# COMMAND"):
            assert line == SEPARATOR and lines[i - 1] == "" and lines[i + 1] == "", f"{path.name}:{i + 1}"
    parts = cells(path)
    assert len(parts) >= 5 and sum(p.count(SEPARATOR) for p in parts) == 0
    parts[0] = parts[0].split("\n", 1)[1]   # the header line belongs to no cell
    for number, cell in enumerate(parts, start=1):
        body = [line for line in cell.strip("\n").splitlines()]
        assert body and body[0].strip(), f"{path.name}: cell {number} is empty"
        magic = [line for line in body if line.startswith("# MAGIC")]
        if magic:   # a magic cell (%md, %pip, ...) is magic lines only, starting with its command
            assert re.match(r"# MAGIC %(md|pip|sh|sql|run)\b", body[0]), f"{path.name}: cell {number}: {body[0]}"
            assert all(line == "# MAGIC" or line.startswith("# MAGIC ") for line in body), f"{path.name}: {number}"
    assert sum(1 for c in parts if c.lstrip().startswith("# MAGIC %md")) >= 2   # each explains itself
    compile(text, str(path), "exec")


def test_every_notebook_shares_one_setup_cell():
    """The setup (config, output folder, display fallback) is the same cell everywhere: fixed once, fixed in all."""
    setups = {p.stem: [c for c in cells(p) if c.startswith("# Setup")] for p in NOTEBOOKS}
    assert all(len(found) == 1 for found in setups.values()), {k: len(v) for k, v in setups.items()}
    assert len({found[0] for found in setups.values()}) == 1
    for p in NOTEBOOKS:
        assert f'NOTEBOOK = "{p.stem}"' in p.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- each notebook, top to bottom


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder where `hitpredict demo` ran on a small sample (three models trained, the catalogue scored and
    reported) and a logreg `popular` model was trained beside the demo's CNN: what a user has before opening
    the notebooks."""
    folder = tmp_path_factory.mktemp("notebook-project")
    (folder / "hitpredict.yaml").write_text(PROJECT_CONFIG)
    done = subprocess.run([sys.executable, "-c", BUILD], cwd=folder, env=environment(folder), capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return folder


@pytest.fixture(scope="module")
def ran(project) -> dict[str, subprocess.CompletedProcess]:
    """Each notebook run as `python notebooks/NN.py` in the project folder, all four at once."""
    env = environment(project)
    started = {p.stem: subprocess.Popen([sys.executable, str(p)], cwd=project, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for p in NOTEBOOKS}
    results = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


def finished(ran, name: str) -> str:
    run = ran[name]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run.stdout


def figures(project: Path, name: str, stdout: str) -> set[str]:
    """The PNGs the notebook announced (`figure: PATH`), each checked to be a real, non-trivial image."""
    from PIL import Image

    found = set()
    for line in re.findall(r"^figure: (.+)$", stdout, re.M):
        path = project / line if not os.path.isabs(line) else Path(line)
        assert path.is_file(), line
        assert path.is_relative_to(project / "data" / "notebooks" / name), path
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200, (path, image.size)
            assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 8, path  # not blank
        found.add(path.name)
    return found


def test_catalogue_notebook_counts_tracks_artists_and_previews(ran, project):
    out = finished(ran, "01_catalogue")
    assert f"catalogue: {TRACKS} tracks by {ARTISTS} artists from 1 source(s); {TRACKS} with a popularity" in out
    assert f"previews: {TRACKS} ok of {TRACKS} tracks (100.0%)" in out
    assert "failed fetches by kind: {}" in out
    assert re.search(r"^tracks per artist: median \d+(\.\d+)?, max \d+ \(.+\)$", out, re.M), out
    assert re.search(r"^\s*127\.0\.0\.1\s+" + str(TRACKS) + r"$", out, re.M), out   # the demo's preview server
    assert figures(project, "01_catalogue", out) == {"popularity.png", "tracks_per_artist.png",
                                                     "preview_coverage.png"}


def test_features_notebook_draws_spectrograms_and_correlations(ran, project):
    out = finished(ran, "02_features")
    assert f"features: {TRACKS} ok of {TRACKS} tracks" in out
    # 6 s windows at 22,050 Hz with hop 512: 259 frames; 4 tracks (2 most, 2 least popular).
    assert "spectrograms: 4 tracks, 128 mel bands x 259 frames (6.0 s at 22050 Hz)" in out
    assert f"summary features: {TRACKS} tracks x 62 values" in out
    assert re.search(r"^summary features most correlated with popularity \(Spearman\): (\w+ [+-]\d\.\d\d(, )?){5}$",
                     out, re.M), out
    assert figures(project, "02_features", out) == {"spectrograms.png", "summary_correlation.png",
                                                    "summary_vs_popularity.png"}


def newest_evaluations(project: Path) -> dict[tuple[str, str], dict]:
    """(target, family) -> metrics.json of the newest local run (train.output_dir), read without MLflow."""
    newest = {}
    for folder in sorted((project / "data" / "models").iterdir()):   # <target>-<family>-<UTC time>: sorted by time
        target, family, _ = folder.name.split("-", 2)
        newest[(target, family)] = json.loads((folder / "evaluation" / "metrics.json").read_text())
    return newest


def test_model_results_notebook_compares_families_from_mlflow(ran, project):
    out = finished(ran, "03_model_results")
    assert "4 finished runs in experiment 'hitpredict'" in out
    evaluations = newest_evaluations(project)
    assert set(evaluations) == {("popular", "cnn"), ("popular", "logreg"), ("artist", "mlp"), ("region", "mlp")}
    assert f"{len(evaluations)} models: newest run of each target and family" in out
    for (target, family), metrics in evaluations.items():   # the table row of each, as training measured it
        key, label = {"binary": ("roc_auc", "ROC-AUC"), "multiclass": ("accuracy", "accuracy")}[metrics["task"]]
        row = rf"^{target}\s+{family}\s+{label}\s+{metrics['model'][key]:.3f}\s.*\s{metrics['dummy'][key]:.3f}\s+" \
              rf"{metrics['model']['n']}\s+{len(metrics['history']['loss'])}$"
        assert re.search(row, out, re.M), (row, out)
    assert figures(project, "03_model_results", out) == {
        "test_metrics.png", "roc.png", "calibration_popular_cnn.png", "calibration_popular_logreg.png",
        *(f"confusion_{t}_{f}.png" for t, f in evaluations)}


def test_report_notebook_shows_top_tracks_percentiles_and_explanations(ran, project):
    out = finished(ran, "04_report")
    assert re.search(rf"^{TRACKS} scored tracks; models: hitpredict-artist v1, hitpredict-popular v1, "
                     rf"hitpredict-region v1$", out, re.M), out
    # The same ranking as the demo's own report.
    demo = pd.read_csv(project / "data" / "report" / "scores.csv")
    mine = pd.read_csv(project / "data" / "notebooks" / "04_report" / "report" / "scores.csv")
    assert mine["track_id"].tolist() == demo["track_id"].tolist()
    best = demo.iloc[0]
    assert f"#1 {best['title']} by {best['primary_artist']}: P(popular) {best['prob_popular']:.3f}, " \
           f"percentile {best['percentile']:.1f}" in out
    quantiles = ", ".join(rf"p{q} [\d.]+" for q in (10, 25, 50, 75, 90, 95, 99))
    assert re.search(rf"^P\(popular\) over {TRACKS} tracks: {quantiles}$", out, re.M), out
    assert "explained: 20 of the top 20 tracks" in out and "importance strips: 3" in out
    assert re.search(r"^sounds most like: .+ \d+", out, re.M) and re.search(r"^regional style: .+ \d+", out, re.M)
    assert figures(project, "04_report", out) == {
        "score_histogram.png", "percentile_curve.png", "strip_01.png", "strip_02.png", "strip_03.png",
        "artists_and_regions.png"}


def test_no_notebook_shows_a_secret(ran, project):
    for name, run in ran.items():
        assert SECRET not in run.stdout and SECRET not in run.stderr, name
    written = [p for p in (project / "data" / "notebooks").rglob("*") if p.is_file()]
    assert written and not [str(p) for p in written if SECRET.encode() in p.read_bytes()]
