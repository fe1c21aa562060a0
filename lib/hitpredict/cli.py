"""The ``hitpredict`` command line: one sub-command per job, plus demo and tools."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Sequence

from hitpredict.config import Config, ConfigError, load_config
from hitpredict.dataset import DatasetError
from hitpredict.fetch import FetchSetupError
from hitpredict.ingest import SourceError
from hitpredict.logs import configure as configure_logging
from hitpredict.scoring.scorer import ScoreError
from hitpredict.train.bundle import BundleError

log = logging.getLogger("hitpredict")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default=None, help="YAML config (default: built-in embedded defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set fetch.max_concurrency=32 (repeatable)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="also show third-party warnings (TensorFlow, Spark, Petastorm, MLflow...) and "
                             "hitpredict's debug lines; -vv: third-party INFO lines too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitpredict", description="Predict a track's hit potential from its audio.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("demo", "run the pipeline's stages end to end on the bundled sample catalogue"),
        ("ingest_catalogue", "ingest a label's CSV/Parquet file or a folder of audio into the catalogue table"),
        ("fetch_previews", "download every catalogue track that has no settled preview yet"),
        ("extract_features", "decode every ok preview without features into log-mel spectrograms"),
        ("build_dataset", "split tracks by artist and write the examples and statistics of one target"),
        ("train_model", "train a model family with Horovod processes on the latest dataset, evaluate, log to MLflow"),
        ("score_catalogue", "score every track with features and no score yet for the chosen model versions"),
        ("score_folder", "score a folder of audio files: ingest -> features -> scores, with the models' audio"),
        ("score", "score one audio file without Spark and print its scores"),
        ("report", "write the HTML report (plots, top tracks, explanations) and a CSV of every scored track"),
        ("sample", "generate the sample catalogue (MP3s + catalogue.csv) if it is not there yet"),
        ("tables", "list the lake's tables: location, version, files, rows"),
        ("check-stack", "prove the pinned stack: imports, then Petastorm -> Horovod (2 gloo processes) -> Keras"),
    ]:
        aliases = [name.replace("_", "-")] if "_" in name else []
        if name == "ingest_catalogue":
            aliases.append("ingest")
        cmd = sub.add_parser(name, aliases=aliases, help=help_text, description=help_text)
        cmd.set_defaults(command=name)
        _common(cmd)
        if name == "ingest_catalogue":
            cmd.add_argument("path", nargs="?", help="CSV/Parquet file or folder (default: ingest.path)")
            cmd.add_argument("--source", choices=["csv", "parquet", "folder", "spotify", "deezer", "itunes"],
                             help="what PATH is (default: ingest.source, else inferred); spotify crawls the Web API; "
                                  "deezer/itunes: a file of title, artists, ISRC whose previews that service finds")
            cmd.add_argument("--genre", help="spotify: crawl every artist of this genre, e.g. \"hip hop\"")
            cmd.add_argument("--artist", dest="artists", action="append", default=[], metavar="REF",
                             help="spotify: crawl this artist (id, URI, URL or exact name; repeatable)")
            cmd.add_argument("--playlist", help="spotify: crawl this playlist (id, URI or URL)")
            cmd.add_argument("--crawl-tag", help="spotify: name this crawl (e.g. a date): a new tag crawls afresh, "
                                                 "the same tag resumes (default: spotify.crawl_tag)")
        if name == "train_model":
            cmd.add_argument("--family", default=None, help="model family (default: train.family)")
            cmd.add_argument("--num-proc", type=int, default=None, help="Horovod processes (default: train.num_proc)")
        if name in ("score_catalogue", "score_folder", "score"):
            cmd.add_argument("--model", dest="models", action="append", default=[], metavar="REF",
                             help="model to score with, repeatable: NAME, NAME/VERSION, NAME@ALIAS or a bundle "
                                  "folder (default: score.models)")
        if name == "score_folder":
            cmd.add_argument("folder", help="folder (local path or fsspec URI) of audio files")
        if name == "score":
            cmd.add_argument("file", help="an audio file (MP3, M4A, WAV, ...)")
        if name in ("score_catalogue", "score_folder", "report"):
            cmd.add_argument("--top", type=int, default=None,
                             help="tracks to list (default 10; report: score.report_top)")
        if name == "report":
            cmd.add_argument("--out", default=None, help="output folder (default: score.report_dir)")
        if name == "tables":
            from hitpredict.schemas import TABLES

            cmd.add_argument("--compact", nargs="*", metavar="TABLE", default=None, choices=list(TABLES),
                             help="first rewrite the small files of these tables (all, if none named) into few "
                                  "large ones (Delta OPTIMIZE; rows and history unchanged)")
            cmd.add_argument("--vacuum", nargs="*", metavar="TABLE", default=None, choices=list(TABLES),
                             help="then delete the files of these tables (all, if none named) that no version "
                                  "within the retention needs: files replaced by --compact, files of writes "
                                  "that never committed (Delta VACUUM)")
            cmd.add_argument("--retain-hours", type=int, default=None, metavar="N",
                             help="vacuum keeps files younger than N hours (default: the table's retention, "
                                  "7 days); time travel further back is lost, and a write running longer than "
                                  "N hours would lose its files")
        if name == "check-stack":
            cmd.add_argument("--imports-only", action="store_true", help="only import and inspect the stack")
            cmd.add_argument("--num-proc", type=int, default=2)
    return parser


_SESSIONS: list = []


def _spark(config: Config):
    """The run's Spark session; stopped by ``main`` on the way out."""
    from hitpredict.spark import get_spark, provided_by_platform

    session = get_spark(config.spark)
    if not provided_by_platform():
        _SESSIONS.append(session)
    return session


