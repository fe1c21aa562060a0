"""What every stage shares: its report, and helpers for its executor-side tasks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import pyarrow as pa


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

    def count_failure(self, kind: str, n: int = 1) -> None:
        self.failed[kind] = self.failed.get(kind, 0) + n

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def failures_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"
