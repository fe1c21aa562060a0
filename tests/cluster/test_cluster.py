"""Every stage spark-submitted to a standalone cluster (a master and two one-core workers on
127.0.0.1) with the built wheel, and its tables compared with a local-mode run of the same catalogue.

The drivers, executors and Horovod processes run a throwaway python that cannot see the repository's
editable install, so hitpredict can only come from the shipped wheel; the probe test shows where each
kind of process imported it from. Runs as ``make cluster-test`` (pytest.ini keeps it out of ``make test``).
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from standalone import spark_submit

from hitpredict.config import load_config
from hitpredict.lake import DeltaRsLake
from hitpredict.preview_server import PreviewServer
from hitpredict.stages import build_dataset, extract_features, fetch_previews, ingest_catalogue, score_catalogue
from hitpredict.synth.catalogue import ensure_sample_catalogue, write_catalogue_csv

REPO = Path(__file__).resolve().parents[2]

#: The sample and training settings: small enough for a few minutes on two shared cores.
TRACKS, ARTISTS, SECONDS = 60, 12, 10.0
FAMILY, EPOCHS = "cnn", 2

#: What every spark-submit adds: one 1-core executor per worker, loopback driver, no UI.
SUBMIT_CONF = {
    "spark.executor.cores": "1",
    "spark.cores.max": "2",
    "spark.executor.memory": "1g",
    "spark.driver.memory": "2g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
}

STAGES = ["ingest_catalogue", "fetch_previews", "extract_features", "build_dataset", "train_model",
          "score_catalogue", "report"]


def write_config(root: Path, lake_root: Path) -> Path:
    """The run's YAML: the embedded defaults plus a tmp lake (delta-rs), models, MLflow and report."""
    text = f"""\
spark:
  master: null                 # spark-submit's --master
  shuffle_partitions: 4
lake:
  engine: delta-rs
  root: {lake_root}
audio:
  clip_seconds: {SECONDS:g}
  min_seconds: 1
fetch:
  allow_hosts: ["127.0.0.1"]   # the loopback preview server
train:
  family: {FAMILY}
  num_proc: 2
  epochs: {EPOCHS}
  patience: 2
  bootstrap_rounds: 50
  output_dir: {root / 'models'}
  petastorm_cache: file://{root / 'petastorm'}
mlflow:
  tracking_uri: sqlite:///{root / 'mlflow.db'}
score:
  report_dir: {root / 'report'}
sample:
  dir: {root / 'sample'}
"""
    path = root / "cluster.yaml"
    path.write_text(text)
    return path


def table(lake_root: Path, name: str) -> pa.Table:
    return DeltaTable(str(lake_root / name)).to_pyarrow_table()


def by_key(t: pa.Table, key: tuple[str, ...]) -> dict[tuple, dict]:
    rows = t.to_pylist()
    out = {tuple(r[k] for k in key): r for r in rows}
    assert len(out) == len(rows), f"duplicate keys {key}"
    return out


def test_shipped_wheel_is_what_executors_and_horovod_processes_import(cluster, cluster_env, cluster_root,
                                                                      shipped_wheel):
    """Driver, Python workers and Horovod processes (started as train_model starts them) all import
    hitpredict from the shipped wheel: the driver from the file spark-submit was given, the others
    from the copy Spark put in their executor's folder, never from the repository."""
    done = spark_submit("probe", cluster.url, str(REPO / "tests" / "cluster" / "probe_wheel.py"), [], cluster_env,
                        cluster_root, py_files=[str(shipped_wheel)], conf=SUBMIT_CONF, timeout_s=600,
                        log_dir=cluster_root / "submit-logs")
    assert done.returncode == 0, done.output[-5000:]
    line = [ln for ln in done.output.splitlines() if ln.startswith("PROBE ")]
    assert line, done.output[-5000:]
    probe = json.loads(line[-1][len("PROBE "):])
    assert probe["driver"]["hitpredict"] == str(shipped_wheel / "hitpredict" / "__init__.py")
    workers = [str(d) for d in cluster.worker_dirs()]
    for kind in ("tasks", "horovod"):
        procs = probe[kind]
        assert len(procs) == 2, probe
        for proc in procs:
            found = Path(proc["cwd"], proc["hitpredict"])   # a task's path may be relative to its folder
            assert found == Path(proc["cwd"]) / shipped_wheel.name / "hitpredict" / "__init__.py", (kind, proc)
            assert any(proc["cwd"].startswith(w + "/") for w in workers), (kind, proc)
            assert proc["python"] == cluster_env["PYSPARK_PYTHON"]
            assert proc["deps"] == probe["driver"]["deps"]          # pyarrow, deltalake, numpy still import
        # one process on each worker
        assert len({next(w for w in workers if p["cwd"].startswith(w + "/")) for p in procs}) == 2, (kind, procs)
    assert [p["rank"] for p in probe["horovod"]] == [0, 1]


