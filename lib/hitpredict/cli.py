"""The ``hitpredict`` command line: one declared command per stage, plus the demo and tools.

Each command is declared once, by :func:`command` above its handler: name, aliases, help and
arguments beside the code that runs it. :func:`main` parses the command line, sets up logging,
loads the config and runs the handler. A :class:`~hitpredict.errors.HitpredictError` (bad config,
bad input, a missing model: something the user can fix) is printed as one line, exit status 2;
any other exception is a bug, printed with its traceback, exit status 1. Commands that need Spark
open it with :func:`hitpredict.spark.spark_session`, which stops it on the way out; the others
never start it. See ARCHITECTURE.md for where the CLI sits.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hitpredict import __version__
from hitpredict.config import Config, ModelRef, load_config
from hitpredict.errors import HitpredictError
from hitpredict.keras_compat import ensure_keras2
from hitpredict.lake import TableInfo, open_lake
from hitpredict.logs import configure as configure_logging
from hitpredict.logs import redact
from hitpredict.schemas import TABLES
from hitpredict.scoring.registry import resolve_model
from hitpredict.scoring.report import similar_text, write_report
from hitpredict.scoring.scorer import ScoreSettings
from hitpredict.scoring.single import score_file
from hitpredict.scoring.view import latest_scores
from hitpredict.spark import spark_session
from hitpredict.stackcheck import run_horovod_smoke, verify_imports
from hitpredict.stages import (build_dataset, extract_features, fetch_previews, ingest_catalogue, score_catalogue,
                               score_folder, train_model)
from hitpredict.stages.base import StageReport
from hitpredict.stages.demo import run_demo
from hitpredict.synth.catalogue import ensure_sample_catalogue

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

#: A command's handler: ``handler(config, args)`` -> exit status. Handlers that need Spark also take
#: ``spark=`` (a session to use instead of starting one; tests pass theirs).
Handler = Callable[[Config, argparse.Namespace], int]


@dataclass(frozen=True)
class Argument:
    """One argument of a command: ``ArgumentParser.add_argument(*flags, **options)``."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this argument to ``parser``."""
        parser.add_argument(*self.flags, **self.options)


