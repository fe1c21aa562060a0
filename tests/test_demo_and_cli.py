"""The demo's stages on a tiny sample, and the command line's handling of bad config."""
from __future__ import annotations

from deltalake import DeltaTable

from hitpredict.cli import main
from hitpredict.config import SparkConfig, load_config
from hitpredict.demo import run_demo
from hitpredict.spark import local_defaults


def tiny_config(tmp_path):
    return load_config(None, [
        f"lake.root={tmp_path / 'lakehouse'}", f"sample.dir={tmp_path / 'sample'}",
        "sample.tracks=6", "sample.artists=3", "sample.seconds=2",
    ], environ={})


def test_demo_loads_the_sample_once_and_describes_the_tables(spark, tmp_path):
    config = tiny_config(tmp_path)
    first = run_demo(config, spark)
    assert [s.name for s in first.stages] == ["generate_sample", "load_sample"]
    assert first.stages[1].rows_written == 6
    assert [(t.name, t.version, t.rows) for t in first.tables] == [("catalogue", 0, 6)]
    assert len(first.samples["catalogue"]) == 5

    again = run_demo(config, spark)  # idempotent: nothing new to load, no new version
    assert again.stages[1].rows_written == 0
    assert DeltaTable(str(tmp_path / "lakehouse" / "catalogue")).version() == 0


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