@pytest.fixture()
def previews(cluster_root):
    """The sample catalogue, served by a loopback preview server for the test's duration."""
    sample = ensure_sample_catalogue(cluster_root / "sample", TRACKS, ARTISTS, seed=7, seconds=SECONDS)
    server = PreviewServer(directory=sample.audio_dir).start()
    try:
        csv = write_catalogue_csv(sample.rows, cluster_root / "sample" / "catalogue_previews.csv", sample.audio_dir,
                                  preview_base_url=server.base_url, include_audio_uri=False)
        yield csv
    finally:
        server.stop()


def test_every_stage_on_the_cluster_equals_local_mode(cluster, cluster_env, cluster_root, shipped_wheel, previews,
                                                      spark):
    cluster_lake, local_lake = cluster_root / "lake-cluster", cluster_root / "lake-local"
    conf = write_config(cluster_root, cluster_lake)
    arguments = {"ingest_catalogue": [str(previews)], "train_model": ["--family", FAMILY, "--num-proc", "2"],
                 "report": ["--out", str(cluster_root / "report")]}
    started = time.monotonic()
    times: dict[str, float] = {}
    for stage in STAGES:
        done = spark_submit(stage, cluster.url, str(REPO / "jobs" / f"{stage}.py"),
                            ["--conf", str(conf), *arguments.get(stage, [])], cluster_env, cluster_root,
                            py_files=[str(shipped_wheel)], conf=SUBMIT_CONF, timeout_s=900,
                            log_dir=cluster_root / "submit-logs")
        times[stage] = done.seconds
        assert done.returncode == 0, f"{stage} failed on the cluster (exit {done.returncode}):\n{done.output[-6000:]}"
    cluster_seconds = time.monotonic() - started
    with open(cluster_root / "report" / "scores.csv", newline="") as fh:
        report_rows = list(csv.DictReader(fh))
    assert (cluster_root / "report" / "report.html").is_file() and len(report_rows) == TRACKS

    # The same catalogue in Spark local mode (this process's local[2] session), scored with the
    # model the cluster trained (the registry's latest hitpredict-popular version).
    started = time.monotonic()
    config = load_config(conf, [f"lake.root={local_lake}"], environ={})
    lake = DeltaRsLake(config.lake, spark)
    for name, run in (("ingest_catalogue", lambda: ingest_catalogue.run(config, spark, lake, str(previews))),
                      ("fetch_previews", lambda: fetch_previews.run(config, spark, lake)),
                      ("extract_features", lambda: extract_features.run(config, spark, lake)),
                      ("build_dataset", lambda: build_dataset.run(config, spark, lake))):
        report = run()
        assert report.failed_total == 0 and report.ok == TRACKS, (name, report)
    scored = score_catalogue.run(config, spark, lake)
    assert scored.report.ok == TRACKS, scored.report
    local_seconds = time.monotonic() - started

    results = compare_lakes(cluster_lake, local_lake)
    lines = [f"cluster run (7 spark-submits to {cluster.url}, 2 one-core workers): {cluster_seconds:.1f}s",
             *(f"  {stage:<17} {seconds:6.1f}s" for stage, seconds in times.items()),
             f"local-mode run (ingest..build_dataset + score with the cluster's model, in-process): "
             f"{local_seconds:.1f}s",
             *(f"  {line}" for line in results)]
    print("\n" + "\n".join(lines))
    (cluster_root / "summary.txt").write_text("\n".join(lines) + "\n")


