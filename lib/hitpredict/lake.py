"""The lake: read, append and list Delta tables with either engine.

``engine: delta-rs`` (the embedded default, no JVM jars)
    Executors write Parquet data files straight into the table folder
    (``mapInArrow``) and return each file's metadata; the driver then commits one
    Delta transaction with the ``deltalake`` package. Readers list the live files
    from the Delta log, so files of a write that failed, or of a task attempt that
    Spark retried, are never seen, and they are deleted before ``append`` returns.
    Files of a write whose driver was killed are deleted by a later write once
    ``lake.orphan_grace_hours`` old (and by ``Lake.vacuum``).

``engine: delta``
    Spark's own ``format("delta")`` (delta-spark on a cluster, built into
    Databricks runtimes), by path or as Unity Catalog tables.

A write happens exactly once:

* Every delta-rs commit carries its ``hitpredict.write_id`` in commitInfo; after
  any error the log is searched for it before anything is deleted, so a commit
  that landed is never undone (its files are never removed under it).
* Keyed tables (``schemas.KEYS``) are insert-if-absent: a row is added only if no
  row with its key is in the table or earlier in the same write. delta-rs: the
  driver drops the rows whose key the table (at the version it read) already holds,
  rewriting only the few files that had such rows, and commits with a Delta
  application transaction (``txn``) named after the table. Delta's conflict check
  fails a commit when a concurrent commit carried the same ``txn`` id
  (``CommitFailedError: Concurrent transaction``), so two overlapping writers can
  never both add a key: the loser re-reads the winner's keys and commits again
  (``lake.commit_retries``). Data files are still written by the executors; the
  driver reads only key columns. (deltalake's own ``merge`` was not used: with the
  pinned pyarrow 14 its output files cannot be read back, and it would funnel every
  byte of audio through the driver.) Spark engine: ``MERGE INTO ... WHEN NOT
  MATCHED THEN INSERT *``, retried on a concurrent-append conflict.
* Two first writes racing to create a table both land: the loser appends.

Both engines refuse a DataFrame whose columns or types differ from the table's
declared schema (:mod:`hitpredict.schemas`), naming every difference.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hitpredict.config import LakeConfig
from hitpredict.schemas import TABLES, arrow_schema, spark_schema, table_key

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

#: A ``mapInArrow`` function: record batches in, record batches out.
ArrowTransform = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]

#: Marker that lets the driver pick our own error out of a Spark task failure.
_ROW_ERROR_MARK = "hitpredict-lake-error: "


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the declared schema of the table it is written to."""


class LakeWriteError(RuntimeError):
    """A write failed; the table is unchanged and the write's files were removed."""


class _OutcomeUnknown(RuntimeError):
    """A commit failed and the log could not be read to tell whether it landed: keep its files
    (a later write's orphan sweep deletes them once old, if the write never committed)."""


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


