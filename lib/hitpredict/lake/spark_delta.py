"""The ``delta`` engine: Spark's own ``format("delta")``, by path or as Unity Catalog tables.

Runs on the driver (Spark writes the files). Needs delta-spark on the cluster (built into
Databricks runtimes). Keyed tables (``schemas.KEYS``) are insert-if-absent with
``MERGE INTO ... WHEN NOT MATCHED THEN INSERT *``, retried when a concurrent append committed
first; unkeyed tables are plain appends carrying ``commit_info`` as the commit's ``userMetadata``.
A table made by an older release may hold columns no longer declared (the ``examples`` table's
copies of the features): reads select the declared ones, and writes fill the others with nulls
(:func:`with_table_columns`).

No test here runs this engine (its MERGE, OPTIMIZE and VACUUM need the delta-spark jars, which
are not available offline); the behaviour it must share with ``delta-rs`` is described by
``tests/test_lake.py`` and ``tests/test_exactly_once.py``.
"""
from __future__ import annotations

import json
import logging
import random
import time
import uuid
from typing import TYPE_CHECKING

import pyarrow as pa

from hitpredict.lake.base import ArrowTransform, Lake, LakeWriteError, TableInfo, collect_arrow, transform_output
from hitpredict.lake.conformance import conform
from hitpredict.lake.files import _task_error
from hitpredict.schemas import arrow_schema, table_key

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row
    from pyspark.sql.types import StructType

__all__ = ["SparkDeltaLake", "with_table_columns"]

log = logging.getLogger(__name__)


def with_table_columns(df: "DataFrame", table_schema: "StructType") -> "DataFrame":
    """``df`` with a typed null column for each column of ``table_schema`` (the table as stored) that it lacks,
    after its own columns: what a write of the declared columns needs on a table made by an older release
    that declared more (the ``examples`` table's copies of the features, for one), so that ``MERGE ... INSERT *``
    and an append both find every column of the table and leave those null."""
    from pyspark.sql import functions as F

    have = set(df.columns)
    extra = [F.lit(None).cast(f.dataType).alias(f.name) for f in table_schema.fields if f.name not in have]
    return df.select(*df.columns, *extra) if extra else df


def _is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's optimistic-concurrency conflict (retry the operation)."""
    names = ("ConcurrentAppendException", "ConcurrentTransactionException", "ConcurrentWriteException",
             "ConcurrentDeleteReadException", "ProtocolChangedException", "MetadataChangedException")
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in names)