def arg(*flags: str, **options: Any) -> Argument:
    """An :class:`Argument`, written like the ``add_argument`` call it stands for."""
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    """One sub-command: its name, aliases, help text, arguments and handler, declared together."""

    name: str
    help: str
    handler: Handler
    arguments: tuple[Argument, ...] = ()
    aliases: tuple[str, ...] = ()

    def add_to(self, sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
        """Add this command, with the common options and its own arguments, to ``sub``; returns its parser."""
        parser = sub.add_parser(self.name, aliases=list(self.aliases), help=self.help, description=self.help)
        parser.set_defaults(command=self.name)
        for argument in (*COMMON_ARGUMENTS, *self.arguments):
            argument.add_to(parser)
        return parser


#: Options every command takes, before its own.
COMMON_ARGUMENTS = (
    arg("--conf", default=None, help="YAML config file, or the name of a shipped one: local, cluster, databricks "
                                      "(default: built-in embedded defaults)"),
    arg("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set fetch.max_concurrency=32 (repeatable)"),
    arg("-v", "--verbose", action="count", default=0,
        help="also show third-party warnings (TensorFlow, Spark, Petastorm, MLflow...) and "
             "hitpredict's debug lines; -vv: third-party INFO lines too"),
)
MODELS = arg("--model", dest="models", action="append", default=[], metavar="REF",
             help="model to score with, repeatable: NAME, NAME/VERSION, NAME@ALIAS or a bundle "
                  "folder (default: score.models)")
TOP = arg("--top", type=int, default=None, help="tracks to list (default 10; report: score.report_top)")

#: The declared commands by name, in the order ``hitpredict --help`` lists them.
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *arguments: Argument, aliases: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    """Declare the decorated function as the handler of command ``name`` with these ``arguments``."""
    def declare(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is declared twice")
        COMMANDS[name] = Command(name, help, handler, tuple(arguments), tuple(aliases))
        return handler
    return declare


# ---------------------------------------------------------------------------------------------------------------
# What the commands print.

def print_stages(stages: Sequence[StageReport]) -> None:
    """One line per stage report: rows in, ok, failed, seconds, failures by kind and notes."""
    print("\nstage               rows in       ok   failed   seconds  failed by kind / notes")
    for s in stages:
        detail = s.failures_text() + (f"; {s.notes}" if s.notes else "")
        print(f"{s.name:<18} {s.rows_in:>8} {s.ok:>8} {s.failed_total:>8} {s.seconds:>9.1f}  {detail}")
        for line in s.details:
            print(f"  {line}")


def print_tables(tables: Sequence[TableInfo]) -> None:
    """One line per lake table: name, version, files, rows, location."""
    print("\ntable        version  files      rows  location")
    for t in tables:
        rows = "?" if t.rows is None else str(t.rows)
        print(f"{t.name:<12} {t.version:>7} {t.files:>6} {rows:>9}  {t.location}")
    if not tables:
        print("(no tables yet)")


def print_training(result: train_model.TrainResult) -> None:
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


def printable(value: Any) -> str:
    """``value`` as text for a terminal: control characters (an escape sequence in a title could
    clear the screen or rewrite earlier lines) shown as ``\\x1b``, ``\\n``..., the rest as is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def print_top(tracks: "pd.DataFrame", limit: int = 10) -> None:
    """The first ``limit`` rows of ``tracks`` (best first, as :func:`~hitpredict.scoring.view.latest_scores`
    orders them) as a table; columns no track has a value for are left out."""
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


def _print_scored(result: score_catalogue.ScoreResult, lake, only=None, limit: int = 10) -> None:
    for label, n in result.written.items():
        print(f"{label}: {n} new score rows")
    tracks = latest_scores(lake, only)
    print(f"\ntop {min(limit, len(tracks))} of {len(tracks)} scored tracks:")
    print_top(tracks, limit)


def _short(value):
    text = repr(value)
    return value if len(text) <= 40 else text[:37] + "..."


def _with_models(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``--model`` references, when given, in place of ``score.models``."""
    if not getattr(args, "models", None):
        return config
    score = config.score.model_copy(update={"models": [ModelRef.parse(text) for text in args.models]})
    return config.model_copy(update={"score": score})


def _run_stage(run: Callable[..., StageReport], config: Config, spark: "SparkSession | None", **extra: Any) -> int:
    """Run one stage's ``run(config, spark, lake, **extra)``; print its report and the lake's tables."""
    with spark_session(config.spark, spark) as spark:
        lake = open_lake(config.lake, spark)
        print_stages([run(config, spark, lake, **extra)])
        print_tables(lake.tables())
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The commands, in the order ``hitpredict --help`` lists them.

@command("demo", "run the pipeline's stages end to end on the bundled sample catalogue")
def cmd_demo(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Run the demo (:func:`hitpredict.stages.demo.run_demo`) and print what each stage did."""
    started = time.monotonic()
    with spark_session(config.spark, spark) as spark:
        report = run_demo(config, spark)
        print_stages(report.stages)
        print_tables(report.tables)
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


@command("ingest_catalogue", "ingest a label's CSV/Parquet file or a folder of audio into the catalogue table",
         arg("path", nargs="?", help="CSV/Parquet file or folder (default: ingest.path)"),
         arg("--source", choices=["csv", "parquet", "folder", "spotify", "deezer", "itunes"],
             help="what PATH is (default: ingest.source, else inferred); spotify crawls the Web API; "
                  "deezer/itunes: a file of title, artists, ISRC whose previews that service finds"),
         arg("--genre", help="spotify: crawl every artist of this genre, e.g. \"hip hop\""),
         arg("--artist", dest="artists", action="append", default=[], metavar="REF",
             help="spotify: crawl this artist (id, URI, URL or exact name; repeatable)"),
         arg("--playlist", help="spotify: crawl this playlist (id, URI or URL)"),
         arg("--crawl-tag", help="spotify: name this crawl (e.g. a date): a new tag crawls afresh, "
                                 "the same tag resumes (default: spotify.crawl_tag)"),
         aliases=("ingest-catalogue", "ingest"))
def cmd_ingest_catalogue(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Ingest PATH (or a Spotify crawl) into the catalogue: :func:`hitpredict.stages.ingest_catalogue.run`."""
    if args.source:
        config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"source": args.source})})
    extra = {"path": args.path} if args.path else {}
    return _run_stage(ingest_catalogue.run, config, spark, **extra, genre=args.genre, artists=args.artists or None,
                      playlist=args.playlist, crawl_tag=args.crawl_tag)


@command("fetch_previews", "download every catalogue track that has no settled preview yet",
         aliases=("fetch-previews",))
