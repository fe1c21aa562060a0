"""The whole pipeline at two catalogue sizes: CPU per track, peak memory, storage and commit times.

For each size (``--sizes``, default 1,000 and 10,000 tracks) a generated catalogue CSV, one row per
track with an ``audio_uri`` http URL on a loopback server this script starts (127.0.0.1, a process of
its own, as a CDN is not in the Spark driver), goes through hitpredict's own stages on ``local[2]``,
in a fresh lake under ``--work``: ``ingest_catalogue`` -> ``fetch_previews`` -> ``extract_features``
-> ``score_catalogue`` (one model bundle of the configured family, ``train.family``, at the full input
size, weights freshly initialised as in ``bench/score.py``: speed does not depend on their values;
explanations on unless ``--no-explain``), then ``build_dataset`` (popular target) so that the
``examples`` and ``datasets`` tables exist for the storage figures; its CPU is printed on its own line,
not in the scoring total. The shipped local config is used, with ``embedding.enabled=false``.

**Audio.** Rendering 10,000 distinct 30 s MP3s would cost hours, so ``--distinct-clips`` clips (default
256; 30 s, 44.1 kHz stereo, as Deezer and iTunes serve previews) are rendered once into
``<work>/clips`` (kept between runs) and every track is served one of them with a 128-byte ID3v1 tag
appended that names the track. The tag makes each track's bytes, hence its ``audio_sha256``, distinct
(the lake dedups identical audio, and a feature cache keyed by audio would make later copies free),
while the decoder skips it, so every track costs a full decode and feature extraction (verified: the
decoded samples of a clip with and without the tag are identical). Appending rather than changing
samples keeps the rendering cost independent of the catalogue size.

**Processes.** Each size runs in a fresh Python process of its own (its own Spark JVM and Python
workers), so memory figures of one size do not carry over to the next. Each first runs a warm-up
catalogue of 8 tracks through the four stages in a separate lake (Python workers start, TensorFlow is
imported, the model loaded and traced): printed, not counted, since a catalogue run pays it once.

**Measured, per size.**

- CPU per track of each stage and in total, counted two ways: the whole machine's busy time from
  ``/proc/stat`` (as ``bench/score.py`` counts it: the JVM, Spark's Python workers, their decoder
  children, the driver and the loopback server are all in it, and so is anything else the machine
  runs) and this size's process tree (driver, JVM, workers, decoders; each process's own CPU plus that
  of the children it reaped; the server is not in it). The headline and the ratio use the machine's
  figure; on a quiet machine the two differ by the server's and the system's background. The
  driver's own CPU per track is printed too.
- Peak RSS, sampled every 0.5 s: of the driver, of the JVM, of the largest single Spark Python
  worker (decoder children included) and of all Python workers together.
- Bytes per track of every table (its folder, ``_delta_log`` included, over the tracks) and the
  derived tables (``examples``, ``datasets``, ``scores``) over the ``features`` table.
- The driver's own time of every Delta commit (``DeltaRsLake._commit``: the key check against the
  table, the transaction) and of its housekeeping around each write (looking for files of dead writes,
  removing a write's stray files), by stage and table, with the first and the last commit of each
  table: a driver that re-reads a growing table on every commit shows as a last commit much slower
  than the first. The commit batches are the config's (``fetch.commit_every`` and so on).

**Embeddings.** A last process runs ``extract_features`` on ``--embedding-sample`` tracks (default
100) twice on fresh lakes, with the embedding off and on (after a 16-track warm-up of each, so the
network is loaded), and prints the difference per track, with the stage's own figure (its note "CPU-s
per clip"). The projection with embeddings adds the measured difference to the largest size's total.

    .venv/bin/python bench/scale.py [--sizes 1000,10000] [--work data/bench-scale] [--keep]
        [--distinct-clips 256] [--embedding-sample 100] [--explain/--no-explain] [--set SECTION.KEY=VALUE]

``--work`` is recreated (``<work>/clips`` is kept and reused); the lakes are removed at the end unless
``--keep``. Run on an otherwise idle machine.

Last line: ``ratio: <total CPU per track at the largest size over that at the smallest>`` (the issue's
target: at most 1.1, cost growing linearly).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from hitpredict.keras_compat import ensure_keras2  # noqa: E402

ensure_keras2()   # before TensorFlow loads, here and in the processes this one starts

import psutil  # noqa: E402

from hitpredict.config import ModelRef, config_path, load_config, musicnn_installed  # noqa: E402
from hitpredict.synth.catalogue import ensure_sample_catalogue  # noqa: E402
from score import CORE_HOURS_FOR, busy_cpu_seconds, make_bundle, tree_cpu_seconds  # noqa: E402  (bench/ is this script's folder)

STAGES = ("ingest", "fetch", "features", "score")
DERIVED = ("examples", "datasets", "scores")
WARM_TRACKS = 8
#: ID3v1 genre byte "none"; the tag is always 128 bytes.
ID3V1_SIZE = 128


# --------------------------------------------------------------------------- measuring


def own_cpu_seconds() -> float:
    """CPU seconds of this process alone (all its threads, not its children)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