def _print_stages(stages) -> None:
    print("\nstage               rows in       ok   failed   seconds  failed by kind / notes")
    for s in stages:
        detail = s.failures_text() + (f"; {s.notes}" if s.notes else "")
        print(f"{s.name:<18} {s.rows_in:>8} {s.ok:>8} {s.failed_total:>8} {s.seconds:>9.1f}  {detail}")
        for line in s.details:
            print(f"  {line}")


def _run_stage(module_name: str):
    def command(config: Config, args: argparse.Namespace) -> int:
        import importlib

        from hitpredict.lake import open_lake

        stage = importlib.import_module(f"hitpredict.stages.{module_name}")
        spark = _spark(config)
        lake = open_lake(config.lake, spark)
        extra = {"path": args.path} if getattr(args, "path", None) else {}
        if module_name == "ingest_catalogue":
            if args.source:
                config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"source": args.source})})
            extra.update(genre=args.genre, artists=args.artists or None, playlist=args.playlist,
                         crawl_tag=args.crawl_tag)
        _print_stages([stage.run(config, spark, lake, **extra)])
        _print_tables(lake.tables())
        return 0
    return command


def print_training(result) -> None:
    """The evaluation table of one training run, and where its outputs are."""
    print(f"\n{result.family} ({result.task}) on {result.dataset_id}, {result.num_proc} Horovod processes, "
          f"{len(result.history.get('loss', []))} epochs, {result.samples_per_s:.1f} training samples/s")
    rows = [["metric (test split)", result.family, "dummy"], *result.table]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    registered = f", registered {result.model_name} v{result.model_version}" if result.model_version else ""
    print(f"model: {result.bundle_dir}\nevaluation (JSON, PNG): {result.evaluation_dir}\n"
          f"MLflow run {result.run_id}{registered}")


