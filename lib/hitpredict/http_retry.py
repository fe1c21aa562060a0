"""What every HTTP client here shares: per-host concurrency caps, ``Retry-After``, backoff with jitter."""
from __future__ import annotations

import random
import threading
import time
from email.utils import parsedate_to_datetime


class HostSlots:
    """At most ``per_host`` requests in flight to each host (thread-safe)."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> threading.BoundedSemaphore:
        """The semaphore of ``host``: ``with slots(host): ...``."""
        with self._lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.per_host)
            return slot


def backoff_seconds(attempt: int, retry_after: float | None, base_s: float, max_s: float) -> float:
    """The wait before retry ``attempt`` (1-based): ``Retry-After`` when the server gave one,
    else exponential from ``base_s`` with "equal jitter"; never more than ``max_s``."""
    if retry_after is not None:
        return min(max_s, max(0.0, retry_after))
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or unreadable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def first_line(exc: BaseException) -> str:
    """An exception as one short line (its message's first line, or its type)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
