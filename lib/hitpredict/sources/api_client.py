"""JSON over HTTP for the music services: one keep-alive session, a per-host concurrency cap,
429 answered by waiting ``Retry-After``, 5xx and connection errors by exponential backoff.

Deezer reports some errors inside a 200 answer (``{"error": {"code": 4}}`` is its quota
limit); callers pass ``retry_codes`` so those are retried the same way.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from hitpredict.config import ResolveConfig
from hitpredict.http_retry import HostSlots, backoff_seconds, first_line, retry_after_seconds

log = logging.getLogger(__name__)

TRANSIENT = {429, 500, 502, 503, 504}


class ApiError(RuntimeError):
    """A call failed for good (after retries, or at once for a permanent error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class ApiClient:
    """Thread-safe: share one per task; at most ``per_host_concurrency`` calls in flight per host."""

    def __init__(self, config: ResolveConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["User-Agent"] = config.user_agent
        self._slot = HostSlots(config.per_host_concurrency)
        self.waits: list[float] = []   # every pause taken, for run summaries and tests

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        wait = backoff_seconds(attempt, retry_after, self.config.backoff_base_s, self.config.backoff_max_s)
        self.waits.append(wait)
        self._sleep(wait)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None,
                 retry_codes: tuple[int, ...] = ()) -> Any:
        """GET ``url`` and decode its JSON, retrying transient failures up to ``max_retries`` times."""
        host = urlsplit(url).netloc
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                with self._slot(host):
                    reply = self._session.get(url, params=params, timeout=self.config.timeout_s)
                if reply.status_code == 200:
                    body = reply.json()
                    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                    if code is None or code not in retry_codes:
                        return body
                    problem = ApiError("quota", f"{host}: error code {code} ({body['error'].get('message')})")
                elif reply.status_code in TRANSIENT:
                    retry_after = retry_after_seconds(reply.headers.get("Retry-After"))
                    problem = ApiError(f"http_{reply.status_code}", f"HTTP {reply.status_code} from {host}")
                else:
                    raise ApiError(f"http_{reply.status_code}", f"HTTP {reply.status_code} from {host}")
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                problem = ApiError("connection_error", first_line(exc))
            except ValueError as exc:   # not JSON
                raise ApiError("bad_json", f"{host}: {first_line(exc)}") from None
            if attempt > self.config.max_retries:
                raise problem
            log.debug("%s (attempt %d), retrying", problem, attempt)
            self._pause(attempt, retry_after)