class SparkDeltaLake(Lake):
    """Spark's own Delta support: paths under ``root``, or Unity Catalog tables.

    With ``lake.catalog`` and ``lake.schema`` set, table ``t`` is ``catalog.schema.t``;
    otherwise it is the folder ``<lake.root>/t``.
    """

    def location(self, table: str) -> str:
        """``catalog.schema.table`` for Unity Catalog tables, else ``<lake.root>/<table>``.

        Raises ``KeyError`` for a table that is not declared in :mod:`hitpredict.schemas`.
        """
        arrow_schema(table)
        if self.config.catalog:
            return f"{self.config.catalog}.{self.config.schema_name}.{table}"
        return f"{self.config.root.rstrip('/')}/{table}"

    def _by_name(self) -> bool:
        return self.config.catalog is not None

    def exists(self, table: str) -> bool:
        """Whether the catalog holds ``table`` (by name), or its folder is a Delta table (by path)."""
        if self._by_name():
            return self.spark.catalog.tableExists(self.location(table))
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.location(table))

    def _ref(self, table: str) -> str:
        loc = self.location(table)
        return loc if self._by_name() else f"delta.`{loc}`"

    def _one_row(self, query: str) -> "Row":
        """The first row ``query`` returns (``DESCRIBE`` of a table that exists always returns one)."""
        row = self.spark.sql(query).first()
        if row is None:
            raise RuntimeError(f"{query} returned no row")
        return row

    def version(self, table: str) -> int | None:
        """Latest committed version of ``table`` (``DESCRIBE HISTORY``), ``None`` if it does not exist."""
        if not self.exists(table):
            return None
        return int(self._one_row(f"DESCRIBE HISTORY {self._ref(table)} LIMIT 1")["version"])

    def _stored(self, table: str) -> "DataFrame":
        """Every column the existing ``table`` stores, the ones no longer declared included."""
        if self._by_name():
            return self.spark.read.table(self.location(table))
        return self.spark.read.format("delta").load(self.location(table))

    def read(self, table: str) -> "DataFrame":
        """The table's live rows, its declared columns in their declared order (empty if it does not exist;
        columns an older release declared and this one does not are left out)."""
        if not self.exists(table):
            return self._empty(table)
        return self._stored(table).select(*[f.name for f in arrow_schema(table)])

    def read_arrow(self, table: str) -> pa.Table:
        """The table's live rows as Arrow on the driver, with its declared schema (through Spark's own
        Arrow conversion, :func:`~hitpredict.lake.base.collect_arrow`): for small tables."""
        return collect_arrow(table, self.read(table))

    def append(
        self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> int | None:
        """Append ``df`` (or ``transform``'s output over ``df``, run in Spark's Python workers) to
        ``table`` with Spark's Delta writer; keyed tables get only rows whose key is new (MERGE).
        ``commit_info`` goes into the commit's ``userMetadata`` as JSON.

        Returns
        -------
        version : int or None
            The table's version after the write.

        Raises
        ------
        SchemaMismatchError
            The rows do not match the table's declared schema.
        LakeWriteError
            The write failed; the table is unchanged.
        """
        if transform is not None:
            df = df.mapInArrow(transform, transform_output(transform_schema))
            df = df.select(*[c for c in arrow_schema(table).names if c in df.columns])
        df = conform(table, df)
        if self.exists(table):   # a table from an older release may hold columns no longer declared
            df = with_table_columns(df, self._stored(table).schema)
        if table_key(table):
            return self._merge_new_keys(table, df, commit_info)
        writer = df.write.format("delta").mode("append")
        if commit_info:
            writer = writer.option("userMetadata", json.dumps(commit_info, sort_keys=True))
        try:
            if self._by_name():
                writer.saveAsTable(self.location(table))
            else:
                writer.save(self.location(table))
        except Exception as exc:  # noqa: BLE001 - re-raised with the table named
            raise LakeWriteError(f"append to table {table!r} failed, table unchanged: {_task_error(exc)}") from exc
        return self.version(table)

    def _merge_new_keys(self, table: str, df: "DataFrame", commit_info: dict[str, str] | None) -> int | None:
        """Insert the rows of ``df`` whose key ``table`` does not hold (``MERGE INTO ... WHEN NOT MATCHED
        THEN INSERT *``), retried when a concurrent commit added rows first (ConcurrentAppendException):
        the retry's MERGE sees them. Not run here (no delta-spark jars offline); see the module docstring."""
        from pyspark import StorageLevel

        key = table_key(table)
        # Materialised once: a retried MERGE must not run the source's transform (fetches) again.
        source = df.dropDuplicates(list(key)).persist(StorageLevel.MEMORY_AND_DISK)
        view = f"hitpredict_merge_{uuid.uuid4().hex}"
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
        metadata_key = "spark.databricks.delta.commitInfo.userMetadata"
        previous = self.spark.conf.get(metadata_key, None)
        try:
            source.count()
            source.createOrReplaceTempView(view)
            if commit_info:
                self.spark.conf.set(metadata_key, json.dumps(commit_info, sort_keys=True))
            for attempt in range(self.config.commit_retries + 1):
                try:
                    self._create_if_missing(table)
                    self.spark.sql(f"MERGE INTO {self._ref(table)} AS t USING {view} AS s ON {on} "
                                   "WHEN NOT MATCHED THEN INSERT *")
                    break
                except Exception as exc:  # noqa: BLE001 - retried on a commit conflict, else re-raised
                    if not _is_commit_conflict(exc) or attempt >= self.config.commit_retries:
                        raise LakeWriteError(f"merge into table {table!r} failed, table unchanged: "
                                             f"{_task_error(exc)}") from exc
                    log.info("%s: a concurrent write committed first; merging again (attempt %d)", table, attempt + 2)
                    time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.5))
        finally:
            if previous is None:
                self.spark.conf.unset(metadata_key)
            else:
                self.spark.conf.set(metadata_key, previous)
            self.spark.catalog.dropTempView(view)
            source.unpersist()
        return self.version(table)

    def _create_if_missing(self, table: str) -> None:
        """Create ``table`` empty; a concurrent creator winning the race is fine."""
        if self.exists(table):
            return
        writer = self._empty(table).write.format("delta").mode("append")
        try:
            writer.saveAsTable(self.location(table)) if self._by_name() else writer.save(self.location(table))
        except Exception:  # noqa: BLE001 - lost the creation race: the table exists, which is all we need
            if not self.exists(table):
                raise

    def _optimize(self, table: str) -> None:
        self.spark.sql(f"OPTIMIZE {self._ref(table)}")

    def vacuum(self, table: str, retain_hours: int | None = None) -> int | None:
        """Delta ``VACUUM`` of ``table``; with ``retain_hours`` the retention check is switched off for
        this call (the operator chose it). Always returns ``None``: Spark does not report how many files
        it deleted (and a table that does not exist is left alone)."""
        if not self.exists(table):
            return None
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        if retain_hours is None:
            self.spark.sql(f"VACUUM {self._ref(table)}")
            return None
        previous = self.spark.conf.get(check, None)
        self.spark.conf.set(check, "false")  # the operator chose the retention
        try:
            self.spark.sql(f"VACUUM {self._ref(table)} RETAIN {int(retain_hours)} HOURS")
        finally:
            self.spark.conf.unset(check) if previous is None else self.spark.conf.set(check, previous)
        return None

    def describe(self, table: str) -> TableInfo | None:
        """Version (``DESCRIBE HISTORY``), live files (``DESCRIBE DETAIL``) and rows (a count, one Spark
        job) of ``table``; ``None`` if it does not exist."""
        if not self.exists(table):
            return None
        detail = self._one_row(f"DESCRIBE DETAIL {self._ref(table)}")
        return TableInfo(table, self.location(table), self.version(table) or 0, int(detail["numFiles"]),
                         self.read(table).count())
