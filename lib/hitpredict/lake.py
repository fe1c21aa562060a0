"""The lake: read, append and list Delta tables with either engine.

``engine: delta-rs`` (the embedded default, no JVM jars)
    Executors write Parquet data files straight into the table folder
    (``mapInArrow``) and return each file's metadata; the driver then commits one
    Delta transaction with the ``deltalake`` package. Readers list the live files
    from the Delta log, so files of a write that failed, or of a task attempt that
    Spark retried, are never seen, and they are deleted before ``append`` returns.

``engine: delta``
    Spark's own ``format("delta")`` (delta-spark on a cluster, built into
    Databricks runtimes), by path or as Unity Catalog tables.

Both engines refuse a DataFrame whose columns or types differ from the table's
declared schema (:mod:`hitpredict.schemas`), naming every difference.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hitpredict.config import LakeConfig
from hitpredict.schemas import TABLES, arrow_schema, spark_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

#: Marker that lets the driver pick our own error out of a Spark task failure.
_ROW_ERROR_MARK = "hitpredict-lake-error: "


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the declared schema of the table it is written to."""


class LakeWriteError(RuntimeError):
    """A write failed; the table is unchanged and the write's files were removed."""


@dataclass(frozen=True)
class TableInfo:
    """What ``Lake.tables()`` reports about one table."""

    name: str
    location: str
    version: int
    files: int
    rows: int | None


# --------------------------------------------------------------------------- schema check


def schema_differences(table: str, actual: "StructType") -> list[str]:
    """Human-readable differences between ``actual`` and ``table``'s declared schema.

    Nullability is not compared here (Spark marks almost everything nullable);
    NOT NULL columns are checked on the data itself when it is written.
    """
    expected = {f.name: f.dataType.simpleString() for f in spark_schema(table).fields}
    got = {f.name: f.dataType.simpleString() for f in actual.fields}
    problems = [f"missing column {n} ({t})" for n, t in expected.items() if n not in got]
    problems += [f"unexpected column {n} ({t})" for n, t in got.items() if n not in expected]
    problems += [
        f"column {n} is {got[n]}, table has {t}"
        for n, t in expected.items()
        if n in got and got[n] != t
    ]
    return problems


def conform(table: str, df: "DataFrame") -> "DataFrame":
    """Return ``df`` with the table's column order, or raise ``SchemaMismatchError``."""
    problems = schema_differences(table, df.schema)
    if problems:
        raise SchemaMismatchError(f"refusing to write to table {table!r}: " + "; ".join(problems))
    return df.select(*[f.name for f in arrow_schema(table)])


def check_not_null(table: str, data: pa.Table) -> None:
    """Raise ``ValueError`` if a NOT NULL column of ``table`` holds nulls."""
    for field in arrow_schema(table):
        if not field.nullable and data.column(field.name).null_count:
            column = data.column(field.name)
            first = pc.index(pc.is_null(column), True).as_py()
            raise ValueError(
                f"table {table!r}: column {field.name} is NOT NULL but {column.null_count} "
                f"row(s) are null (first at row {first} of a batch)"
            )


# --------------------------------------------------------------------------- engines


class Lake(ABC):
    """Reads, appends and lists the project's Delta tables."""

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
    def append(self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None) -> int | None:
        """Append ``df`` to ``table`` in one transaction; returns the new version."""

    @abstractmethod
    def describe(self, table: str) -> TableInfo | None:
        """Version, files and rows of ``table``; ``None`` if it does not exist."""

    def tables(self) -> list[TableInfo]:
        """Every declared table that exists, in declaration order."""
        found = (self.describe(name) for name in TABLES)
        return [info for info in found if info is not None]

    def _empty(self, table: str) -> "DataFrame":
        return self.spark.createDataFrame([], spark_schema(table))


