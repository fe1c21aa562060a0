"""The ``hitpredict`` command line: one sub-command per job, plus demo and tools."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Sequence

from hitpredict.config import Config, ConfigError, load_config

log = logging.getLogger("hitpredict")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default=None, help="YAML config (default: built-in embedded defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set fetch.max_concurrency=32 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitpredict", description="Predict a track's hit potential from its audio.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("demo", "run the pipeline's stages end to end on the bundled sample catalogue"),
        ("sample", "generate the sample catalogue (MP3s + catalogue.csv) if it is not there yet"),
        ("tables", "list the lake's tables: location, version, files, rows"),
        ("check-stack", "prove the pinned stack: imports, then Petastorm -> Horovod (2 gloo processes) -> Keras"),
    ]:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _common(cmd)
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


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from hitpredict.demo import run_demo

    started = time.monotonic()
    report = run_demo(config, _spark(config))
    print("\nstage               rows in   written   seconds  notes")
    for s in report.stages:
        print(f"{s.name:<18} {s.rows_in:>8} {s.rows_written:>9} {s.seconds:>9.1f}  {s.notes}")
    _print_tables(report.tables)
    for name, rows in report.samples.items():
        print(f"\nfirst rows of {name}:")
        for row in rows:
            shown = {k: v for k, v in row.items() if k in ("track_id", "title", "primary_artist", "popularity", "region")}
            print("  ", shown)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


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

    _print_tables(open_lake(config.lake, _spark(config)).tables())
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
    "sample": cmd_sample,
    "tables": cmd_tables,
    "check-stack": cmd_check_stack,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "urllib3", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.conf, args.overrides)
    except ConfigError as exc:
        print(f"hitpredict: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](config, args)
    finally:
        for session in _SESSIONS:
            session.stop()


if __name__ == "__main__":
    sys.exit(main())
