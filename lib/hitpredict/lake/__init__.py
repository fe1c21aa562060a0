"""The lake: read, append and list the project's Delta tables with either engine.

Shaped like delta-rs's own python ``writer/`` package, one concern per module:

===========================  ==========  ===================================================
module                       runs on     holds
===========================  ==========  ===================================================
:mod:`~.base`                driver      the interface: :class:`Lake`, :class:`TableInfo`,
                                         :class:`LakeWriteError`, ``ArrowTransform``,
                                         :func:`collect_arrow` (Spark rows to the declared
                                         Arrow schema, both engines)
:mod:`~.conformance`         both        the schema on write: :func:`schema_differences`,
                                         :func:`conform` and :class:`SchemaMismatchError`
                                         (driver), :func:`check_not_null` (executors)
:mod:`~.delta_rs`            driver      ``engine: delta-rs``: :class:`DeltaRsLake`, its
                                         exactly-once commit, keyed insert-if-absent
                                         (:func:`key_values`, :func:`new_key_mask`), the
                                         landed-commit check and :func:`remove_orphans`
:mod:`~.files`               executors   the delta-rs file writer: :class:`ParquetTaskWriter`
                                         (a ``mapInArrow`` function), :func:`file_stats`,
                                         :func:`write_data_file`, the task error mark;
                                         :func:`arrow_ipc` (a read's batches to the driver)
:mod:`~.spark_delta`         driver      ``engine: delta``: :class:`SparkDeltaLake`
===========================  ==========  ===================================================

Imports go one way: the engines (``delta_rs``, ``spark_delta``) import ``base``, ``files`` and
``conformance``; ``base`` imports ``files`` and ``conformance``, ``files`` only ``conformance`` (it
names ``base.ArrowTransform`` for type checkers only), so the executor code depends on no driver code. (Python
still runs this package's ``__init__``, which re-exports the engines, when an executor unpickles a writer;
the engines import ``deltalake`` and ``pyspark`` lazily, so that costs no heavy import.)

``engine: delta-rs`` (the embedded default, no JVM jars)
    Executors write Parquet data files straight into the table folder (``mapInArrow``) and
    return each file's metadata; the driver then commits one Delta transaction with the
    ``deltalake`` package. Every write happens exactly once (a landed commit is never undone,
    overlapping writers never duplicate a key, a killed writer's files are deleted later):
    see :mod:`hitpredict.lake.delta_rs`.

``engine: delta``
    Spark's own ``format("delta")`` (delta-spark on a cluster, built into Databricks
    runtimes), by path or as Unity Catalog tables; keyed tables use ``MERGE INTO``. No test
    here runs this engine: its MERGE, OPTIMIZE and VACUUM code needs the delta-spark jars,
    which are not available offline.

Both engines refuse a DataFrame whose columns or types differ from the table's declared
schema (:mod:`hitpredict.schemas`), naming every difference. ``open_lake`` picks the engine
named by ``lake.engine``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hitpredict.config import LakeConfig
from hitpredict.lake.base import ArrowTransform, Lake, LakeWriteError, TableInfo
from hitpredict.lake.conformance import SchemaMismatchError, check_not_null, conform, schema_differences
from hitpredict.lake.delta_rs import DeltaRsLake, key_values, new_key_mask, remove_orphans
from hitpredict.lake.files import ParquetTaskWriter, file_stats, write_data_file
from hitpredict.lake.spark_delta import SparkDeltaLake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "ArrowTransform", "DeltaRsLake", "Lake", "LakeWriteError", "ParquetTaskWriter", "SchemaMismatchError",
    "SparkDeltaLake", "TableInfo", "check_not_null", "conform", "file_stats", "key_values", "new_key_mask",
    "open_lake", "remove_orphans", "schema_differences", "write_data_file",
]


def open_lake(config: LakeConfig, spark: "SparkSession") -> Lake:
    """The lake for ``config.engine``: a :class:`DeltaRsLake` (``delta-rs``) or a
    :class:`SparkDeltaLake` (``delta``), reading and writing through ``spark``."""
    engines: dict[str, type[Lake]] = {"delta-rs": DeltaRsLake, "delta": SparkDeltaLake}
    return engines[config.engine](config, spark)