class DeltaRsLake(Lake):
    """Delta tables written by executors as Parquet and committed with ``deltalake``."""

    def location(self, table: str) -> str:
        arrow_schema(table)  # validates the name
        root = self.config.root
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root.rstrip('/')}/{table}"

    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(table))

    def version(self, table: str) -> int | None:
        from deltalake import DeltaTable

        return DeltaTable(self.location(table)).version() if self.exists(table) else None

    def read(self, table: str) -> "DataFrame":
        from deltalake import DeltaTable

        if not self.exists(table):
            return self._empty(table)
        files = DeltaTable(self.location(table)).file_uris()
        if not files:
            return self._empty(table)
        return self.spark.read.schema(spark_schema(table)).parquet(*files)

    def read_arrow(self, table: str) -> pa.Table:
        """The whole table as Arrow, on the driver: for small tables and tests."""
        from deltalake import DeltaTable

        if not self.exists(table):
            return arrow_schema(table).empty_table()
        return pa.table(DeltaTable(self.location(table)).to_pyarrow_table()).cast(arrow_schema(table))

    def describe(self, table: str) -> TableInfo | None:
        from deltalake import DeltaTable

        if not self.exists(table):
            return None
        dt = DeltaTable(self.location(table))
        adds = pa.table(dt.get_add_actions(flatten=True))
        rows = int(pc.sum(adds.column("num_records")).as_py() or 0) if "num_records" in adds.column_names else None
        return TableInfo(table, self.location(table), dt.version(), adds.num_rows, rows)

    def append(self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None) -> int | None:
        from deltalake import CommitProperties, DeltaTable, Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions

        df = conform(table, df)
        path = self.location(table)
        schema = arrow_schema(table)
        write_id = uuid.uuid4().hex
        fs, base = pafs.FileSystem.from_uri(path)
        fs.create_dir(base, recursive=True)
        writer = ParquetTaskWriter(table, path, write_id, self.config.rows_per_file)
        started = time.monotonic()
        actions: list[AddAction] = []
        try:
            for row in df.mapInArrow(writer, ParquetTaskWriter.OUTPUT_SCHEMA).collect():
                actions.append(AddAction(row.path, row.size, {}, row.modification_time, True, row.stats))
            info = CommitProperties(custom_metadata={"hitpredict.write_id": write_id, **(commit_info or {})})
            if self.exists(table):
                if not actions:
                    return self.version(table)
                DeltaTable(path).create_write_transaction(actions, "append", schema, commit_properties=info)
            else:
                create_table_with_add_actions(
                    path, Schema.from_arrow(schema), actions, mode="error", name=table, commit_properties=info
                )
        except Exception as exc:  # noqa: BLE001 - every failure must clean up, then re-raise
            removed = _remove_write_files(fs, base, write_id, keep=set())
            reason = _task_error(exc)
            log.error("append to %s failed; removed %d uncommitted file(s): %s", table, removed, reason)
            raise LakeWriteError(f"append to table {table!r} failed, table unchanged: {reason}") from exc
        # A task attempt that Spark retried may have left a file nobody committed.
        _remove_write_files(fs, base, write_id, keep={a.path for a in actions})
        version = DeltaTable(path).version()
        rows = sum(json.loads(a.stats)["numRecords"] for a in actions)
        log.info("%s: committed version %d (%d rows in %d files, %.1fs)",
                 table, version, rows, len(actions), time.monotonic() - started)
        return version


class ParquetTaskWriter:
    """The executor side of a delta-rs append: a picklable ``mapInArrow`` function.

    Writes the task's batches into Parquet files named ``part-<write_id>-...`` inside
    the table folder, rolling to a new file every ``rows_per_file`` rows, and yields
    one metadata row per file (path relative to the table, size, stats).
    """

    OUTPUT_SCHEMA = "path string, size long, modification_time long, stats string"

    def __init__(self, table: str, table_uri: str, write_id: str, rows_per_file: int) -> None:
        self.table = table
        self.table_uri = table_uri
        self.write_id = write_id
        self.rows_per_file = rows_per_file

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        schema = arrow_schema(self.table)
        fs, base = pafs.FileSystem.from_uri(self.table_uri)
        ctx = TaskContext.get()
        task = f"{ctx.partitionId():05d}-{ctx.attemptNumber()}" if ctx else "00000-0"
        prefix = f"part-{self.write_id}-{task}-{uuid.uuid4().hex[:8]}"
        files: list[dict[str, Any]] = []
        pending: list[pa.Table] = []
        pending_rows = 0

        def write_file(data: pa.Table) -> None:
            name = f"{prefix}-{len(files):04d}.snappy.parquet"
            with fs.open_output_stream(f"{base}/{name}") as out:
                pq.write_table(data, out, compression="snappy")
            files.append({
                "path": name,
                "size": fs.get_file_info(f"{base}/{name}").size,
                "modification_time": int(time.time() * 1000),
                "stats": json.dumps(file_stats(data)),
            })

        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                data = pa.Table.from_batches([batch]).select(schema.names)
                check_not_null(self.table, data)
                pending.append(data.cast(schema))
                pending_rows += batch.num_rows
                while pending_rows >= self.rows_per_file:
                    merged = pa.concat_tables(pending)
                    write_file(merged.slice(0, self.rows_per_file))
                    pending = [merged.slice(self.rows_per_file)]
                    pending_rows -= self.rows_per_file
            if pending_rows:
                write_file(pa.concat_tables(pending))
        except ValueError as exc:
            raise ValueError(_ROW_ERROR_MARK + str(exc)) from exc
        yield pa.RecordBatch.from_pylist(
            files,
            schema=pa.schema([("path", pa.string()), ("size", pa.int64()),
                              ("modification_time", pa.int64()), ("stats", pa.string())]),
        )


