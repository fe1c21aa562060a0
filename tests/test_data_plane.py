"""The data plane end to end: fault mix, SSRF, bad audio corpus, and crash + rerun."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from hitpredict.config import load_config
from hitpredict.lake import DeltaRsLake
from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue
from hitpredict.synth.music import TrackStyle, render, write_audio
from hitpredict.preview_server import Fault, PreviewServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mp3_pool(tmp_path_factory):
    """Ten distinct 6-second MP3s, served under many names."""
    folder = tmp_path_factory.mktemp("pool")
    pool = []
    for i in range(10):
        path = folder / f"{i}.mp3"
        write_audio(path, render(TrackStyle(seconds=6.0, seed=i, brightness=0.1 + 0.08 * i, intro_bars=0)), 22050)
        pool.append(path.read_bytes())
    return pool


def write_csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["track_id", "preview_url", "audio_uri"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"audio_uri": "", "preview_url": "", **row})
    return str(path)


def fetch_config(tmp_path, **extra):
    settings = {
        "lake.root": tmp_path / "lakehouse", "fetch.allow_hosts": "[127.0.0.1]", "fetch.max_retries": 2,
        "fetch.backoff_base_s": 0.05, "fetch.backoff_max_s": 2, "fetch.read_timeout_s": 0.25,
        "fetch.connect_timeout_s": 2, "fetch.total_timeout_s": 5, "fetch.max_body_bytes": 2 * 1024 * 1024,
        "fetch.max_concurrency": 32, "fetch.per_host_concurrency": 32, "fetch.commit_every": 200,
        "fetch.max_runs_per_track": 3, "features.commit_every": 20, **extra,
    }
    # embeddings off: this is the data plane's fault test (tests/test_embeddings.py runs the stage with them)
    return load_config(None, [f"{k}={v}" for k, v in settings.items()] + ["embedding.enabled=false"], environ={})


def test_fault_mix_settles_every_track_within_three_runs(spark, tmp_path, mp3_pool):
    n = 500
    files = {f"{i:04d}.mp3": mp3_pool[i % len(mp3_pool)] for i in range(n)}
    expected: dict[str, str | None] = {}  # track -> expected error kind (None: ok)
    with PreviewServer(files=files) as server:
        for i in range(n):
            name, kind = f"{i:04d}.mp3", None
            if i < 20:
                server.set_fault(name, Fault("status", status=500 + 3 * (i % 2), times=1))
            elif i < 25:
                server.set_fault(name, Fault("status", status=503, times=6))  # outlasts two runs' retries
            elif i < 50:
                server.set_fault(name, Fault("retry_after", retry_after=1, times=1))
            elif i < 60:
                server.set_fault(name, Fault("slow", delay_s=3, times=1))
            elif i < 70:
                server.set_fault(name, Fault("truncate", times=1))
            elif i < 75:
                server.set_fault(name, Fault("html")); kind = "not_audio"
            elif i < 80:
                server.set_fault(name, Fault("oversize", size=3 * 1024 * 1024)); kind = "too_large"
            elif i < 90:
                server.set_fault(name, Fault("status", status=404)); kind = "http_404"
            expected[f"t{i:04d}"] = kind
        config = fetch_config(tmp_path)
        lake = DeltaRsLake(config.lake, spark)
        rows = [{"track_id": f"t{i:04d}", "preview_url": server.url(f"{i:04d}.mp3")} for i in range(n)]
        ingest_catalogue.run(config, spark, lake, write_csv(tmp_path / "cat.csv", rows))

        reports = []
        for _ in range(3):
            reports.append(fetch_previews.run(config, spark, lake))
            if not fetch_previews.pending_tracks(lake).shape[0]:
                break
        hits_404 = server.hits["0080.mp3"]

    previews = lake.read_arrow("previews").to_pylist()
    by_track = Counter(r["track_id"] for r in previews)
    assert set(by_track) == set(expected) and set(by_track.values()) == {1}  # exactly one row each
    assert len(reports) == 3 and reports[0].notes.startswith("retry next run: http_503 5")
    for row in previews:
        want = expected[row["track_id"]]
        if want is None:
            assert row["status"] == "ok", row
            assert row["audio"] == files[f"{row['track_id'][1:]}.mp3"]
        else:
            assert (row["status"], row["error_kind"]) == ("failed", want)
    assert hits_404 == 1  # a permanent failure is asked for once, in one run only
    assert sum(r.ok for r in reports) == 500 - 20


def test_non_public_addresses_are_refused_at_the_stage(spark, tmp_path, mp3_pool):
    with PreviewServer(files={"ok.mp3": mp3_pool[0]}) as server:
        server.set_fault("hop.mp3", Fault("redirect", location="http://10.0.0.1/x.mp3"))
        port = server.base_url.rsplit(":", 1)[1]
        urls = {
            "loop2": f"http://127.0.0.2:{port}/ok.mp3", "private": "http://10.0.0.1/x.mp3",
            "metadata": "http://169.254.169.254/latest/meta-data/", "file": "file:///etc/passwd",
            "redirect": server.url("hop.mp3"), "good": server.url("ok.mp3"),
        }
        config = fetch_config(tmp_path)
        lake = DeltaRsLake(config.lake, spark)
        ingest_catalogue.run(config, spark, lake, write_csv(
            tmp_path / "c.csv", [{"track_id": k, "preview_url": v} for k, v in urls.items()]))
        report = fetch_previews.run(config, spark, lake)
    outcome = {r["track_id"]: (r["status"], r["error_kind"]) for r in lake.read_arrow("previews").to_pylist()}
    assert outcome.pop("good") == ("ok", None)
    assert outcome == {k: ("failed", "blocked_address") for k in outcome} and len(outcome) == 5
    assert report.failed == {"blocked_address": 5}


def test_bad_audio_corpus_ends_with_the_right_status(spark, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    full = tmp_path / "full.mp3"
    write_audio(full, render(TrackStyle(seconds=30.0, seed=9)), 22050)
    corpus = {
        "zero_bytes.mp3": (b"", "empty"),
        "truncated.mp3": (full.read_bytes()[: len(full.read_bytes()) * 2 // 5], "ok"),
        "random_bytes.mp3": (np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
                             "not_audio"),
        "page.mp3": (b"<!doctype html><html><body>gone</body></html>" * 20, "not_audio"),
        "id3_only.mp3": (b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128), "not_audio"),
    }
    for name, data_kind in corpus.items():
        (folder / name).write_bytes(data_kind[0])
    generated = {
        "one_second.mp3": (dict(seconds=1.0), 22050, 1, "MP3", "too_short"),
        "ten_minutes.mp3": (dict(seconds=600.0), 22050, 1, "MP3", "ok"),
        "silence.wav": (dict(seconds=10.0), 22050, 1, "WAV", "silent"),
        "mono.mp3": (dict(seconds=12.0), 44100, 1, "MP3", "ok"),
        "stereo.mp3": (dict(seconds=12.0), 44100, 2, "MP3", "ok"),
        "rate_8k.mp3": (dict(seconds=12.0), 8000, 1, "MP3", "ok"),
        "rate_48k.flac": (dict(seconds=12.0), 48000, 2, "FLAC", "ok"),
        "aac.m4a": (dict(seconds=12.0), 44100, 2, "M4A", "ok"),
        "vorbis.ogg": (dict(seconds=12.0), 44100, 2, "OGG", "ok"),
    }
    for name, (style, rate, channels, fmt, kind) in generated.items():
        samples = render(TrackStyle(seed=3, **style), rate)
        if name.startswith("silence"):
            samples = np.zeros_like(samples)
        write_audio(folder / name, samples, rate, fmt, channels)
        corpus[name] = (b"", kind)
    assert len(corpus) >= 14

    # Local files get the HTTP size cap (issue 12): the product's default 10 MB holds the ten-minute MP3.
    config = fetch_config(tmp_path, **{"fetch.max_body_bytes": 10 * 1024 * 1024})
    lake = DeltaRsLake(config.lake, spark)
    ingest_catalogue.run(config, spark, lake, str(folder))
    fetch_previews.run(config, spark, lake)
    report = extract_features.run(config, spark, lake)

    names = {r.track_id: Path(r.audio_uri).name for r in lake.read("catalogue").collect()}
    previews = {r["track_id"]: r for r in lake.read_arrow("previews").to_pylist()}
    features = {r["track_id"]: r for r in lake.read_arrow("features").to_pylist()}
    outcome = {}
    for track_id, name in names.items():
        p = previews[track_id]
        outcome[name] = p["error_kind"] if p["status"] != "ok" else (features[track_id]["error_kind"] or "ok")
    assert outcome == {name: kind for name, (_, kind) in corpus.items()}
    durations = {names[t]: f["duration_s"] for t, f in features.items() if f["status"] == "ok"}
    assert durations["ten_minutes.mp3"] == pytest.approx(600, abs=0.1)
    assert 10 < durations["truncated.mp3"] < 14
    assert report.failed == {"too_short": 1, "silent": 1}


def _cli(config_args: list[str], stage: str) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.Popen(
        [sys.executable, "-m", "hitpredict.cli", stage, *config_args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _kill_after_commits(proc: subprocess.Popen, table_path: str, versions: int, timeout: float = 120) -> int:
    """SIGKILL the job (and its JVM) once ``table_path`` has reached ``versions``; return that version."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"job ended before it could be killed:\n{proc.stdout.read().decode()[-3000:]}")
        try:
            version = DeltaTable(table_path).version()
            if version >= versions:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return version
        except Exception:  # noqa: BLE001 - the table may not exist yet
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the job never reached the commit to kill it at")