class Marks:
    """(wall, machine busy CPU, process-tree CPU, this process's CPU) now; differences between two."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def now(self) -> tuple[float, float, float, float]:
        """The four clocks, in seconds."""
        return time.monotonic(), busy_cpu_seconds(), tree_cpu_seconds(self.me), own_cpu_seconds()

    def since(self, mark: tuple[float, float, float, float]) -> dict[str, float]:
        """Seconds on each clock since ``mark``: wall, machine, tree, driver."""
        now = self.now()
        return dict(zip(("wall", "machine", "tree", "driver"), (b - a for a, b in zip(mark, now))))


class RssPeaks:
    """Samples the RSS of this process (the driver), its JVM and its Spark Python workers every 0.5 s."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peaks = {"driver": 0, "jvm": 0, "worker": 0, "workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peaks", daemon=True)

    def reset(self) -> None:
        """Forget the peaks so far (after the warm-up)."""
        self.peaks = dict.fromkeys(self.peaks, 0)

    def sample(self) -> None:
        """One sample: update every peak."""
        me = psutil.Process()
        now = {"driver": me.memory_info().rss, "jvm": 0, "worker": 0, "workers": 0}
        for proc in me.children(recursive=True):
            try:
                rss = proc.memory_info().rss
                if proc.name() == "java":
                    now["jvm"] = max(now["jvm"], rss)
                elif "pyspark" in " ".join(proc.cmdline()):
                    now["worker"] = max(now["worker"], rss)
                    now["workers"] += rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peaks = {k: max(v, now[k]) for k, v in self.peaks.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RssPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CommitTimer:
    """Times the driver's Delta commits and the housekeeping of each write (delta-rs engine), by
    replacing ``DeltaRsLake._commit``, ``remove_orphans`` and ``_remove_write_files`` at run time."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.records: list[dict[str, Any]] = []
        self.housekeeping: list[dict[str, Any]] = []

    def install(self) -> None:
        """Wrap the engine's functions; every later commit in this process is recorded."""
        from hitpredict.lake import delta_rs

        timer = self
        commit = delta_rs.DeltaRsLake._commit

        def timed_commit(lake: Any, table: str, write_id: str, adds: Any, commit_info: Any) -> Any:
            rows = sum(json.loads(a.stats).get("numRecords", 0) for a in adds if a.stats)
            started = time.perf_counter()
            try:
                return commit(lake, table, write_id, adds, commit_info)
            finally:
                timer.records.append({"stage": timer.stage, "table": table, "rows": rows,
                                      "seconds": time.perf_counter() - started})

        delta_rs.DeltaRsLake._commit = timed_commit  # type: ignore[method-assign,assignment]
        for name in ("remove_orphans", "_remove_write_files"):
            setattr(delta_rs, name, self._timed(getattr(delta_rs, name), name))

    def _timed(self, function: Any, name: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.housekeeping.append({"stage": self.stage, "what": name,
                                          "seconds": time.perf_counter() - started})
        return timed


def folder_bytes(path: str) -> int:
    """Bytes of every file under ``path`` (0 if it does not exist)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue
    return total


# --------------------------------------------------------------------------- the catalogue and its server


def id3v1_tag(title: str) -> bytes:
    """A 128-byte ID3v1 tag whose title is ``title`` (at most 30 bytes); decoders skip it."""
    field = title.encode("ascii")[:30].ljust(30, b"\0")
    tag = b"TAG" + field + b"\0" * 30 + b"hitpredict bench/scale".ljust(30, b"\0") + b"2026" + b"\0" * 30 + b"\xff"
    assert len(tag) == ID3V1_SIZE
    return tag


def serve(clips_dir: str) -> None:
    """The loopback preview server (``--serve``): ``GET /c<k>/<name>.mp3`` answers clip ``k`` of
    ``clips_dir`` (sorted by name) with an ID3v1 tag titled ``name`` appended (the catalogue's
    ``<prefix>-<i>``: distinct across the warm-up and measured catalogues too). Prints
    ``serving <base url>``, serves until stdin closes."""
    from http.server import BaseHTTPRequestHandler

    from hitpredict.loopback import LoopbackServer

    clips = [p.read_bytes() for p in sorted(Path(clips_dir).glob("*.mp3"))]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                clip, name = self.path.split("?")[0].strip("/").split("/")
                title = name.removesuffix(".mp3")
                if not clip.startswith("c") or not title or len(title) > 30 or not title.replace("-", "").isalnum():
                    raise ValueError(name)
                body = clips[int(clip[1:])] + id3v1_tag(title)
            except (ValueError, IndexError):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with LoopbackServer(Handler) as server:
        print(f"serving {server.base_url}", flush=True)
        sys.stdin.read()


class ServerProcess:
    """The loopback server in a process of its own; ``cpu()`` is its CPU seconds so far."""

    def __init__(self, clips_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(clips_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("serving "):
            self.close()
            raise SystemExit(f"the loopback preview server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        """CPU seconds the server has used."""
        t = self.ps.cpu_times()
        return t.user + t.system

    def close(self) -> None:
        """Stop the server (it exits when its stdin closes) and reap it."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_catalogue(path: Path, tracks: int, base_url: str, clips: list[Any], prefix: str) -> Path:
    """A label-style catalogue CSV of ``tracks`` rows: track ``i`` is clip ``i % len(clips)`` served under its
    own URL (so its bytes differ), with that clip's artist, region and popularity, and a unique ISRC."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "title", "artists", "isrc", "release_date", "audio_uri", "popularity",
                         "streams", "region", "genre"])
        for i in range(tracks):
            k = i % len(clips)
            row = clips[k]
            isrc = f"QZ{prefix[:1].upper()}SC{(i // 100_000) % 100:02d}{i % 100_000:05d}"
            writer.writerow([f"{prefix}-{i:07d}", f"{row.title} {i}", row.artist, isrc, row.release_date,
                             f"{base_url}/c{k}/{prefix}-{i}.mp3", row.popularity, row.streams, row.region, "hip hop"])
    return path


# --------------------------------------------------------------------------- one size, in its own process


def base_config(work: Path, lake: str, args: argparse.Namespace, embedding: bool = False) -> Any:
    """The shipped local config for this run: lake under ``work``, local[2], loopback fetches, the bundle."""
    overrides = [f"lake.root={work / lake}", "spark.master=local[2]", "spark.conf.spark.ui.enabled=false",
                 "fetch.allow_hosts=[127.0.0.1]", f"embedding.enabled={str(embedding).lower()}",
                 f"score.explain={str(args.explain).lower()}", "progress.bar=false",
                 f"score.report_dir={work / 'report'}", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                 *args.set]
    config = load_config(str(config_path("local")), overrides, environ={})
    if args.bundle:
        refs = [ModelRef(path=args.bundle)]
        config = config.model_copy(update={"score": config.score.model_copy(update={"models": refs})})
    return config


def with_lake(config: Any, root: Path) -> Any:
    """``config`` with its lake at ``root``."""
    return config.model_copy(update={"lake": config.lake.model_copy(update={"root": str(root)})})


def stage_text(report: Any) -> str:
    """A stage report in one line: rows in, ok, failures, notes."""
    return (f"{report.name}: {report.rows_in} in, {report.ok} ok, failed {report.failures_text()}"
            f"{'; ' + report.notes if report.notes else ''}")


def run_size(args: argparse.Namespace) -> dict[str, Any]:
    """The measured pipeline for ``args.size`` tracks (module docstring); returns the figures."""
    from hitpredict.lake import open_lake
    from hitpredict.schemas import TABLES
    from hitpredict.spark import get_spark
    from hitpredict.stages import build_dataset, extract_features, fetch_previews, ingest_catalogue, score_catalogue

    work, tracks = Path(args.work), args.size
    clips = list(ensure_sample_catalogue(Path(args.clips_root), args.distinct_clips,
                                         max(4, args.distinct_clips // 8), seed=31, seconds=30,
                                         sample_rate=44100, channels=2).rows)
    config = base_config(work, "lake", args)
    timer = CommitTimer()
    timer.install()
    marks = Marks()
    spark = get_spark(config.spark)
    out: dict[str, Any] = {"tracks": tracks, "cores": spark.sparkContext.defaultParallelism, "stages": {},
                           "lines": []}
    with RssPeaks() as peaks:
        # warm-up: worker start, TensorFlow import, model load and tracing; not counted
        warm = with_lake(config, work / "lake-warm-up")
        lake = open_lake(warm.lake, spark)
        csv_path = write_catalogue(work / "warm-up.csv", WARM_TRACKS, args.base_url, clips, "warm")
        timer.stage = "warm-up"
        mark = marks.now()
        ingest_catalogue.run(warm, spark, lake, str(csv_path))
        fetch_previews.run(warm, spark, lake)
        extract_features.run(warm, spark, lake)
        scored = score_catalogue.run(warm, spark, lake)
        if scored.report.ok != WARM_TRACKS:
            raise SystemExit(f"warm-up scored {scored.report.ok} of {WARM_TRACKS}: {stage_text(scored.report)}")
        out["warm_up"] = marks.since(mark)
        timer.records.clear()
        timer.housekeeping.clear()
        peaks.reset()

        lake = open_lake(config.lake, spark)
        csv_path = write_catalogue(work / "catalogue.csv", tracks, args.base_url, clips, "scale")
        steps = {"ingest": lambda: ingest_catalogue.run(config, spark, lake, str(csv_path)),
                 "fetch": lambda: fetch_previews.run(config, spark, lake),
                 "features": lambda: extract_features.run(config, spark, lake),
                 "score": lambda: score_catalogue.run(config, spark, lake).report}
        for name, step in steps.items():
            timer.stage = name
            mark = marks.now()
            report = step()
            out["stages"][name] = marks.since(mark)
            out["lines"].append(stage_text(report))
            if report.ok != tracks:
                raise SystemExit(f"{name}: {report.ok} of {tracks} ok: {stage_text(report)}")
        out["peaks"] = dict(peaks.peaks)
        if args.dataset:
            timer.stage = "build_dataset"
            mark = marks.now()
            try:
                report = build_dataset.run(config, spark, lake)
                out["lines"].append(stage_text(report))
            except Exception as exc:  # noqa: BLE001 - the storage figures are printed without it
                out["lines"].append(f"build_dataset: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            out["build_dataset"] = marks.since(mark)
    spark.stop()
    out["bytes"] = {table: folder_bytes(lake.location(table)) for table in TABLES}
    out["commits"] = timer.records
    out["housekeeping"] = timer.housekeeping
    return out


def run_embedding(args: argparse.Namespace) -> dict[str, Any]:
    """extract_features on ``args.embedding_sample`` tracks with the embedding off, then on, each after a
    warm-up of its own; returns the CPU of each run and the stage's own per-clip figure."""
    from hitpredict.lake import open_lake
    from hitpredict.spark import get_spark
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue

    work, sample = Path(args.work), args.embedding_sample
    clips = list(ensure_sample_catalogue(Path(args.clips_root), args.distinct_clips,
                                         max(4, args.distinct_clips // 8), seed=31, seconds=30,
                                         sample_rate=44100, channels=2).rows)
    marks = Marks()
    spark = None
    out: dict[str, Any] = {"tracks": sample, "lines": []}
    for embedding in (False, True):
        config = base_config(work, f"lake-{embedding}", args, embedding=embedding)
        spark = spark or get_spark(config.spark)
        for part, n in (("warm", 16), ("timed", sample)):
            run_config = with_lake(config, work / f"lake-{part}-{embedding}")
            lake = open_lake(run_config.lake, spark)
            csv_path = write_catalogue(work / f"{part}-{embedding}.csv", n, args.base_url, clips,
                                       f"{part[0]}{int(embedding)}")
            ingest_catalogue.run(run_config, spark, lake, str(csv_path))
            fetch_previews.run(run_config, spark, lake)
            mark = marks.now()
            report = extract_features.run(run_config, spark, lake)
            if report.ok != n:
                raise SystemExit(f"embedding sample: {report.ok} of {n} ok: {stage_text(report)}")
            if part == "timed":
                out["on" if embedding else "off"] = marks.since(mark)
                out["lines"].append(stage_text(report))
                if embedding:
                    out["note"] = report.notes
    if spark is not None:
        spark.stop()
    return out


def child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Run this script in a fresh process for one size (``mode`` "size") or the embedding sample."""
    out = Path(args.work) / f"{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, f"--{mode}", str(args.size if mode == "size" else args.embedding_sample),
               "--work", args.work, "--clips-root", args.clips_root, "--base-url", args.base_url, "--bundle",
               args.bundle, "--distinct-clips", str(args.distinct_clips), "--result", str(out),
               "--explain" if args.explain else "--no-explain", "--dataset" if args.dataset else "--no-dataset"]
    for item in args.set:
        command += ["--set", item]
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"{mode} {args.size if mode == 'size' else args.embedding_sample}: the child process "
                         f"failed (exit {done.returncode})")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- printing


def mib(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def print_size(result: dict[str, Any], server_cpu: float) -> dict[str, float]:
    """The figures of one size; returns the total CPU per track (machine, tree)."""
    n = result["tracks"]
    warm = result["warm_up"]
    print(f"\n== {n:,} tracks (Spark local[{result['cores']}], fresh process)")
    for line in result["lines"]:
        print(f"  {line}")
    print(f"  warm-up ({WARM_TRACKS} tracks through the four stages; once per Spark session, not counted): "
          f"{warm['machine']:.1f} machine CPU-s, {warm['wall']:.1f} s wall")
    print(f"  {'stage':<14}{'machine CPU':>14}{'tree CPU':>12}{'driver CPU':>13}{'wall':>10}   (ms per track)")
    total = {k: 0.0 for k in ("machine", "tree", "driver", "wall")}
    for name in STAGES:
        s = result["stages"][name]
        for k in total:
            total[k] += s[k]
        print(f"  {name:<14}{s['machine'] / n * 1000:>14.1f}{s['tree'] / n * 1000:>12.1f}"
              f"{s['driver'] / n * 1000:>13.1f}{s['wall'] / n * 1000:>10.1f}")
    print(f"  {'total':<14}{total['machine'] / n * 1000:>14.1f}{total['tree'] / n * 1000:>12.1f}"
          f"{total['driver'] / n * 1000:>13.1f}{total['wall'] / n * 1000:>10.1f}")
    if "build_dataset" in result:
        s = result["build_dataset"]
        print(f"  {'build_dataset':<14}{s['machine'] / n * 1000:>14.1f}{s['tree'] / n * 1000:>12.1f}"
              f"{s['driver'] / n * 1000:>13.1f}{s['wall'] / n * 1000:>10.1f}   (not in the total)")
    print(f"  loopback server (in the machine figures, not the tree's): {server_cpu / n * 1000:.1f} ms CPU per track")
    p = result["peaks"]
    print(f"  peak RSS: driver {mib(p['driver'])}, JVM {mib(p['jvm'])}, largest Python worker {mib(p['worker'])}, "
          f"all Python workers {mib(p['workers'])}")
    sizes = result["bytes"]
    print("  bytes per track: " + ", ".join(f"{t} {b / n:,.0f}" for t, b in sorted(sizes.items(), key=lambda x: -x[1])))
    features = sizes.get("features", 0)
    derived = sum(sizes.get(t, 0) for t in DERIVED)
    if features:
        print(f"  derived tables ({', '.join(DERIVED)}) / features: {derived / features:.3f} "
              f"({derived / n:,.0f} vs {features / n:,.0f} bytes per track)")
    print_commits(result)
    return {"machine": total["machine"] / n, "tree": total["tree"] / n}


def print_commits(result: dict[str, Any]) -> None:
    """The driver's commit times by stage and table, first and last, and the housekeeping's."""
    commits = [c for c in result["commits"] if c["rows"] > 0]
    if not commits:
        print("  commits: none recorded (the lake engine is not delta-rs?)")
        return
    print("  driver's own time per commit (DeltaRsLake._commit; commits that added rows):")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in commits:
        groups.setdefault((c["stage"], c["table"]), []).append(c)
    for (stage, table), items in groups.items():
        secs = [c["seconds"] * 1000 for c in items]
        before_last = sum(c["rows"] for c in items[:-1])
        print(f"    {stage:<14}{table:<15}{len(items):>3} commits: first {secs[0]:7.1f} ms ({items[0]['rows']} rows), "
              f"last {secs[-1]:7.1f} ms ({items[-1]['rows']} rows, {before_last} already in), "
              f"max {max(secs):7.1f} ms, total {sum(secs) / 1000:.2f} s")
    largest = max(result["bytes"], key=lambda t: result["bytes"][t])
    mine = [c for c in commits if c["table"] == largest]
    if mine:
        print(f"  largest table {largest}: first commit {mine[0]['seconds'] * 1000:.1f} ms, last "
              f"{mine[-1]['seconds'] * 1000:.1f} ms ({len(mine)} commits, {sum(c['rows'] for c in mine):,} rows)")
    house: dict[str, list[float]] = {}
    for h in result["housekeeping"]:
        house.setdefault(h["stage"], []).append(h["seconds"] * 1000)
    print("  housekeeping around each write (remove_orphans, _remove_write_files), per stage: " + "; ".join(
        f"{stage} {len(secs)} calls, first {secs[0]:.1f} ms, last {secs[-1]:.1f} ms, total {sum(secs) / 1000:.2f} s"
        for stage, secs in house.items()))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated catalogue sizes (tracks)")
    parser.add_argument("--work", default="data/bench-scale", help="scratch folder (recreated; <work>/clips kept)")
    parser.add_argument("--keep", action="store_true", help="keep the lakes under --work")
    parser.add_argument("--distinct-clips", type=int, default=256, help="distinct 30 s MP3s rendered")
    parser.add_argument("--embedding-sample", type=int, default=100,
                        help="tracks for the embedding's extra CPU (0: skip)")
    parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True,
                        help="score with the occlusion explanations (default on, as scoring)")
    parser.add_argument("--dataset", action=argparse.BooleanOptionalAction, default=True,
                        help="run build_dataset after scoring, for the examples/datasets storage figures")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (e.g. fetch.commit_every=100); repeatable")
    for hidden in ("--serve", "--size", "--embedding", "--clips-root", "--base-url", "--bundle", "--result",
                   "--make-bundle"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.serve:
        serve(args.serve)
        return
    if args.make_bundle:
        config = load_config(str(config_path("local")), environ={})
        make_bundle(Path(args.make_bundle), config.train.family, config.audio.model_dump(mode="json"))
        print(config.train.family)
        return
    if args.size or args.embedding:
        args.size = int(args.size) if args.size else 0
        args.embedding_sample = int(args.embedding) if args.embedding else 0
        result = run_size(args) if args.size else run_embedding(args)
        Path(args.result).write_text(json.dumps(result))
        return

    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--sizes: need positive track counts, got {args.sizes!r}")
    work = Path(args.work).resolve()
    clips_root = work / "clips"
    if work.exists():
        for entry in work.iterdir():
            if entry != clips_root:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    work.mkdir(parents=True, exist_ok=True)
    args.distinct_clips = max(1, min(args.distinct_clips, max(sizes)))
    started = time.monotonic()
    sample = ensure_sample_catalogue(clips_root, args.distinct_clips, max(4, args.distinct_clips // 8), seed=31,
                                     seconds=30, sample_rate=44100, channels=2)
    clip_bytes = sum((sample.audio_dir / r.audio_file).stat().st_size for r in sample.rows) / len(sample.rows)
    made = subprocess.run([sys.executable, __file__, "--make-bundle", str(work / "model")], capture_output=True,
                          text=True)
    if made.returncode != 0:
        raise SystemExit(f"could not make the model bundle: {made.stderr.strip()[-2000:]}")
    family = made.stdout.strip().splitlines()[-1]
    args.clips_root, args.bundle = str(clips_root), str(work / "model")
    print(f"scale benchmark: sizes {', '.join(f'{s:,}' for s in sizes)}; {args.distinct_clips} distinct 30 s MP3s "
          f"(44.1 kHz stereo, {clip_bytes / 1024:.0f} KiB on average), each track one of them plus its own ID3v1 "
          f"tag; model {family} (fresh weights), explanations {'on' if args.explain else 'off'}, embedding off; "
          f"{os.cpu_count()} cores on this machine; set-up {time.monotonic() - started:.0f} s")

    server = ServerProcess(sample.audio_dir)
    args.base_url = server.base_url
    per_track: dict[int, dict[str, float]] = {}
    embedding: dict[str, Any] | None = None
    try:
        for size in sizes:
            args.size = size
            args.work = str(work / f"size-{size}")
            before = server.cpu()
            result = child(args, "size")
            per_track[size] = print_size(result, server.cpu() - before)
        if args.embedding_sample > 0:
            if musicnn_installed():
                args.work = str(work / "embedding")
                embedding = child(args, "embedding")
            else:
                print("\nembedding: musicnn is not installed; no projection with embeddings")
    finally:
        server.close()

    largest, smallest = max(sizes), min(sizes)
    total = per_track[largest]["machine"]
    print(f"\nprojected for {CORE_HOURS_FOR:,} tracks (machine CPU per track at {largest:,} tracks, "
          f"x {CORE_HOURS_FOR:,} / 3600):")
    print(f"  without embeddings: {total * CORE_HOURS_FOR / 3600:,.1f} core-hours "
          f"({total * 1000:.1f} ms CPU per track; process tree: {per_track[largest]['tree'] * CORE_HOURS_FOR / 3600:,.1f})")
    if embedding is not None:
        n = embedding["tracks"]
        extra = (embedding["on"]["machine"] - embedding["off"]["machine"]) / n
        extra_tree = (embedding["on"]["tree"] - embedding["off"]["tree"]) / n
        for line in embedding["lines"]:
            print(f"  embedding sample: {line}")
        print(f"  embedding's extra CPU per track ({n} tracks, extract_features on minus off): machine "
              f"{extra * 1000:.1f} ms, process tree {extra_tree * 1000:.1f} ms")
        print(f"  with embeddings: {(total + extra) * CORE_HOURS_FOR / 3600:,.1f} core-hours "
              f"({(total + extra) * 1000:.1f} ms CPU per track)")
        found = re.search(r"([0-9.]+) CPU-s per clip", embedding.get("note", ""))
        if found:
            own = float(found.group(1))
            print(f"  with embeddings, taking the stage's own figure ({own:.3f} CPU-s per clip, the network's part "
                  f"in the tasks) instead: {(total + own) * CORE_HOURS_FOR / 3600:,.1f} core-hours")
    if not args.keep:
        for entry in work.iterdir():
            if entry != clips_root:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    print(f"process-tree ratio (for comparison): {per_track[largest]['tree'] / per_track[smallest]['tree']:.3f}")
    print(f"ratio: {total / per_track[smallest]['machine']:.3f}")


if __name__ == "__main__":
    main()
