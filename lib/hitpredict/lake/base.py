"""The lake's interface: what every engine offers the stages, and the errors a write raises.

Driver-side only. :class:`Lake` declares reading, appending, listing and maintaining the
project's Delta tables; its concrete methods (``ensure``, ``compact``, ``append_routed``,
``read_columns``, ``tables``, ``frame``) are written against the abstract ones, so an engine
(:mod:`hitpredict.lake.delta_rs`, :mod:`hitpredict.lake.spark_delta`) overrides only what it does
better. Schema checks come from :mod:`hitpredict.lake.conformance`.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import pyarrow as pa

from hitpredict.config import LakeConfig
from hitpredict.lake.conformance import SchemaMismatchError, _check_projection
from hitpredict.schemas import TABLES, arrow_schema, spark_schema

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = ["ArrowTransform", "Lake", "LakeWriteError", "SchemaMismatchError", "TableInfo"]

log = logging.getLogger(__name__)

#: A ``mapInArrow`` function: record batches in, record batches out.
ArrowTransform = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


class LakeWriteError(RuntimeError):
    """A write failed; the table is unchanged and the write's files were removed."""


@dataclass(frozen=True)
class TableInfo:
    """What ``Lake.tables()`` reports about one table.

    ``location`` is its path (or catalog name), ``version`` its latest committed Delta version,
    ``files`` the number of live data files and ``rows`` the number of rows (``None`` when the
    engine cannot tell without a scan).
    """

    name: str
    location: str
    version: int
    files: int
    rows: int | None


class Lake(ABC):
    """Reads, appends and lists the project's Delta tables.

    Parameters
    ----------
    config : LakeConfig
        Where the tables live (``root`` or a Unity Catalog ``catalog.schema``) and how writes behave.
    spark : SparkSession
        The session reads return DataFrames of and writes run on.
    """

    def __init__(self, config: LakeConfig, spark: "SparkSession") -> None:
        self.config = config
        self.spark = spark

    @abstractmethod
    def location(self, table: str) -> str:
        """Path (or catalog name) of ``table``."""

    @abstractmethod
    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created."""

    @abstractmethod
    def version(self, table: str) -> int | None:
        """Latest committed version of ``table``, ``None`` if it does not exist."""

    @abstractmethod
    def read(self, table: str) -> "DataFrame":
        """The live rows of ``table`` (an empty DataFrame with its schema if it does not exist)."""

    @abstractmethod
    def append(
        self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> int | None:
        """Append ``df`` (or ``transform``'s output over ``df``) to ``table`` in one transaction.

        ``transform`` is a ``mapInArrow`` function producing ``transform_schema``; engines
        that write from the executors run it in the writer's own Python process. Returns
        the table's version after the write.
        """

    def scan_groups(self, table: str, rows_per_group: int) -> list["DataFrame"]:
        """The table's rows as DataFrames over disjoint groups of about ``rows_per_group`` rows,
        so a long job can commit group by group. This engine gives one group."""
        return [self.read(table)]

    @abstractmethod
    def describe(self, table: str) -> TableInfo | None:
        """Version, files and rows of ``table``; ``None`` if it does not exist."""

    def ensure(self, table: str) -> None:
        """Create ``table`` (empty) if it does not exist, so readers and joins can rely on it."""
        if not self.exists(table):
            self.append(table, self._empty(table))

    def compact(self, table: str, min_files: int = 2) -> tuple[int, int] | None:
        """Rewrite ``table``'s small data files into few large ones (Delta ``OPTIMIZE``; rows and
        history unchanged, old files stay until a vacuum) when it holds at least ``min_files``.
        ``(files before, files after)``, or ``None`` if the table does not exist."""
        before = self.describe(table)
        if before is None:
            return None
        if before.files < max(2, min_files):
            return before.files, before.files
        self._optimize(table)
        after = self.describe(table)
        files_after = after.files if after is not None else 0
        log.info("%s: compacted %d files into %d", table, before.files, files_after)
        return before.files, files_after

    @abstractmethod
    def _optimize(self, table: str) -> None:
        """Run the engine's compaction of ``table``."""

    @abstractmethod
    def vacuum(self, table: str, retain_hours: int | None = None) -> int | None:
        """Delete ``table``'s files that no live version needs and that are older than ``retain_hours``
        (Delta ``VACUUM``: files removed by compaction, files of writes that never committed). ``None``:
        the table's own retention (7 days by default). Time travel to versions older than the retention
        is lost, and a live writer's uncommitted files older than it would be deleted: keep it above the
        longest write. Returns the number of files deleted (``None`` when the engine does not say), or
        ``None`` if the table does not exist."""

    def append_routed(
        self, df: "DataFrame", route_column: str, tables: Sequence[str], commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> dict[str, int | None]:
        """Append each row of ``df`` to the table its ``route_column`` names (one commit per table).

        ``df`` holds the union of the tables' columns; each table gets its own columns.
        With ``transform`` (a ``mapInArrow`` function producing ``transform_schema``), the
        rows written are ``transform``'s output: engines that write from the executors run
        it in the same Python process as the writer, so its output never crosses to the JVM.
        Tables are committed in the order given: if a later commit fails, earlier ones stand.
        Returns each table's version after its commit.
        """
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        if transform is not None:
            df = df.mapInArrow(transform, transform_schema)
        for table in tables:
            _check_projection(table, df.schema)
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            return {
                table: self.append(table, df.where(F.col(route_column) == table).select(*arrow_schema(table).names),
                                   commit_info)
                for table in tables
            }
        finally:
            df.unpersist()

    def read_columns(self, table: str, columns: Sequence[str]) -> pa.Table:
        """A few columns of ``table`` on the driver (keys, statuses): empty if the table does not exist."""
        schema = arrow_schema(table)
        if not self.exists(table):
            return pa.schema([schema.field(c) for c in columns]).empty_table()
        return pa.Table.from_pandas(self.read(table).select(*columns).toPandas(), preserve_index=False)

    def tables(self) -> list[TableInfo]:
        """Every declared table that exists, in declaration order."""
        found = (self.describe(name) for name in TABLES)
        return [info for info in found if info is not None]

    def _empty(self, table: str) -> "DataFrame":
        return self.spark.createDataFrame([], spark_schema(table))

    def frame(self, table: str, rows: "pd.DataFrame") -> "DataFrame":
        """A Spark DataFrame with ``table``'s schema from driver-side rows (pandas, via Arrow)."""
        if rows.empty:
            return self._empty(table)
        return self.spark.createDataFrame(rows[arrow_schema(table).names], spark_schema(table))