def compare_lakes(cluster_lake: Path, local_lake: Path) -> list[str]:
    """Assert the two lakes hold the same rows (keys, bit-identical features, scores within 1e-6);
    one line per table saying what was compared."""
    said = []
    for name, key in (("catalogue", ("track_id",)), ("previews", ("track_id",)), ("features", ("track_id",))):
        a, b = by_key(table(cluster_lake, name), key), by_key(table(local_lake, name), key)
        assert a.keys() == b.keys(), name
        assert len(a) == TRACKS
        said.append(f"{name}: same {len(a)} keys")
    for name, cols in (("previews", ("status", "sha256", "size_bytes", "url")),
                       ("features", ("status", "audio_sha256", "mel", "mel_shape", "summary", "audio_params",
                                     "duration_s"))):
        a, b = by_key(table(cluster_lake, name), ("track_id",)), by_key(table(local_lake, name), ("track_id",))
        for k in a:
            for col in cols:
                assert a[k][col] == b[k][col], (name, k, col)
        said[-1 if name == "features" else 1] += f", identical {', '.join(cols)}"
    features = by_key(table(cluster_lake, "features"), ("track_id",))
    assert all(r["status"] == "ok" and r["mel"] for r in features.values())
    summary_a = pa.array([r["summary"] for r in features.values()], pa.list_(pa.float32()))
    local_features = by_key(table(local_lake, "features"), ("track_id",))
    summary_b = pa.array([local_features[k]["summary"] for k in features], pa.list_(pa.float32()))
    assert summary_a.flatten().to_numpy().tobytes() == summary_b.flatten().to_numpy().tobytes()
    said[2] += " (mel and summary bytes bit-identical)"

    datasets_a, datasets_b = table(cluster_lake, "datasets"), table(local_lake, "datasets")
    assert datasets_a.column("dataset_id").to_pylist() == datasets_b.column("dataset_id").to_pylist()
    examples_a = by_key(table(cluster_lake, "examples"), ("dataset_id", "track_id"))
    examples_b = by_key(table(local_lake, "examples"), ("dataset_id", "track_id"))
    assert examples_a.keys() == examples_b.keys() and len(examples_a) == TRACKS
    for k in examples_a:
        for col in ("split", "label", "label_name", "audio_sha256"):   # examples hold keys; features the mel
            assert examples_a[k][col] == examples_b[k][col], ("examples", k, col)
    said.append(f"datasets: same id {datasets_a.column('dataset_id')[0]}; examples: same {len(examples_a)} keys, "
                f"identical split, label, label_name, audio_sha256")

    scores_a = by_key(table(cluster_lake, "scores"), ("model_name", "model_version", "track_id"))
    scores_b = by_key(table(local_lake, "scores"), ("model_name", "model_version", "track_id"))
    assert scores_a.keys() == scores_b.keys() and len(scores_a) == TRACKS
    worst = 0.0
    for k in scores_a:
        pa_, pb = scores_a[k]["prob_popular"], scores_b[k]["prob_popular"]
        assert pa_ is not None and pb is not None and math.isfinite(pa_)
        worst = max(worst, abs(pa_ - pb))
        sa, sb = scores_a[k]["segment_importance"] or [], scores_b[k]["segment_importance"] or []
        assert len(sa) == len(sb)
        worst = max([worst, *(abs(x - y) for x, y in zip(sa, sb))])
        for col in ("percentile",):
            if scores_a[k][col] is not None or scores_b[k][col] is not None:
                worst = max(worst, abs(scores_a[k][col] - scores_b[k][col]))
    assert worst <= 1e-6, worst
    said.append(f"scores: same {len(scores_a)} keys ({next(iter(scores_a))[0]} v{next(iter(scores_a))[1]}), "
                f"prob_popular/percentile/segment_importance max |diff| {worst:.3g} (<= 1e-6)")
    return said
