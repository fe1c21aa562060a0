"""The demo's stages on a tiny sample, and the command line's handling of bad config."""
from __future__ import annotations

import re
import subprocess
import sys

from deltalake import DeltaTable

from hitpredict.cli import main
from hitpredict.config import SparkConfig, load_config
from hitpredict.demo import run_demo
from hitpredict.spark import local_defaults


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


def test_session_settings_from_config_win_over_defaults():
    settings = local_defaults(SparkConfig(shuffle_partitions=3, conf={"spark.sql.session.timeZone": "Europe/Paris"}))
    assert settings["spark.sql.shuffle.partitions"] == "3"
    assert settings["spark.sql.session.timeZone"] == "Europe/Paris"
    assert settings["spark.sql.execution.arrow.pyspark.enabled"] == "true"