def cmd_train_model(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.lake import open_lake
    from hitpredict.stages import train_model

    spark = _spark(config)
    result = train_model.run(config, spark, open_lake(config.lake, spark), family=args.family,
                             num_proc=args.num_proc)
    _print_stages([result.report])
    print_training(result)
    return 0


def _with_models(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``--model`` references, when given, in place of ``score.models``."""
    if not getattr(args, "models", None):
        return config
    from hitpredict.scoring.registry import parse_model_ref

    score = config.score.model_copy(update={"models": [parse_model_ref(text) for text in args.models]})
    return config.model_copy(update={"score": score})


def printable(value) -> str:
    """``value`` as text for a terminal: control characters (an escape sequence in a title could
    clear the screen or rewrite earlier lines) shown as ``\\x1b``, ``\\n``..., the rest as is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def print_top(tracks, limit: int = 10) -> None:
    """The best ``limit`` tracks as a table."""
    from hitpredict.scoring.report import similar_text

    rows = [["#", "title", "artist", "P(popular)", "pred. pop.", "pct", "sounds like", "region"]]
    for i, t in enumerate(tracks.head(limit).itertuples(index=False), start=1):
        rows.append([str(i), printable(t.title or t.track_id)[:40], printable(t.primary_artist or "")[:24],
                     "" if t.prob_popular is None else f"{t.prob_popular:.3f}",
                     "" if t.popularity_pred is None else f"{t.popularity_pred:.1f}",
                     "" if t.percentile is None else f"{t.percentile:.1f}",
                     printable(similar_text(t.similar_artists, 2)), printable(t.region or "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    keep = [i for i in range(len(widths)) if any(r[i] for r in rows[1:]) or i < 3]
    for n, row in enumerate(rows):
        print("  " + "  ".join(row[i].ljust(widths[i]) for i in keep))
        if n == 0:
            print("  " + "  ".join("-" * widths[i] for i in keep))


def _print_scored(result, lake, only=None, limit: int = 10) -> None:
    from hitpredict.scoring.view import latest_scores

    for label, n in result.written.items():
        print(f"{label}: {n} new score rows")
    tracks = latest_scores(lake, only)
    print(f"\ntop {min(limit, len(tracks))} of {len(tracks)} scored tracks:")
    print_top(tracks, limit)


def cmd_score_catalogue(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.lake import open_lake
    from hitpredict.stages import score_catalogue

    config = _with_models(config, args)
    spark = _spark(config)
    lake = open_lake(config.lake, spark)
    result = score_catalogue.run(config, spark, lake)
    _print_stages([result.report])
    _print_scored(result, lake, limit=args.top or 10)
    return 0


def cmd_score_folder(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.lake import open_lake
    from hitpredict.stages import score_folder

    config = _with_models(config, args)
    spark = _spark(config)
    lake = open_lake(config.lake, spark)
    result = score_folder.run(config, spark, lake, args.folder)
    _print_stages(result.stages)
    _print_scored(result.score, lake, only=result.track_ids, limit=args.top or len(result.track_ids))
    return 0


def cmd_score(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.keras_compat import use_legacy_keras
    from hitpredict.scoring.registry import resolve_model
    from hitpredict.scoring.single import score_file
    from hitpredict.stages.score_catalogue import settings_of

    use_legacy_keras()
    config = _with_models(config, args)
    started = time.monotonic()
    models = [resolve_model(ref, config.mlflow) for ref in config.score.models]
    row = score_file(args.file, models, settings_of(config), config.audio.min_seconds).iloc[0]
    print(f"{args.file} (scored by {row['models']} in {time.monotonic() - started:.1f}s)")
    for key in ("prob_popular", "popularity_pred", "percentile", "region"):
        if row[key] is not None:
            print(f"  {key:<18} {row[key]:.6f}" if isinstance(row[key], float) else f"  {key:<18} {row[key]}")
    if row["similar_artists"] is not None:
        print("  similar_artists    " + ", ".join(f"{a['artist']} {a['prob']:.3f}" for a in row["similar_artists"]))
    if row["segment_importance"] is not None:
        seconds = config.score.segment_seconds
        print("  segment importance " + "  ".join(f"{i * seconds:g}s {v:+.4f}"
                                                  for i, v in enumerate(row["segment_importance"])))
    return 0


def cmd_report(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.lake import open_lake
    from hitpredict.scoring.report import write_report

    s = config.score
    report = write_report(open_lake(config.lake, _spark(config)), args.out or s.report_dir, args.top or s.report_top,
                          s.report_strips, s.segment_seconds)
    print(f"report: {report.html.resolve()}\ncsv: {report.csv.resolve()} ({len(report.tracks)} tracks)")
    print_top(report.tracks, 10)
    return 0


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.demo import run_demo

    started = time.monotonic()
    report = run_demo(config, _spark(config))
    _print_stages(report.stages)
    _print_tables(report.tables)
    print(f"\npreviews were served by a loopback server at {report.preview_server}")
    for name, rows in report.samples.items():
        print(f"\nfirst rows of {name}:")
        for row in rows:
            print("  ", {k: _short(v) for k, v in row.items() if k not in ("audio", "mel")})
    for training in report.trainings:
        print_training(training)
    if report.report is not None:
        print(f"\nreport: {report.report.html.resolve()}\ncsv: {report.report.csv.resolve()} "
              f"({len(report.report.tracks)} tracks)\n\ntop 10 tracks:")
        print_top(report.report.tracks, 10)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


def _short(value):
    text = repr(value)
    return value if len(text) <= 40 else text[:37] + "..."


def cmd_sample(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.synth.catalogue import ensure_sample_catalogue

    s = config.sample
    sample = ensure_sample_catalogue(s.dir, s.tracks, s.artists, seed=s.seed, seconds=s.seconds,
                                     sample_rate=config.audio.sample_rate)
    print(f"{len(sample.rows)} tracks: {sample.csv_path} (audio in {sample.audio_dir})")
    return 0


def _print_tables(tables) -> None:
    print("\ntable        version  files      rows  location")
    for t in tables:
        rows = "?" if t.rows is None else str(t.rows)
        print(f"{t.name:<12} {t.version:>7} {t.files:>6} {rows:>9}  {t.location}")
    if not tables:
        print("(no tables yet)")


def cmd_tables(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.lake import open_lake

    if args.retain_hours is not None and args.vacuum is None:
        raise SystemExit("hitpredict tables: --retain-hours needs --vacuum")
    lake = open_lake(config.lake, _spark(config))
    if args.compact is not None:
        for table in args.compact or [t.name for t in lake.tables()]:
            files = lake.compact(table)
            print(f"{table}: " + ("does not exist yet" if files is None else f"{files[0]} files -> {files[1]}"))
    if args.vacuum is not None:
        for table in args.vacuum or [t.name for t in lake.tables()]:
            gone = lake.vacuum(table, args.retain_hours)
            print(f"{table}: " + ("does not exist yet" if not lake.exists(table) else
                                  "vacuumed" if gone is None else f"vacuum deleted {gone} file(s)"))
    _print_tables(lake.tables())
    return 0


def cmd_check_stack(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.stackcheck import run_horovod_smoke, verify_imports

    versions = verify_imports()
    print("stack imports ok: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.imports_only:
        return 0
    results = run_horovod_smoke(_spark(config), num_proc=args.num_proc)
    for r in results:
        print(f"rank {r['rank']}/{r['size']}: loss {r['loss'][0]:.4f} -> {r['loss'][-1]:.6f}, "
              f"slope {r['slope']:.3f}, intercept {r['intercept']:.3f}")
    return 0


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "demo": cmd_demo,
    "ingest_catalogue": _run_stage("ingest_catalogue"),
    "fetch_previews": _run_stage("fetch_previews"),
    "extract_features": _run_stage("extract_features"),
    "build_dataset": _run_stage("build_dataset"),
    "train_model": cmd_train_model,
    "score_catalogue": cmd_score_catalogue,
    "score_folder": cmd_score_folder,
    "score": cmd_score,
    "report": cmd_report,
    "sample": cmd_sample,
    "tables": cmd_tables,
    "check-stack": cmd_check_stack,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)   # before Spark or TensorFlow start: their processes inherit it
    try:
        config = load_config(args.conf, args.overrides)
    except ConfigError as exc:
        print(f"hitpredict: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](config, args)
    except (SourceError, DatasetError, ScoreError, BundleError, FetchSetupError) as exc:
        print(f"hitpredict: {exc}", file=sys.stderr)
        return 2
    finally:
        for session in _SESSIONS:
            session.stop()


def job_main(command: str) -> None:
    """Entry of the thin ``jobs/<stage>.py`` scripts that ``spark-submit`` runs."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
