"""What every stage reports."""
from __future__ import annotations

from dataclasses import dataclass, field


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