_STAT_TYPES: tuple[Callable[[pa.DataType], bool], ...] = (
    pa.types.is_integer, pa.types.is_floating, pa.types.is_date, pa.types.is_timestamp,
)


def file_stats(data: pa.Table) -> dict[str, Any]:
    """Delta ``stats`` of one data file: record count, null counts, min/max of simple columns."""
    stats: dict[str, Any] = {"numRecords": data.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for field in data.schema:
        column = data.column(field.name)
        if pa.types.is_nested(field.type):
            continue
        stats["nullCount"][field.name] = column.null_count
        if column.null_count == len(column) or not any(check(field.type) for check in _STAT_TYPES):
            continue
        bounds = pc.min_max(column)
        for key, value in (("minValues", bounds["min"]), ("maxValues", bounds["max"])):
            py = value.as_py()
            if isinstance(py, float) and py != py:  # NaN has no order
                continue
            if pa.types.is_timestamp(field.type):
                py = py.strftime("%Y-%m-%dT%H:%M:%S.") + f"{py.microsecond // 1000:03d}Z"
            elif pa.types.is_date(field.type):
                py = py.isoformat()
            stats[key][field.name] = py
    return stats


def _remove_write_files(fs: pafs.FileSystem, base: str, write_id: str, keep: set[str]) -> int:
    """Delete the files of write ``write_id`` under ``base`` except ``keep``; return how many."""
    removed = 0
    prefix = f"part-{write_id}-"
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.startswith(prefix) and info.base_name not in keep:
            fs.delete_file(info.path)
            removed += 1
    return removed


def _task_error(exc: BaseException) -> str:
    """Our own message from a failed Spark task, else the exception's first line."""
    text = str(exc)
    for line in text.splitlines():
        if _ROW_ERROR_MARK in line:
            return line.split(_ROW_ERROR_MARK, 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # A Python worker failure ends with "SomeError: message" before the JVM stack.
    for line in lines:
        if line.split(":", 1)[0].endswith(("Error", "Exception")) and "org.apache" not in line:
            return line
    return lines[0] if lines else type(exc).__name__


class SparkDeltaLake(Lake):
    """Spark's own Delta support: paths under ``root``, or Unity Catalog tables."""

    def location(self, table: str) -> str:
        arrow_schema(table)
        if self.config.catalog:
            return f"{self.config.catalog}.{self.config.schema_name}.{table}"
        return f"{self.config.root.rstrip('/')}/{table}"

    def _by_name(self) -> bool:
        return self.config.catalog is not None

    def exists(self, table: str) -> bool:
        if self._by_name():
            return self.spark.catalog.tableExists(self.location(table))
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.location(table))

    def _ref(self, table: str) -> str:
        loc = self.location(table)
        return loc if self._by_name() else f"delta.`{loc}`"

    def version(self, table: str) -> int | None:
        if not self.exists(table):
            return None
        return int(self.spark.sql(f"DESCRIBE HISTORY {self._ref(table)} LIMIT 1").first()["version"])

    def read(self, table: str) -> "DataFrame":
        if not self.exists(table):
            return self._empty(table)
        reader = self.spark.read
        df = reader.table(self.location(table)) if self._by_name() else reader.format("delta").load(self.location(table))
        return df.select(*[f.name for f in arrow_schema(table)])

    def append(self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None) -> int | None:
        df = conform(table, df)
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

    def describe(self, table: str) -> TableInfo | None:
        if not self.exists(table):
            return None
        detail = self.spark.sql(f"DESCRIBE DETAIL {self._ref(table)}").first()
        return TableInfo(table, self.location(table), self.version(table) or 0, int(detail["numFiles"]),
                         self.read(table).count())


def open_lake(config: LakeConfig, spark: "SparkSession") -> Lake:
    """The lake for ``config.engine``."""
    engines: dict[str, type[Lake]] = {"delta-rs": DeltaRsLake, "delta": SparkDeltaLake}
    return engines[config.engine](config, spark)
