"""The ``delta-rs`` engine, driver side: Delta commits with the ``deltalake`` package (no JVM jars).

Runs on the driver. Executors write Parquet data files straight into the table folder
(:class:`hitpredict.lake.files.ParquetTaskWriter` under ``mapInArrow``) and return each file's
metadata; :meth:`DeltaRsLake._commit` then commits one Delta transaction. Readers list the live
files from the Delta log, so files of a write that failed, or of a task attempt that Spark
retried, are never seen, and they are deleted before ``append`` returns. Files of a write whose
driver was killed are deleted by a later write once ``lake.orphan_grace_hours`` old
(:func:`remove_orphans`, and by ``Lake.vacuum``).

A write happens exactly once:

* Every commit carries its ``hitpredict.write_id`` in commitInfo; after any error the log is
  searched for it (:func:`_version_of_write`) before anything is deleted, so a commit that
  landed is never undone (its files are never removed under it).
* Keyed tables (``schemas.KEYS``) are insert-if-absent: a row is added only if no row with its
  key is in the table or earlier in the same write. The driver drops the rows whose key the
  table (at the version it read) already holds, rewriting only the few files that had such rows
  (:func:`_keep_new_keys`), and commits with a Delta application transaction (``txn``) named
  after the table. Delta's conflict check fails a commit when a concurrent commit carried the
  same ``txn`` id (``CommitFailedError: Concurrent transaction``), so two overlapping writers can
  never both add a key: the loser re-reads the winner's keys and commits again
  (``lake.commit_retries``). Data files are still written by the executors; the driver reads
  only key columns, and each data file's once (:class:`KnownKeys`), so a commit's work follows the
  rows it adds, not the table's size. (deltalake's own ``merge`` was not used: with the pinned pyarrow 14 its
  output files cannot be read back, and it would funnel every byte of audio through the driver.)
* Two first writes racing to create a table both land: the loser appends.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hitpredict.lake.base import ArrowTransform, Lake, LakeWriteError, TableInfo, declared_arrow, transform_output
from hitpredict.lake.conformance import _check_projection, conform
from hitpredict.lake.files import ParquetTaskWriter, _task_error, file_stats, write_data_file
from hitpredict.schemas import arrow_schema, spark_schema, table_key

if TYPE_CHECKING:
    from deltalake.transaction import AddAction
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

__all__ = ["DeltaRsLake", "key_values", "new_key_mask", "remove_orphans"]

log = logging.getLogger(__name__)


class _OutcomeUnknown(RuntimeError):
    """A commit failed and the log could not be read to tell whether it landed: keep its files
    (a later write's orphan sweep deletes them once old, if the write never committed)."""


class DeltaRsLake(Lake):
    """Delta tables written by executors as Parquet and committed with ``deltalake``.

    Tables are folders ``<lake.root>/<table>`` (a local path or an object-store URI).
    """

    def _known_keys(self, location: str) -> KnownKeys:
        """The :class:`KnownKeys` of the keyed table at ``location``, kept for this lake's life."""
        known: dict[str, KnownKeys] = self.__dict__.setdefault("_known", {})
        return known.setdefault(location, KnownKeys())

    def location(self, table: str) -> str:
        """``<lake.root>/<table>``, the root made absolute when it is a local path.

        Raises ``KeyError`` for a table that is not declared in :mod:`hitpredict.schemas`.
        """
        arrow_schema(table)  # validates the name
        root = self.config.root
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root.rstrip('/')}/{table}"

    def exists(self, table: str) -> bool:
        """Whether ``table``'s folder holds a Delta log."""
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(table))

    def version(self, table: str) -> int | None:
        """Latest committed version of ``table`` read from its log, ``None`` if it does not exist."""
        from deltalake import DeltaTable

        return DeltaTable(self.location(table)).version() if self.exists(table) else None

    def read(self, table: str) -> "DataFrame":
        """A Spark DataFrame over the live data files the log lists, with the declared schema
        (empty if the table does not exist or holds no file)."""
        from deltalake import DeltaTable

        if not self.exists(table):
            return self._empty(table)
        files = DeltaTable(self.location(table)).file_uris()
        if not files:
            return self._empty(table)
        return self.spark.read.schema(spark_schema(table)).parquet(*files)

    def ensure(self, table: str) -> None:
        """Create ``table`` empty (a version 0 with no file) if it does not exist; a concurrent
        creator winning the race is fine. No Spark job is run."""
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
        self._add_missing_columns(table)

    def _add_missing_columns(self, table: str) -> None:
        """Schema evolution: add the declared nullable columns an older table lacks (for example the
        ``features`` table's embedding columns), in one metadata commit. delta-rs would otherwise append
        files carrying them without changing the table's schema, so Delta readers would not see them.
        Columns the table holds that are no longer declared (the ``examples`` table's copies of the features,
        from an older release) stay: a commit keeps the table's schema, new files leave them out, and Delta
        readers read them as null there (``read`` and ``read_columns`` return only the declared columns)."""
        from deltalake import DeltaTable, Field

        current = DeltaTable(self.location(table))
        have = {f.name for f in current.schema().fields}
        missing = [f for f in arrow_schema(table) if f.name not in have]
        if not missing:
            return
        required = [f.name for f in missing if not f.nullable]
        if required:
            raise ValueError(f"table {table!r} lacks NOT NULL column(s) {', '.join(required)}: rebuild it")
        current.alter.add_columns([Field.from_arrow(f) for f in missing])
        log.info("%s: added column(s) %s", table, ", ".join(f.name for f in missing))

    def read_columns(self, table: str, columns: Sequence[str]) -> pa.Table:
        """``columns`` of ``table`` as an Arrow table on the driver, with their declared types, read
        from the Parquet files without Spark (empty if the table does not exist)."""
        from deltalake import DeltaTable

        if not self.exists(table):
            return declared_arrow(table, None, columns)
        dataset = DeltaTable(self.location(table)).to_pyarrow_dataset()
        return declared_arrow(table, dataset.to_table(columns=list(columns)), columns)

    def read_arrow(self, table: str) -> pa.Table:
        """The whole table as Arrow on the driver, with its declared schema, read from the Parquet
        files without Spark (empty if the table does not exist): for small tables."""
        from deltalake import DeltaTable

        if not self.exists(table):
            return declared_arrow(table, None)
        return declared_arrow(table, pa.table(DeltaTable(self.location(table)).to_pyarrow_table()))

    def describe(self, table: str) -> TableInfo | None:
        """Version, live files and rows of ``table`` from its log alone (rows from the files'
        stats, ``None`` if the log holds none); ``None`` if the table does not exist."""
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
        """Append ``df`` (or ``transform``'s output over ``df``) to ``table`` in one Delta commit.

        The executors write the Parquet files (running ``transform`` in their own Python process)
        and the driver commits them exactly once; keyed tables only gain rows whose key is new
        (see the module docstring). ``commit_info`` goes into the commit's commitInfo.

        Returns
        -------
        version : int or None
            The version that holds the write (the current one when no row was new).

        Raises
        ------
        SchemaMismatchError
            ``df`` (or ``transform_schema``) does not match the table's declared schema.
        LakeWriteError
            The write failed; its files were removed (or kept, when it may have landed).
        """
        if transform is None:
            return self._write(conform(table, df), None, [table], commit_info)[table]
        _check_projection(table, transform_output(transform_schema))
        return self._write(df, None, [table], commit_info, transform)[table]

    def _optimize(self, table: str) -> None:
        from deltalake import CommitProperties, DeltaTable

        DeltaTable(self.location(table)).optimize.compact(
            commit_properties=CommitProperties(custom_metadata={"hitpredict.stage": "compact"}))

    def vacuum(self, table: str, retain_hours: int | None = None) -> int | None:
        """Delta ``VACUUM`` in full mode: also deletes files the log never named (a killed writer's),
        not only those a commit removed. ``retain_hours`` (``None``: the table's retention) bounds
        the age of files deleted. Returns the number of files deleted, ``None`` if the table does
        not exist."""
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
        """The table's live files, in path order, split into groups of at least ``rows_per_group``
        rows (by the files' stats; the last group may hold fewer), one DataFrame per group; an
        empty list if the table does not exist."""
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
        """Append each row of ``df`` (or of ``transform``'s output) to the table its ``route_column``
        names, in one pass over ``df``: each task transforms its rows once and writes every table's
        files, then the driver commits one table after the other (earlier commits stand if a later
        one fails). Returns each table's version after its commit."""
        # One pass over df: each task transforms and writes every table's files, then one commit per table.
        for table in tables:
            _check_projection(table, transform_output(transform_schema) if transform is not None else df.schema)
        return self._write(df, route_column, list(tables), commit_info, transform)

    def _write(
        self, df: "DataFrame", route_column: str | None, tables: list[str], commit_info: dict[str, str] | None,
        transform: "ArrowTransform | None" = None,
    ) -> dict[str, int | None]:
        """Run a ``ParquetTaskWriter`` over ``df`` (files into each table's folder), then commit each table in
        order; on any failure remove the files not committed and raise ``LakeWriteError``."""
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
                    known = None if table_now is None else self._known_keys(path).of(table, path, table_now)
                    adds = _keep_new_keys(table, path, known, adds, attempt)
                if not creating and not adds:
                    return start, adds  # nothing new: no commit
                # The txn makes Delta fail this commit if a concurrent one carrying the same id landed first.
                txn = [Transaction(f"hitpredict.keys.{table}", start + 1)] if key else None
                if table_now is None:  # creating
                    # No commit retries: delta-rs would otherwise land a second CREATE on top of a racing
                    # creator's version 0 (verified with deltalake 1.6.6); losing here means: append instead.
                    info = CommitProperties(custom_metadata=metadata, app_transactions=txn, max_commit_retries=0)
                    create_table_with_add_actions(path, Schema.from_arrow(schema), adds, mode="error", name=table,
                                                  commit_properties=info)
                else:
                    info = CommitProperties(custom_metadata=metadata, app_transactions=txn)
                    table_now.create_write_transaction(list(adds), "append", schema, commit_properties=info)
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


