"""The lake's interface: what every engine offers the stages, and the errors a write raises.

Driver-side only. :class:`Lake` declares reading, appending, listing and maintaining the
project's Delta tables; its concrete methods (``ensure``, ``compact``, ``append_routed``,
``read_columns``, ``tables``, ``frame``) are written against the abstract ones, so an engine
(:mod:`hitpredict.lake.delta_rs`, :mod:`hitpredict.lake.spark_delta`) overrides only what it does
better. Every method a stage calls on a lake is declared here (a type checker refuses any other).
Schema checks come from :mod:`hitpredict.lake.conformance`; :func:`declared_arrow` and
:func:`collect_arrow` give both engines one way to hand back the declared Arrow schema.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import pyarrow as pa

from hitpredict.config import LakeConfig
from hitpredict.lake.conformance import SchemaMismatchError, _check_projection
from hitpredict.lake.files import ARROW_IPC_SCHEMA, arrow_ipc
from hitpredict.schemas import TABLES, arrow_schema, spark_schema

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = ["ArrowTransform", "Lake", "LakeWriteError", "SchemaMismatchError", "TableInfo", "collect_arrow",
           "declared_arrow"]

log = logging.getLogger(__name__)

#: A ``mapInArrow`` function: record batches in, record batches out (Spark passes an iterator; the
#: function may return any iterable, usually a generator).
ArrowTransform = Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]


def transform_output(transform_schema: "StructType | None") -> "StructType":
    """The schema a ``transform`` produces: ``transform_schema``, which an append with a transform must give."""
    if transform_schema is None:
        raise ValueError("an append with a transform needs transform_schema, the schema of the transform's output")
    return transform_schema


def declared_arrow(table: str, data: pa.Table | None, columns: Sequence[str] | None = None) -> pa.Table:
    """``data`` (``None``: no rows) with ``table``'s declared Arrow schema
    (:func:`hitpredict.schemas.arrow_schema`), or with the declared fields ``columns`` of it, in that
    order, each cast to its declared type: what ``read_arrow`` and ``read_columns`` return, whatever
    engine read the rows."""
    schema = arrow_schema(table)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if data is None:
        return schema.empty_table()
    return data.select(schema.names).cast(schema)


def collect_arrow(table: str, df: "DataFrame", columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of ``df`` (``table``'s rows, or its ``columns``) as Arrow on the driver, with the declared
    types (:func:`declared_arrow`).

    The record batches come from Spark's own Arrow conversion (``mapInArrow``, serialised as Arrow IPC
    by :func:`hitpredict.lake.files.arrow_ipc`), which Spark 3.5 and 4.0 both have: values stay exact
    (timestamps are instants, whatever ``spark.sql.session.timeZone``; nested lists and structs as they
    are), unlike a round trip through pandas.
    """
    names = list(columns) if columns is not None else arrow_schema(table).names
    parts = df.select(*names).mapInArrow(arrow_ipc, ARROW_IPC_SCHEMA).collect()
    batches = [batch for part in parts for batch in pa.ipc.open_stream(part["ipc"])]
    return declared_arrow(table, pa.Table.from_batches(batches) if batches else None, columns)


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
    def read_arrow(self, table: str) -> pa.Table:
        """The whole of ``table`` as Arrow on the driver, with its declared schema
        (:func:`hitpredict.schemas.arrow_schema`; empty if it does not exist): for small tables."""

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
            df = df.mapInArrow(transform, transform_output(transform_schema))
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
        """A few columns of ``table`` on the driver (keys, statuses), with their declared types: empty
        if the table does not exist."""
        if not self.exists(table):
            return declared_arrow(table, None, columns)
        return collect_arrow(table, self.read(table), columns)

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
