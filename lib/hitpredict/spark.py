"""The Spark session factory.

Jobs take an injectable session: tests pass their own, ``spark-submit`` and
Databricks provide one, and on the embedded default (``spark.master`` set in the
config and no session provided) a local session is built with sensible memory,
Arrow and loopback settings.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from hitpredict.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def provided_by_platform() -> bool:
    """True under spark-submit or on Databricks, where the platform owns the session."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def get_spark(config: SparkConfig, spark: "SparkSession | None" = None) -> "SparkSession":
    """Return ``spark`` if given, the platform's session if there is one, else a local one.

    Parameters
    ----------
    config : the ``spark`` section of the run's config.
    spark : a session to use as is (tests inject theirs).
    """
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(config.app_name)
    if config.master and not provided_by_platform():
        # Executors' Python must be this interpreter (the project's venv).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = builder.master(config.master).config("spark.driver.memory", config.driver_memory)
    for key, value in local_defaults(config).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark %s, master %s", session.version, session.sparkContext.master)
    return session


def local_defaults(config: SparkConfig) -> dict[str, str]:
    """Settings every hitpredict session gets; ``config.conf`` entries win."""
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_rows),
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",  # jobs log their own progress
    }
    settings.update(config.conf)
    return settings