@pytest.mark.slow
def test_killed_fetch_and_features_jobs_rerun_to_a_clean_runs_tables(spark, tmp_path, mp3_pool):
    n = 160
    files = {f"{i:04d}.mp3": mp3_pool[i % len(mp3_pool)] for i in range(n)}
    with PreviewServer(files=files, latency_s=0.05) as server:
        rows = [{"track_id": f"t{i:04d}", "preview_url": server.url(f"{i:04d}.mp3")} for i in range(n)]
        catalogue_csv = write_csv(tmp_path / "cat.csv", rows)
        sets = {"fetch.commit_every": 16, "fetch.max_concurrency": 2, "fetch.per_host_concurrency": 2}

        clean_cfg = fetch_config(tmp_path / "clean", **sets)
        clean = DeltaRsLake(clean_cfg.lake, spark)
        ingest_catalogue.run(clean_cfg, spark, clean, catalogue_csv)
        fetch_previews.run(clean_cfg, spark, clean)
        extract_features.run(clean_cfg, spark, clean)

        crash_root = tmp_path / "crash"
        crash_cfg = fetch_config(crash_root, **sets)
        crash = DeltaRsLake(crash_cfg.lake, spark)
        ingest_catalogue.run(crash_cfg, spark, crash, catalogue_csv)
        args = ["--set", f"lake.root={crash_root / 'lakehouse'}", "--set", "spark.master=local[2]",
                "--set", "spark.driver_memory=1g", "--set", "fetch.allow_hosts=[127.0.0.1]",
                "--set", "fetch.commit_every=16", "--set", "fetch.max_concurrency=2",
                "--set", "fetch.per_host_concurrency=2", "--set", "features.commit_every=20"]

        killed_at = _kill_after_commits(_cli(args, "fetch_previews"), crash.location("previews"), 2)
        assert 0 < len(crash.read_arrow("previews")) < n  # really killed mid-way
        rerun = _cli(args, "fetch_previews")
        assert rerun.wait(timeout=300) == 0, rerun.stdout.read().decode()[-3000:]
        assert DeltaTable(crash.location("previews")).version() > killed_at

    killed_at = _kill_after_commits(_cli(args, "extract_features"), crash.location("features"), 2)
    assert 0 < len(crash.read_arrow("features")) < n
    rerun = _cli(args, "extract_features")
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read().decode()[-3000:]

    for table, key, payload in (("previews", "track_id", "audio"), ("features", "track_id", "mel")):
        got = crash.read_arrow(table).to_pylist()
        want = clean.read_arrow(table).to_pylist()
        assert len({r[key] for r in got}) == len(got) == n  # same keys, no duplicates
        assert {r[key]: r[payload] for r in got} == {r[key]: r[payload] for r in want}  # same bytes