class KnownKeys:
    """The keys of one keyed table's live data files, each file read once by this driver.

    A commit to a keyed table must know every key the table holds. Reading them all at every commit made a
    stage's commits quadratic in the table's size (``bench/scale.py``: the driver's time per commit grew with
    the rows already in). Delta data files never change once written, so the keys of a file read once stay
    right while the file is live: each commit reads only the key columns of the files added since the last one
    (by any writer). When a file this holds is no longer live (compaction, an overwrite, a vacuum), it starts
    again from every live file. Memory: one Python string per key (about 100 bytes).
    """

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.keys: set[str] = set()
        #: Data files whose keys were read, over this object's life (what a test checks).
        self.files_read = 0
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[()]]:   # a copy sent elsewhere starts empty (a lock does not pickle)
        return KnownKeys, ()

    def of(self, table: str, location: str, current: Any) -> set[str]:
        """Every key of ``table`` (at ``location``) in the version ``current`` (a ``DeltaTable``) read: the keys
        of the files already known, plus those of its files not seen before."""
        with self._lock:
            live = set(pa.table(current.get_add_actions(flatten=False)).column("path").to_pylist())
            if not self.files <= live:
                log.debug("%s: %d known file(s) no longer live; reading every file's keys", table,
                          len(self.files - live))
                self.files, self.keys = set(), set()
            unseen = sorted(live - self.files)
            if unseen:
                import pyarrow.dataset as pads

                fs, base = pafs.FileSystem.from_uri(location)
                data = pads.dataset([f"{base}/{name}" for name in unseen], format="parquet",
                                    filesystem=fs).to_table(columns=list(table_key(table)))
                self.keys.update(key_values(table, data).to_pylist())
                self.files.update(unseen)
                self.files_read += len(unseen)
            return self.keys


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


def _keep_new_keys(table: str, location: str, known: set[str] | None, adds: list[Any], attempt: int) -> list[Any]:
    """The data files ``adds`` of one write to keyed ``table``, rewritten without the rows whose key the
    table holds (``known``, from :class:`KnownKeys`; ``None`` if it does not exist yet) or an earlier row of
    the write holds. Reads only the key columns, unless a file has rows to drop (overlapping runs)."""
    from deltalake.transaction import AddAction

    if not adds:
        return adds
    key = list(table_key(table))
    fs, base = pafs.FileSystem.from_uri(location)
    adds = sorted(adds, key=lambda a: a.path)
    parts = [pq.read_table(f"{base}/{a.path}", columns=key, filesystem=fs) for a in adds]
    keys = key_values(table, pa.concat_tables(parts))
    keep = new_key_mask(keys, None)
    if known:
        held = pa.array([value in known for value in keys.to_pylist()], pa.bool_())
        keep = pc.and_(keep, pc.invert(held))
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
        ours = _OUR_FILE.match(info.base_name)  # every file in old matched
        if ours is not None and ours.group(1) not in committed:
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
