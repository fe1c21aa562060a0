"""The demo's stages on a tiny sample, the command line's handling of errors (user errors in one
line, bugs with a traceback), its declared commands, and the Spark session's lifetime."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from hitpredict import cli, spark as spark_module
from hitpredict.cli import main
from hitpredict.config import SparkConfig, load_config
from hitpredict.errors import HitpredictError
from hitpredict.spark import local_defaults, spark_session
from hitpredict.stages.demo import run_demo


def tiny_config(tmp_path):
    return load_config(None, [
        f"lake.root={tmp_path / 'lakehouse'}", f"sample.dir={tmp_path / 'sample'}",
        "sample.tracks=12", "sample.artists=4", "sample.seconds=6", "sample.preview_port=0",
    ], environ={})


def test_demo_runs_ingest_fetch_and_features_once(spark, tmp_path):
    config = tiny_config(tmp_path)
    first = run_demo(config, spark, train=False)  # training has its own tests
    assert [s.name for s in first.stages] == ["generate_sample", "ingest_catalogue", "fetch_previews",
                                              "extract_features", "build_dataset"]
    assert [(s.rows_in, s.ok, s.failed_total) for s in first.stages[1:]] == [(12, 12, 0)] * 4
    assert first.preview_server.startswith("http://127.0.0.1:")
    tables = {t.name: t for t in first.tables}
    assert {n: tables[n].rows for n in ("catalogue", "previews", "features", "examples", "datasets")} == \
        {"catalogue": 12, "previews": 12, "features": 12, "examples": 12, "datasets": 1}
    assert all(r["status"] == "ok" for r in first.samples["features"])

    again = run_demo(config, spark, train=False)  # idempotent: every stage finds nothing to do
    assert [(s.rows_in, s.ok) for s in again.stages[1:]] == [(12, 0), (0, 0), (0, 0), (12, 0)]
    assert again.stages[-1].notes.endswith("(up to date)")
    assert DeltaTable(str(tmp_path / "lakehouse" / "catalogue")).version() == tables["catalogue"].version

    # A fresh process compacts two of those tables (and lists them all); rows stay as they were.
    # With -v it also shows third-party warnings (Spark's log4j WARN lines), hidden by default.
    out = subprocess.run([sys.executable, "-m", "hitpredict.cli", "tables", "--compact", "previews", "features",
                          "--set", f"lake.root={tmp_path / 'lakehouse'}", "-v"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^\S+ \S+ WARN \w+: ", out.stderr, re.M), out.stderr[-3000:]
    for name in ("previews", "features"):
        files = re.search(rf"^{name}: (\d+) files -> (\d+)$", out.stdout, re.M)
        assert files and int(files[1]) == tables[name].files >= 2 and files[2] == "1", out.stdout
        listed = re.search(rf"^{name}\s+(\d+)\s+(\d+)\s+(\d+)\s", out.stdout, re.M)
        assert listed and (int(listed[1]), int(listed[2]), int(listed[3])) == (tables[name].version + 1, 1, 12)


def test_cli_reports_a_bad_override_in_one_line_and_exits_2(capsys):
    assert main(["tables", "--set", "lake.engine=parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "lake.engine = 'parquet' is not allowed" in err


def _with_handler(monkeypatch, name, handler):
    """Make command ``name`` run ``handler`` for the rest of the test."""
    monkeypatch.setitem(cli.COMMANDS, name, dataclasses.replace(cli.COMMANDS[name], handler=handler))


def test_cli_prints_a_user_error_in_one_line_and_exits_2(monkeypatch, capsys):
    class BadInput(HitpredictError, ValueError):
        pass

    def fails(config, args):
        raise BadInput("catalogue.csv row 3: no track_id")

    _with_handler(monkeypatch, "sample", fails)
    assert main(["sample"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "hitpredict: catalogue.csv row 3: no track_id\n"
    assert "Traceback" not in captured.out + captured.err


def test_cli_reports_a_bug_with_its_traceback_and_exits_1(monkeypatch, capsys):
    def crashes(config, args):
        raise RuntimeError("unexpected state in the planner")

    _with_handler(monkeypatch, "sample", crashes)
    assert main(["sample"]) == 1
    err = capsys.readouterr().err
    assert "hitpredict sample: this is a bug: please report it with the traceback below" in err
    assert f"hitpredict {cli.__version__}" in err and "command: sample" in err
    assert "Traceback (most recent call last):" in err and "in crashes" in err
    assert err.rstrip().endswith("RuntimeError: unexpected state in the planner")


def test_cli_bug_report_shows_no_secret_value(monkeypatch, capsys):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-5f8a9b1c2d")

    def crashes(config, args):
        raise RuntimeError("request failed with token tok-5f8a9b1c2d")

    _with_handler(monkeypatch, "sample", crashes)
    assert main(["sample"]) == 1
    err = capsys.readouterr().err
    assert "tok-5f8a9b1c2d" not in err and "request failed with token ***" in err


def test_cli_lets_an_interrupt_through(monkeypatch):
    def interrupted(config, args):
        raise KeyboardInterrupt

    _with_handler(monkeypatch, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["sample"])


def test_every_command_is_declared_once_with_its_aliases():
    parser = cli.build_parser()
    assert list(cli.COMMANDS) == ["demo", "ingest_catalogue", "fetch_previews", "extract_features", "build_dataset",
                                  "train_model", "score_catalogue", "score_folder", "score", "report", "sample",
                                  "tables", "check-stack"]
    for name, aliases in [("ingest_catalogue", ["ingest-catalogue", "ingest"]), ("fetch_previews", ["fetch-previews"]),
                          ("score_folder", ["score-folder"]), ("check-stack", [])]:
        assert list(cli.COMMANDS[name].aliases) == aliases
        for spelling in (name, *aliases):
            extra = ["DIR"] if name == "score_folder" else []
            assert parser.parse_args([spelling, *extra]).command == name
    with pytest.raises(ValueError, match="declared twice"):
        cli.command("sample", "again")(lambda config, args: 0)


def test_commands_without_spark_never_start_it(monkeypatch, tmp_path, capsys):
    def no_spark(*args, **kwargs):
        raise AssertionError("sample started Spark")

    monkeypatch.setattr(spark_module, "get_spark", no_spark)
    assert main(["sample", "--set", f"sample.dir={tmp_path}", "--set", "sample.tracks=1",
                 "--set", "sample.artists=1", "--set", "sample.seconds=1"]) == 0
    assert capsys.readouterr().out.startswith(f"1 tracks: {tmp_path / 'catalogue.csv'}")


def test_spark_session_leaves_a_session_it_did_not_start_running(spark):
    with spark_session(SparkConfig(), spark) as given:
        assert given is spark
    with spark_session(SparkConfig()) as active:   # the test run's session is active: not ours to stop
        assert active is spark
    assert spark.range(3).count() == 3


def test_spark_session_stops_the_session_it_started_unless_the_platform_owns_it(monkeypatch):
    from pyspark.sql import SparkSession

    stopped = []

    class Started:
        def stop(self):
            stopped.append(self)

    monkeypatch.setattr(spark_module, "get_spark", lambda config: Started())
    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with pytest.raises(RuntimeError, match="stage failed"):
        with spark_session(SparkConfig()) as session:
            raise RuntimeError("stage failed")
    assert stopped == [session]
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")   # spark-submit's session: the platform stops it
    with spark_session(SparkConfig()):
        pass
    assert stopped == [session]


def test_session_settings_from_config_win_over_defaults():
    settings = local_defaults(SparkConfig(shuffle_partitions=3, conf={"spark.sql.session.timeZone": "Europe/Paris"}))
    assert settings["spark.sql.shuffle.partitions"] == "3"
    assert settings["spark.sql.session.timeZone"] == "Europe/Paris"
    assert settings["spark.sql.execution.arrow.pyspark.enabled"] == "true"
