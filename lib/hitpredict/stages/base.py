"""What every stage shares: its report, and helpers for its executor-side tasks."""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from hitpredict.lake import Lake

log = logging.getLogger(__name__)


def local_mode(spark: "SparkSession") -> bool:
    """Whether ``spark`` runs in Spark local mode (every task in this machine's one JVM)."""
    master = spark.sparkContext.master
    if master is None:
        raise RuntimeError("the Spark session has no master URL (spark.master is not set)")
    return master.startswith("local")


def record_batches(rows: Iterable[dict[str, Any]], schema: pa.Schema, rows_per_batch: int) -> Iterator[pa.RecordBatch]:
    """Group row dicts into record batches of ``schema``, ``rows_per_batch`` at a time,
    so a task hands its output on as it goes instead of holding it all."""
    out: list[dict[str, Any]] = []
    for row in rows:
        out.append(row)
        if len(out) >= rows_per_batch:
            yield pa.RecordBatch.from_pylist(out, schema=schema)
            out = []
    if out:
        yield pa.RecordBatch.from_pylist(out, schema=schema)


@dataclass
class StageReport:
    """Rows in, rows ok, failures by kind, seconds: the per-stage summary users read."""

    name: str
    rows_in: int = 0
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: str = ""
    #: Lines printed under the stage's row (counts per source, withheld fields, ...).
    details: list[str] = field(default_factory=list)

    def count_failure(self, kind: str, n: int = 1) -> None:
        """Count ``n`` failed rows of error kind ``kind``."""
        self.failed[kind] = self.failed.get(kind, 0) + n

    @property
    def failed_total(self) -> int:
        """Failed rows, all kinds together."""
        return sum(self.failed.values())

    def add_outcomes(self, outcomes: Counter[tuple[str, str | None]]) -> None:
        """Count ``ok`` rows as ok and every other status as a failure of its kind."""
        for (status, kind), n in outcomes.items():
            if status == "ok":
                self.ok += n
            else:
                self.count_failure(kind or "unknown", n)

    def failures_text(self) -> str:
        """``decode_error 3, timeout 1``: failures by kind, most frequent first; ``-`` for none."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def outcomes_since(
    lake: "Lake", table: str, time_column: str, since: dt.datetime, status: str | None = None,
) -> Counter[tuple[str, str | None]]:
    """(status, error kind) counts of the rows of ``table`` written at or after ``since``.

    ``status`` names the status of every row for tables without a status column.
    """
    columns = [time_column, "error_kind"] + ([] if status else ["status"])
    rows = lake.read_columns(table, columns)
    recent = rows.filter(pc.greater_equal(rows.column(time_column),
                                          pa.scalar(since, rows.schema.field(time_column).type)))
    statuses = [status] * recent.num_rows if status else recent.column("status").to_pylist()
    return Counter(zip(statuses, recent.column("error_kind").to_pylist()))


def append_by_groups(lake: "Lake", source: str, columns: list[str], keys: "DataFrame", how: str, target: str,
                     task: Any, schema: pa.Schema, rows_per_group: int, commit_info: dict[str, str]) -> None:
    """Run the ``mapInArrow`` function ``task`` over the ``ok`` rows of ``source`` joined (``how``) to
    ``keys`` on track_id, one group of ``source``'s files at a time, appending each group's output
    (``schema``) to ``target`` in a commit of its own: a crash loses one group at most."""
    from pyspark.sql.pandas.types import from_arrow_schema

    started = time.monotonic()
    stage = commit_info.get("hitpredict.stage", target)
    groups = lake.scan_groups(source, rows_per_group)
    parallelism = lake.spark.sparkContext.defaultParallelism
    for number, group in enumerate(groups, start=1):
        rows = group.where("status = 'ok'").select(*columns).join(keys, "track_id", how)
        rows = rows.repartition(max(parallelism, rows.rdd.getNumPartitions()))
        lake.append(target, rows, commit_info, transform=task, transform_schema=from_arrow_schema(schema))
        log.info("%s: group %d/%d committed (%.1fs)", stage, number, len(groups),
                                         time.monotonic() - started)
