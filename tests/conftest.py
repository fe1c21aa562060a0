"""Shared fixtures: one local Spark session per test run, throwaway lakes."""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

from hitpredict.config import LakeConfig, SparkConfig  # noqa: E402
from hitpredict.lake import DeltaRsLake  # noqa: E402
from hitpredict.spark import get_spark  # noqa: E402


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A local[2] session shared by the whole run (starting Spark costs seconds)."""
    warehouse = tmp_path_factory.mktemp("warehouse")
    config = SparkConfig(
        master="local[2]",
        app_name="hitpredict-tests",
        driver_memory="2g",
        shuffle_partitions=4,
        conf={
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.warehouse.dir": str(warehouse),
        },
    )
    session = get_spark(config)
    yield session
    session.stop()


@pytest.fixture()
def lake(spark, tmp_path):
    """An empty delta-rs lake under the test's own folder."""
    return DeltaRsLake(LakeConfig(engine="delta-rs", root=str(tmp_path / "lakehouse")), spark)


@pytest.fixture(scope="session")
def mp3(tmp_path_factory) -> bytes:
    """A 3 s synthetic MP3: the bytes the loopback preview servers serve."""
    from hitpredict.synth.music import TrackStyle, render, write_audio

    path = tmp_path_factory.mktemp("audio") / "a.mp3"
    write_audio(path, render(TrackStyle(seconds=3.0, seed=2), 22050), 22050, "MP3")
    return path.read_bytes()
