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
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, cast

import pandas as pd

from hitpredict.config import SparkConfig
from hitpredict.logs import verbosity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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
    settings = local_defaults(config)
    if config.master and not provided_by_platform():
        # Executors' Python must be this interpreter (the project's venv).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = builder.master(config.master).config("spark.driver.memory", config.driver_memory)
        # The JVM we start logs at the run's verbosity from its first line (setLogLevel comes later).
        settings.update(quiet_jvm_options(settings, log4j_config(verbosity())))
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(SPARK_LOG_LEVELS[verbosity()])
    log.info("spark %s, master %s", session.version, session.sparkContext.master)
    return session


@contextmanager
def spark_session(config: SparkConfig, spark: "SparkSession | None" = None) -> Iterator["SparkSession"]:
    """The session of one command, stopped on the way out if this call started it.

    ``with spark_session(config.spark) as spark: ...`` yields what :func:`get_spark` returns. On exit
    (normal or by an exception) the session is stopped, unless it was given as ``spark`` (tests inject
    theirs), the platform provides it (:func:`provided_by_platform`: spark-submit, Databricks), or it
    was already active when the block began (a notebook's or a test run's own session).

    Parameters
    ----------
    config : the ``spark`` section of the run's config.
    spark : a session to use as is and leave running.
    """
    if spark is not None:
        yield spark
        return
    from pyspark.sql import SparkSession

    owned = not provided_by_platform() and SparkSession.getActiveSession() is None
    session = get_spark(config)
    try:
        yield session
    finally:
        if owned:
            session.stop()


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


#: Spark's log level for each verbosity of :mod:`hitpredict.logs`.
SPARK_LOG_LEVELS = {0: "ERROR", 1: "WARN", 2: "INFO"}

LOG4J2_PROPERTIES = """\
# hitpredict: Spark's log4j2 settings for a run at verbosity {verbosity} (written by hitpredict.spark)
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
# The loggers of PySpark's gateway and the shell at the root's level: Spark then prints no
# "Setting default log level" banner.
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = {level}
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = {level}
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = {quiet}
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
"""


def log4j_config(level: int, directory: str | Path | None = None) -> Path:
    """A log4j2 properties file for a JVM started at verbosity ``level`` (0: errors only, 1: warnings,
    2: info). Without one, Spark prints its banner and WARN lines before any session exists."""
    folder = Path(directory or tempfile.gettempdir())
    path = folder / f"hitpredict-log4j2-{level}-{os.getuid() if hasattr(os, 'getuid') else 0}.properties"
    text = LOG4J2_PROPERTIES.format(verbosity=level, level=SPARK_LOG_LEVELS[level].lower(),
                                    quiet="error" if level == 0 else "warn")
    if not path.is_file() or path.read_text() != text:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    return path


def quiet_jvm_options(settings: dict[str, str], log4j: Path) -> dict[str, str]:
    """``spark.{driver,executor}.extraJavaOptions`` of ``settings`` with ``log4j`` as the log4j2
    configuration, unless they name one already."""
    out = {}
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        current = settings.get(key, "")
        if "log4j2.configurationFile" not in current and "log4j.configurationFile" not in current:
            out[key] = f"{current} -Dlog4j2.configurationFile=file:{log4j}".strip()
    return out


def to_pandas(df: "DataFrame") -> pd.DataFrame:
    """``df.toPandas()``, typed as the pandas DataFrame it is (pyspark's stubs name a
    ``PandasDataFrameLike`` that type checkers cannot resolve)."""
    return cast(pd.DataFrame, df.toPandas())
