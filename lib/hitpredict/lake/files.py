"""The executor side of a delta-rs write: Parquet data files written inside Spark tasks.

Runs on the executors (the driver only pickles a :class:`ParquetTaskWriter` and hands it to
``mapInArrow``). Each task writes its rows as Parquet files named ``part-<write_id>-...``
straight into the table folder and returns one metadata row per file (path, size, Delta
``stats``); :mod:`hitpredict.lake.delta_rs` commits them on the driver. This module never
imports the driver side.

A row error raised in a task (a NOT NULL column holding nulls, an unroutable row) carries
``_ROW_ERROR_MARK``, so that :func:`_task_error` can pick our own message out of the Spark task
failure the driver sees.

:func:`arrow_ipc` is the executor side of a read, for either engine: it ships a task's record
batches to the driver unchanged (``Lake.read_arrow`` and ``Lake.read_columns`` through Spark).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hitpredict.lake.conformance import check_not_null
from hitpredict.schemas import arrow_schema

if TYPE_CHECKING:
    from hitpredict.lake.base import ArrowTransform

__all__ = ["ARROW_IPC_SCHEMA", "ParquetTaskWriter", "arrow_ipc", "file_stats", "write_data_file"]

#: Marker that lets the driver pick our own error out of a Spark task failure.
_ROW_ERROR_MARK = "hitpredict-lake-error: "


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
        """Buffer ``data`` (checked and cast to the table's schema), writing a file every
        ``rows_per_file`` rows or once ``bytes_per_file`` bytes are held."""
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
        """Write the buffered rows, if any, as one last file."""
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

    Parameters
    ----------
    table_uris : dict[str, str]
        Table name -> folder (local path or URI) its files go to.
    route_column : str or None
        Column naming each row's table; ``None`` when ``table_uris`` holds one table.
    write_id : str
        32 hex digits that name the write (in file names and in the commit).
    rows_per_file : int
        A file is closed at this many rows ...
    transform : ArrowTransform or None
        ``mapInArrow`` function run over the task's batches before writing (same Python process).
    bytes_per_file : int
        ... or once this many bytes of Arrow data are buffered.
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

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
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


#: What :func:`arrow_ipc` returns: one row per record batch, the batch as an Arrow IPC stream.
ARROW_IPC_SCHEMA = "ipc binary"


def arrow_ipc(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A ``mapInArrow`` function: each non-empty record batch, exactly as Spark converted it to Arrow,
    as one row holding its Arrow IPC stream (read back with ``pyarrow.ipc.open_stream``)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as stream:
            stream.write_batch(batch)
        yield pa.RecordBatch.from_pylist([{"ipc": sink.getvalue().to_pybytes()}],
                                         schema=pa.schema([("ipc", pa.binary())]))


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