def cmd_fetch_previews(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Download the pending previews: :func:`hitpredict.stages.fetch_previews.run`."""
    return _run_stage(fetch_previews.run, config, spark)


@command("extract_features", "decode every ok preview without features into log-mel spectrograms",
         aliases=("extract-features",))
def cmd_extract_features(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Compute the missing features: :func:`hitpredict.stages.extract_features.run`."""
    return _run_stage(extract_features.run, config, spark)


@command("build_dataset", "split tracks by artist and write the examples and statistics of one target",
         aliases=("build-dataset",))
def cmd_build_dataset(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Build the configured target's dataset: :func:`hitpredict.stages.build_dataset.run`."""
    return _run_stage(build_dataset.run, config, spark)


@command("train_model", "train a model family with Horovod processes on the latest dataset, evaluate, log to MLflow",
         arg("--family", default=None, help="model family (default: train.family)"),
         arg("--num-proc", type=int, default=None, help="Horovod processes (default: train.num_proc)"),
         aliases=("train-model",))
def cmd_train_model(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Train, evaluate and register a model (:func:`hitpredict.stages.train_model.run`); print its evaluation."""
    with spark_session(config.spark, spark) as spark:
        result = train_model.run(config, spark, open_lake(config.lake, spark), family=args.family,
                                 num_proc=args.num_proc)
        print_stages([result.report])
        print_training(result)
    return 0


@command("score_catalogue", "score every track with features and no score yet for the chosen model versions",
         MODELS, TOP, aliases=("score-catalogue",))
def cmd_score_catalogue(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Score the catalogue's unscored tracks (:func:`hitpredict.stages.score_catalogue.run`); print the top ones."""
    config = _with_models(config, args)
    with spark_session(config.spark, spark) as spark:
        lake = open_lake(config.lake, spark)
        result = score_catalogue.run(config, spark, lake)
        print_stages([result.report])
        _print_scored(result, lake, limit=args.top or 10)
    return 0


@command("score_folder", "score a folder of audio files: ingest -> features -> scores, with the models' audio",
         MODELS, arg("folder", help="folder (local path or fsspec URI) of audio files"), TOP,
         aliases=("score-folder",))
def cmd_score_folder(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Score every audio file of FOLDER (:func:`hitpredict.stages.score_folder.run`); print their scores."""
    config = _with_models(config, args)
    with spark_session(config.spark, spark) as spark:
        lake = open_lake(config.lake, spark)
        result = score_folder.run(config, spark, lake, args.folder)
        print_stages(result.stages)
        _print_scored(result.score, lake, only=result.track_ids, limit=args.top or len(result.track_ids))
    return 0


@command("score", "score one audio file without Spark and print its scores",
         MODELS, arg("file", help="an audio file (MP3, M4A, WAV, ...)"))
def cmd_score(config: Config, args: argparse.Namespace) -> int:
    """Score one audio file in this process (no Spark) and print its scores and explanations."""
    ensure_keras2()
    config = _with_models(config, args)
    started = time.monotonic()
    models = [resolve_model(ref, config.mlflow) for ref in config.score.models]
    row = score_file(args.file, models, ScoreSettings.from_config(config), config.audio.min_seconds,
                     config.embedding).iloc[0]
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


@command("report", "write the HTML report (plots, top tracks, explanations) and a CSV of every scored track",
         TOP, arg("--out", default=None, help="output folder (default: score.report_dir)"))
def cmd_report(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Write the HTML report and CSV (:func:`hitpredict.scoring.report.write_report`); print the top 10."""
    s = config.score
    with spark_session(config.spark, spark) as spark:
        report = write_report(open_lake(config.lake, spark), args.out or s.report_dir, args.top or s.report_top,
                              s.report_strips, s.segment_seconds)
        print(f"report: {report.html.resolve()}\ncsv: {report.csv.resolve()} ({len(report.tracks)} tracks)")
        print_top(report.tracks, 10)
    return 0


@command("sample", "generate the sample catalogue (MP3s + catalogue.csv) if it is not there yet")
def cmd_sample(config: Config, args: argparse.Namespace) -> int:
    """Generate the sample catalogue of ``config.sample`` (no Spark) and print where it is."""
    s = config.sample
    sample = ensure_sample_catalogue(s.dir, s.tracks, s.artists, seed=s.seed, seconds=s.seconds,
                                     sample_rate=config.audio.sample_rate)
    print(f"{len(sample.rows)} tracks: {sample.csv_path} (audio in {sample.audio_dir})")
    return 0


@command("tables", "list the lake's tables: location, version, files, rows",
         arg("--compact", nargs="*", metavar="TABLE", default=None, choices=list(TABLES),
             help="first rewrite the small files of these tables (all, if none named) into few "
                  "large ones (Delta OPTIMIZE; rows and history unchanged)"),
         arg("--vacuum", nargs="*", metavar="TABLE", default=None, choices=list(TABLES),
             help="then delete the files of these tables (all, if none named) that no version "
                  "within the retention needs: files replaced by --compact, files of writes "
                  "that never committed (Delta VACUUM)"),
         arg("--retain-hours", type=int, default=None, metavar="N",
             help="vacuum keeps files younger than N hours (default: the table's retention, "
                  "7 days); time travel further back is lost, and a write running longer than "
                  "N hours would lose its files"))
def cmd_tables(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Compact and vacuum the named tables if asked, then list every table of the lake."""
    if args.retain_hours is not None and args.vacuum is None:
        raise SystemExit("hitpredict tables: --retain-hours needs --vacuum")
    with spark_session(config.spark, spark) as spark:
        lake = open_lake(config.lake, spark)
        if args.compact is not None:
            for table in args.compact or [t.name for t in lake.tables()]:
                files = lake.compact(table)
                print(f"{table}: " + ("does not exist yet" if files is None else f"{files[0]} files -> {files[1]}"))
        if args.vacuum is not None:
            for table in args.vacuum or [t.name for t in lake.tables()]:
                gone = lake.vacuum(table, args.retain_hours)
                print(f"{table}: " + ("does not exist yet" if not lake.exists(table) else
                                      "vacuumed" if gone is None else f"vacuum deleted {gone} file(s)"))
        print_tables(lake.tables())
    return 0


@command("check-stack", "prove the pinned stack: imports, then Petastorm -> Horovod (2 gloo processes) -> Keras",
         arg("--imports-only", action="store_true", help="only import and inspect the stack"),
         arg("--num-proc", type=int, default=2))
def cmd_check_stack(config: Config, args: argparse.Namespace, spark: "SparkSession | None" = None) -> int:
    """Import and inspect the pinned stack; unless ``--imports-only``, also train the Horovod smoke model."""
    versions = verify_imports()
    print("stack imports ok: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if args.imports_only:
        return 0
    with spark_session(config.spark, spark) as spark:
        results = run_horovod_smoke(spark, num_proc=args.num_proc)
    for r in results:
        print(f"rank {r['rank']}/{r['size']}: loss {r['loss'][0]:.4f} -> {r['loss'][-1]:.6f}, "
              f"slope {r['slope']:.3f}, intercept {r['intercept']:.3f}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The entry points.

def build_parser() -> argparse.ArgumentParser:
    """The ``hitpredict`` argument parser: one sub-parser per declared command (see :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="hitpredict", description="Predict a track's hit potential from its audio.")
    sub = parser.add_subparsers(dest="command", required=True)
    for declared in COMMANDS.values():
        declared.add_to(sub)
    return parser


def report_bug(command_name: str, stream=None) -> int:
    """Print the exception being handled as a bug report (a header, then its traceback, secrets
    redacted) to ``stream`` (default: stderr); returns the exit status 1."""
    stream = stream or sys.stderr
    print(f"hitpredict {command_name}: this is a bug: please report it with the traceback below\n"
          f"hitpredict {__version__}, Python {platform.python_version()}, command: {command_name}",
          file=stream)
    print(redact(traceback.format_exc()), end="", file=stream)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hitpredict`` command (``argv``: default ``sys.argv[1:]``).

    Returns the exit status: 0 done, 2 a :class:`~hitpredict.errors.HitpredictError` (printed as one line
    ``hitpredict: <message>``, or ``hitpredict: config error: <message>`` while loading the config),
    1 any other exception (a bug: printed with its traceback). Argument errors exit 2 through argparse.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)   # before Spark or TensorFlow start: their processes inherit it
    try:
        config = load_config(args.conf, args.overrides)
    except HitpredictError as exc:
        print(f"hitpredict: config error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug, reported with its traceback
        return report_bug(args.command)
    try:
        return COMMANDS[args.command].handler(config, args)
    except HitpredictError as exc:
        print(f"hitpredict: {exc}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug, reported with its traceback
        return report_bug(args.command)


def job_main(command_name: str, argv: Sequence[str] | None = None) -> None:
    """Run ``hitpredict <command_name> ARGS...`` (``argv``: default this process's ``sys.argv[1:]``): the entry of
    the thin ``jobs/<stage>.py`` scripts that ``spark-submit`` runs and of the wheel's console entry points
    (:mod:`hitpredict.jobs`).

    Returns on exit status 0: a Databricks wheel task runs the entry point inside the driver's Python, where a
    ``SystemExit`` even with status 0 need not read as success. Raises ``SystemExit(status)`` on any other status.
    """
    ensure_keras2()   # before anything imports TensorFlow
    status = main([command_name, *(sys.argv[1:] if argv is None else argv)])
    if status:
        sys.exit(status)

if __name__ == "__main__":
    sys.exit(main())