def _check_projection(table: str, schema: "StructType") -> None:
    """``schema`` must hold every column of ``table`` with the table's types (other columns are allowed)."""
    from pyspark.sql.types import StructType

    names = set(arrow_schema(table).names)
    problems = schema_differences(table, StructType([f for f in schema.fields if f.name in names]))
    if problems:
        raise SchemaMismatchError(f"refusing to write to table {table!r}: " + "; ".join(problems))


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

    def ensure(self, table: str) -> None:
        from deltalake import CommitProperties, Schema
        from deltalake.transaction import create_table_with_add_actions

        if not self.exists(table):
            try:  # no commit retries: a racing creator's table must not get a second CREATE on top
                create_table_with_add_actions(self.location(table), Schema.from_arrow(arrow_schema(table)), [],
                                              mode="ignore", name=table,
                                              commit_properties=CommitProperties(max_commit_retries=0))
            except Exception:  # noqa: BLE001 - a concurrent writer created it first: that is all we wanted
                if not self.exists(table):
                    raise

    def read_columns(self, table: str, columns: Sequence[str]) -> pa.Table:
        from deltalake import DeltaTable

        schema = arrow_schema(table)
        if not self.exists(table):
            return pa.schema([schema.field(c) for c in columns]).empty_table()
        dataset = DeltaTable(self.location(table)).to_pyarrow_dataset()
        return dataset.to_table(columns=list(columns))

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

    def append(
        self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> int | None:
        if transform is None:
            return self._write(conform(table, df), None, [table], commit_info)[table]
        _check_projection(table, transform_schema)
        return self._write(df, None, [table], commit_info, transform)[table]

    def _optimize(self, table: str) -> None:
        from deltalake import CommitProperties, DeltaTable

        DeltaTable(self.location(table)).optimize.compact(
            commit_properties=CommitProperties(custom_metadata={"hitpredict.stage": "compact"}))

    def vacuum(self, table: str, retain_hours: int | None = None) -> int | None:
        from deltalake import CommitProperties, DeltaTable

        if not self.exists(table):
            return None
        # full=True: also files the log never mentioned (a killed writer's); the default "lite" mode only
        # deletes files that a commit removed.
        removed = DeltaTable(self.location(table)).vacuum(
            retention_hours=retain_hours, dry_run=False,
            enforce_retention_duration=retain_hours is None, full=True,
            commit_properties=CommitProperties(custom_metadata={"hitpredict.stage": "vacuum"}))
        log.info("%s: vacuum deleted %d file(s)", table, len(removed))
        return len(removed)

    def scan_groups(self, table: str, rows_per_group: int) -> list["DataFrame"]:
        from deltalake import DeltaTable

        if not self.exists(table):
            return []
        dt = DeltaTable(self.location(table))
        adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        base = self.location(table)
        groups: list[list[str]] = [[]]
        rows = 0
        for add in sorted(adds, key=lambda a: a["path"]):
            if rows >= rows_per_group:
                groups.append([])
                rows = 0
            path = add["path"]
            groups[-1].append(path if "://" in path or path.startswith("/") else f"{base}/{path}")
            rows += add.get("num_records") or 0
        reader = self.spark.read.schema(spark_schema(table))
        return [reader.parquet(*files) for files in groups if files]

    def append_routed(
        self, df: "DataFrame", route_column: str, tables: Sequence[str], commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> dict[str, int | None]:
        # One pass over df: each task transforms and writes every table's files, then one commit per table.
        for table in tables:
            _check_projection(table, transform_schema if transform is not None else df.schema)
        return self._write(df, route_column, list(tables), commit_info, transform)

    def _write(
        self, df: "DataFrame", route_column: str | None, tables: list[str], commit_info: dict[str, str] | None,
        transform: "ArrowTransform | None" = None,
    ) -> dict[str, int | None]:
        from deltalake.transaction import AddAction

        write_id = uuid.uuid4().hex
        locations = {t: self.location(t) for t in tables}
        folders = {t: pafs.FileSystem.from_uri(loc) for t, loc in locations.items()}
        for table, (fs, base) in folders.items():
            fs.create_dir(base, recursive=True)
            try:
                remove_orphans(locations[table], self.config.orphan_grace_hours * 3600)
            except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a write
                log.warning("%s: could not look for files of dead writes: %s", table, exc)
        writer = ParquetTaskWriter(locations, route_column, write_id, self.config.rows_per_file, transform,
                                   self.config.bytes_per_file)
        started = time.monotonic()
        actions: dict[str, list[AddAction]] = {t: [] for t in tables}
        versions: dict[str, int | None] = {}
        committing = tables[0]
        try:
            for row in df.mapInArrow(writer, ParquetTaskWriter.OUTPUT_SCHEMA).collect():
                actions[row.table].append(AddAction(row.path, row.size, {}, row.modification_time, True, row.stats))
            for committing in tables:
                versions[committing], actions[committing] = self._commit(committing, write_id, actions[committing],
                                                                         commit_info)
        except Exception as exc:  # noqa: BLE001 - every failure must clean up, then re-raise
            removed = 0
            for table in tables:
                # Tables committed before the failure keep their files, and so does a commit that may have landed.
                if table not in versions and not (table == committing and isinstance(exc, _OutcomeUnknown)):
                    fs, base = folders[table]
                    removed += _remove_write_files(fs, base, write_id, keep=set())
            reason = _task_error(exc)
            log.error("append to %s failed; removed %d uncommitted file(s): %s", committing, removed, reason)
            outcome = ("it may have landed (its files were kept)" if isinstance(exc, _OutcomeUnknown)
                       else "table unchanged")
            raise LakeWriteError(f"append to table {committing!r} failed, {outcome}: {reason}") from exc
        for table in tables:
            # A task attempt that Spark retried may have left a file nobody committed.
            fs, base = folders[table]
            _remove_write_files(fs, base, write_id, keep={a.path for a in actions[table]})
            rows = sum(json.loads(a.stats)["numRecords"] for a in actions[table])
            log.info("%s: committed version %s (%d rows in %d files, %.1fs)",
                     table, versions[table], rows, len(actions[table]), time.monotonic() - started)
        return versions

    def _commit(
        self, table: str, write_id: str, adds: "list[AddAction]", commit_info: dict[str, str] | None,
    ) -> "tuple[int | None, list[AddAction]]":
        """Commit ``adds`` (files already in the table folder) to ``table`` exactly once.

        Keyed tables keep only rows whose key is new (see the module docstring). Returns the version
        that holds the write (the current version when nothing was left to add) and the files committed.
        Raises when the write did not land; a write that landed returns normally, whatever failed after.
        """
        from deltalake import CommitProperties, DeltaTable, Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import Transaction, create_table_with_add_actions

        path, schema, key = self.location(table), arrow_schema(table), table_key(table)
        metadata = {"hitpredict.write_id": write_id, **(commit_info or {})}
        since: int | None = None  # the first version this write was planned against (-1: no table yet)
        for attempt in range(self.config.commit_retries + 1):
            creating = False
            try:
                creating = not DeltaTable.is_deltatable(path)
                table_now = None if creating else DeltaTable(path)
                start = -1 if table_now is None else table_now.version()
                since = start if since is None else since
                if key:
                    adds = _keep_new_keys(table, path, table_now, adds, attempt)
                if not creating and not adds:
                    return start, adds  # nothing new: no commit
                # The txn makes Delta fail this commit if a concurrent one carrying the same id landed first.
                txn = [Transaction(f"hitpredict.keys.{table}", start + 1)] if key else None
                if creating:
                    # No commit retries: delta-rs would otherwise land a second CREATE on top of a racing
                    # creator's version 0 (verified with deltalake 1.6.6); losing here means: append instead.
                    info = CommitProperties(custom_metadata=metadata, app_transactions=txn, max_commit_retries=0)
                    create_table_with_add_actions(path, Schema.from_arrow(schema), adds, mode="error", name=table,
                                                  commit_properties=info)
                else:
                    info = CommitProperties(custom_metadata=metadata, app_transactions=txn)
                    table_now.create_write_transaction(adds, "append", schema, commit_properties=info)
                version = _version_of_write(path, write_id, start)
                if version is None:
                    raise LakeWriteError(f"table {table!r}: write {write_id} committed but is not in the log")
                return version, adds
            except Exception as exc:  # noqa: BLE001 - decided below by what the log holds
                # A write that landed must never be undone: look for it before anything is deleted.
                try:
                    landed = _version_of_write(path, write_id, since if since is not None else -1)
                except Exception as unreadable:  # noqa: BLE001 - cannot tell: delete nothing
                    raise _OutcomeUnknown(f"{exc}; the log could not be read to check the commit: "
                                          f"{unreadable}") from exc
                if landed is not None:
                    log.warning("%s: write %s landed as version %d; ignoring a later error: %s",
                                table, write_id, landed, exc)
                    return landed, adds
                lost_race = (isinstance(exc, CommitFailedError)
                             or (creating and DeltaTable.is_deltatable(path)))  # another first write created it
                if not lost_race or attempt >= self.config.commit_retries:
                    raise
                log.info("%s: a concurrent write committed first (%s); re-checking keys, attempt %d",
                         table, str(exc).splitlines()[0], attempt + 2)
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")


class _TableFiles:
    """One table's rolling Parquet output inside one task."""

    def __init__(self, table: str, table_uri: str, prefix: str, rows_per_file: int, bytes_per_file: int) -> None:
        self.table = table
        self.bytes_per_file = bytes_per_file
        self.schema = arrow_schema(table)
        self.fs, self.base = pafs.FileSystem.from_uri(table_uri)
        self.prefix = prefix
        self.rows_per_file = rows_per_file
        self.files: list[dict[str, Any]] = []
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.pending_bytes = 0

    def add(self, data: pa.Table) -> None:
        data = data.select(self.schema.names)
        check_not_null(self.table, data)
        self.pending.append(data.cast(self.schema))
        self.pending_rows += data.num_rows
        self.pending_bytes += data.nbytes
        while self.pending_rows >= self.rows_per_file:
            merged = pa.concat_tables(self.pending)
            self._write(merged.slice(0, self.rows_per_file))
            self.pending = [merged.slice(self.rows_per_file)]
            self.pending_rows -= self.rows_per_file
            self.pending_bytes = self.pending[0].nbytes
        if self.pending_bytes >= self.bytes_per_file:
            self.close()

    def close(self) -> None:
        if self.pending_rows:
            self._write(pa.concat_tables(self.pending))
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def _write(self, data: pa.Table) -> None:
        name = f"{self.prefix}-{len(self.files):04d}.snappy.parquet"
        size = write_data_file(self.fs, f"{self.base}/{name}", data)
        self.files.append({
            "table": self.table,
            "path": name,
            "size": size,
            "modification_time": int(time.time() * 1000),
            "stats": json.dumps(file_stats(data)),
        })


class ParquetTaskWriter:
    """The executor side of a delta-rs append: a picklable ``mapInArrow`` function.

    Writes the task's rows into Parquet files named ``part-<write_id>-...`` inside each
    table's folder (the table named by ``route_column`` of each row, or the only table),
    rolling to a new file every ``rows_per_file`` rows, and yields one metadata row per
    file (table, path relative to the table, size, stats).
    """

    OUTPUT_SCHEMA = "table string, path string, size long, modification_time long, stats string"
    _OUTPUT_ARROW = pa.schema([("table", pa.string()), ("path", pa.string()), ("size", pa.int64()),
                               ("modification_time", pa.int64()), ("stats", pa.string())])

    def __init__(
        self, table_uris: dict[str, str], route_column: str | None, write_id: str, rows_per_file: int,
        transform: "ArrowTransform | None" = None, bytes_per_file: int = 64 * 1024 * 1024,
    ) -> None:
        if route_column is None and len(table_uris) != 1:
            raise ValueError("writing several tables needs a route column")
        self.bytes_per_file = bytes_per_file
        self.transform = transform
        self.table_uris = table_uris
        self.route_column = route_column
        self.write_id = write_id
        self.rows_per_file = rows_per_file

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        task = f"{ctx.partitionId():05d}-{ctx.attemptNumber()}" if ctx else "00000-0"
        prefix = f"part-{self.write_id}-{task}-{uuid.uuid4().hex[:8]}"
        outputs = {t: _TableFiles(t, uri, prefix, self.rows_per_file, self.bytes_per_file)
                   for t, uri in self.table_uris.items()}
        if self.transform is not None:
            batches = self.transform(batches)
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                data = pa.Table.from_batches([batch])
                if self.route_column is None:
                    next(iter(outputs.values())).add(data)
                    continue
                route = data.column(self.route_column)
                for table, out in outputs.items():
                    part = data.filter(pc.equal(route, table))
                    if part.num_rows:
                        out.add(part)
                unrouted = data.num_rows - pc.sum(pc.is_in(route, pa.array(list(outputs)))).as_py()
                if unrouted:
                    raise ValueError(f"{unrouted} row(s) have a {self.route_column} that names none of "
                                     f"{', '.join(outputs)}")
            for out in outputs.values():
                out.close()
        except ValueError as exc:
            raise ValueError(_ROW_ERROR_MARK + str(exc)) from exc
        files = [f for out in outputs.values() for f in out.files]
        yield pa.RecordBatch.from_pylist(files, schema=self._OUTPUT_ARROW)


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


def write_data_file(fs: pafs.FileSystem, path: str, data: pa.Table) -> int:
    """Write ``data`` as one Parquet data file at ``path``; return its size in bytes."""
    # Binary columns hold encoded audio or float16 spectrograms: compressing them or
    # trying a dictionary on them costs time and saves nothing.
    dense = {f.name for f in data.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    with fs.open_output_stream(path) as out:
        pq.write_table(data, out, compression={f.name: "NONE" if f.name in dense else "SNAPPY" for f in data.schema},
                       use_dictionary=[f.name for f in data.schema if f.name not in dense])
    return fs.get_file_info(path).size


def key_values(table: str, data: pa.Table) -> pa.ChunkedArray:
    """One value per row of ``data`` that identifies its key in ``table`` (the key columns joined)."""
    columns = [data.column(c) for c in table_key(table)]
    if len(columns) == 1:
        return pc.cast(columns[0], pa.string())
    return pc.binary_join_element_wise(*[pc.cast(c, pa.string()) for c in columns], "\x1f")


def new_key_mask(keys: pa.ChunkedArray | pa.Array, existing: pa.ChunkedArray | pa.Array | None) -> pa.Array:
    """Which of ``keys`` to keep: not in ``existing``, and the first of its equals within ``keys``."""
    index = pa.array(range(len(keys)), pa.int64())
    first = pa.table({"key": keys, "i": index}).group_by("key").aggregate([("i", "min")]).column("i_min")
    keep = pc.is_in(index, value_set=first.combine_chunks())
    if existing is not None and len(existing):
        present = existing.combine_chunks() if isinstance(existing, pa.ChunkedArray) else existing
        keep = pc.and_(keep, pc.invert(pc.is_in(keys, value_set=present)))
    return keep.combine_chunks() if isinstance(keep, pa.ChunkedArray) else keep


def _keep_new_keys(table: str, location: str, current: Any, adds: list[Any], attempt: int) -> list[Any]:
    """The data files ``adds`` of one write to keyed ``table``, rewritten without the rows whose key
    ``current`` (the ``DeltaTable`` read, ``None`` if it does not exist yet) holds or an earlier row of
    the write holds. Reads only the key columns, unless a file has rows to drop (overlapping runs)."""
    from deltalake.transaction import AddAction

    if not adds:
        return adds
    key = list(table_key(table))
    fs, base = pafs.FileSystem.from_uri(location)
    adds = sorted(adds, key=lambda a: a.path)
    parts = [pq.read_table(f"{base}/{a.path}", columns=key, filesystem=fs) for a in adds]
    keys = key_values(table, pa.concat_tables(parts))
    existing = None
    if current is not None:
        existing = key_values(table, current.to_pyarrow_dataset().to_table(columns=key))
    keep = new_key_mask(keys, existing)
    dropped = len(keep) - (pc.sum(keep).as_py() or 0)
    if not dropped:
        return adds
    kept: list[Any] = []
    offset = 0
    for add, part in zip(adds, parts):
        mask = keep.slice(offset, part.num_rows)
        offset += part.num_rows
        if pc.all(mask).as_py():
            kept.append(add)
            continue
        old = f"{base}/{add.path}"
        data = pq.read_table(old, filesystem=fs).filter(mask)
        if data.num_rows:
            name = re.sub(r"(-k\d+)?\.snappy\.parquet$", f"-k{attempt}.snappy.parquet", add.path)
            size = write_data_file(fs, f"{base}/{name}", data)
            kept.append(AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps(file_stats(data))))
        fs.delete_file(old)
    log.info("%s: %d row(s) of this write have a key already written; not added", table, dropped)
    return kept


def _version_of_write(location: str, write_id: str, since: int) -> int | None:
    """The version of ``location``'s table whose commitInfo names ``write_id``, looking only at versions
    after ``since``; ``None`` if it is not there (the write did not land)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(location):
        return None
    current = DeltaTable(location)
    latest = current.version()
    if latest <= since:
        return None
    for entry in current.history(latest - since):
        if entry.get("hitpredict.write_id") == write_id:
            return int(entry["version"])
    return None


#: Data files written by ``ParquetTaskWriter``: ``part-<write_id>-...``.
_OUR_FILE = re.compile(r"^part-([0-9a-f]{32})-.*\.parquet$")


def remove_orphans(location: str, grace_s: float, now: float | None = None) -> int:
    """Delete the data files of hitpredict writes to the table at ``location`` that never committed
    (a driver killed between the executors' writes and its commit) once they are ``grace_s`` old.

    A file is an orphan when the log's commits since it was written hold no commitInfo with its
    write id (so files a compaction replaced, still needed for time travel, stay for VACUUM). A live
    writer's files are younger than its write: the age threshold keeps them. Returns how many.
    """
    from deltalake import DeltaTable

    fs, base = pafs.FileSystem.from_uri(location)
    cutoff = (time.time() if now is None else now) - grace_s
    old = [info for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
           if info.type == pafs.FileType.File and _OUR_FILE.match(info.base_name)
           and info.mtime is not None and info.mtime.timestamp() < cutoff]
    if not old:
        return 0
    committed: set[str] = set()
    if DeltaTable.is_deltatable(location):
        current = DeltaTable(location)
        live = {a["path"] for a in pa.table(current.get_add_actions(flatten=True)).select(["path"]).to_pylist()}
        old = [info for info in old if info.base_name not in live]
        if old:
            # The commits made since the oldest candidate was written (newest first), read in growing pages.
            oldest_ms = min(info.mtime.timestamp() for info in old) * 1000 - 3600_000
            limit = 64
            while True:
                entries = current.history(limit)
                committed |= {e["hitpredict.write_id"] for e in entries if "hitpredict.write_id" in e}
                if len(entries) < limit or entries[-1].get("timestamp", 0) < oldest_ms:
                    break
                limit *= 4
    removed = 0
    for info in old:
        if _OUR_FILE.match(info.base_name).group(1) not in committed:
            fs.delete_file(info.path)
            removed += 1
    if removed:
        log.warning("%s: deleted %d file(s) of earlier writes that never committed", location, removed)
    return removed


def _remove_write_files(fs: pafs.FileSystem, base: str, write_id: str, keep: set[str]) -> int:
    """Delete the files of write ``write_id`` under ``base`` except ``keep``; return how many."""
    removed = 0
    prefix = f"part-{write_id}-"
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.startswith(prefix) and info.base_name not in keep:
            fs.delete_file(info.path)
            removed += 1
    return removed


def _is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's optimistic-concurrency conflict (retry the operation)."""
    names = ("ConcurrentAppendException", "ConcurrentTransactionException", "ConcurrentWriteException",
             "ConcurrentDeleteReadException", "ProtocolChangedException", "MetadataChangedException")
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in names)


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

    def append(
        self, table: str, df: "DataFrame", commit_info: dict[str, str] | None = None,
        transform: "ArrowTransform | None" = None, transform_schema: "StructType | None" = None,
    ) -> int | None:
        if transform is not None:
            df = df.mapInArrow(transform, transform_schema)
            df = df.select(*[c for c in arrow_schema(table).names if c in df.columns])
        df = conform(table, df)
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
        if not self.exists(table):
            return None
        detail = self.spark.sql(f"DESCRIBE DETAIL {self._ref(table)}").first()
        return TableInfo(table, self.location(table), self.version(table) or 0, int(detail["numFiles"]),
                         self.read(table).count())


def open_lake(config: LakeConfig, spark: "SparkSession") -> Lake:
    """The lake for ``config.engine``."""
    engines: dict[str, type[Lake]] = {"delta-rs": DeltaRsLake, "delta": SparkDeltaLake}
    return engines[config.engine](config, spark)
