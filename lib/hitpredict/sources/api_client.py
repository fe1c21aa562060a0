"""JSON over HTTP for the music services: one keep-alive session, a per-host concurrency cap,
a per-host call rate, 429 answered by waiting ``Retry-After``, 5xx and connection errors by
exponential backoff.

What the real services answer (recordings in :mod:`hitpredict.testing.recorded_answers`):

- Deezer reports errors inside an HTTP 200 answer, ``{"error": {"type", "message", "code"}}``;
  callers pass ``retry_codes`` (4: quota, 700: service busy) so those are retried like a 429.
  On success ``error`` may be present and empty (``"error": []``); any ``error`` value that is
  not an object is read without raising (:func:`in_band_error`).
- iTunes throttles at about 20 calls a minute with HTTP 403 and an empty body: callers pass
  ``throttle_403=True`` and it is retried with a backoff no shorter than the host's call
  interval. ``resolve.itunes_calls_per_minute`` paces the calls so it rarely happens.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from hitpredict.config import ResolveConfig
from hitpredict.http_retry import HostSlots, backoff_seconds, first_line, retry_after_seconds

log = logging.getLogger(__name__)

TRANSIENT = {429, 500, 502, 503, 504}
#: ApiError kinds of a Deezer in-band code that is retried.
IN_BAND_KINDS = {4: "quota", 700: "busy"}


class ApiError(RuntimeError):
    """A call failed for good (after retries, or at once for a permanent error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class InBandError:
    """An error a service reported inside a 200 answer."""

    code: int | None
    type: str | None
    message: str

    def describe(self) -> str:
        """``ParameterException (code 500): Wrong parameter``: one line for a ``detail``."""
        what = self.type or "error"
        return f"{what}{f' (code {self.code})' if self.code is not None else ''}: {self.message}"[:300]


def in_band_error(body: Any) -> InBandError | None:
    """The error inside a decoded JSON answer, or ``None`` when it reports none.

    ``{"error": {"code": 800, ...}}`` is an error; an absent or empty ``error`` (Deezer sends
    ``"error": []`` beside a successful result) is not; any other value (a string, a non-empty
    list) is an error without a code. Never raises.
    """
    if not isinstance(body, dict):
        return None
    value = body.get("error")
    if not value:
        return None
    if isinstance(value, dict):
        code = value.get("code")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        kind = value.get("type")
        return InBandError(code, str(kind) if kind is not None else None, str(value.get("message") or "no message"))
    return InBandError(None, None, first_line(ValueError(repr(value))))


class HostPace:
    """At most ``per_minute[base]`` calls a minute to each service base URL, evenly spaced (thread-safe).

    A call to a URL under ``base`` (``https://itunes.apple.com``) reserves the next free start
    time of that base and sleeps until then; other URLs, and a rate of 0, are not paced.
    """

    def __init__(self, per_minute: Mapping[str, float], sleep: Callable[[float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = {base.rstrip("/"): 60.0 / rate for base, rate in per_minute.items() if rate and rate > 0}
        self._next: dict[str, float] = {}
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()

    def base_of(self, url: str) -> str | None:
        """The paced base ``url`` is under, if any."""
        return next((base for base in self.interval_s if url == base or url.startswith(base + "/")), None)

    def wait(self, url: str) -> float:
        """Sleep until the next slot of ``url``'s base; the seconds waited."""
        base = self.base_of(url)
        if base is None:
            return 0.0
        interval = self.interval_s[base]
        with self._lock:
            now = self._clock()
            start = max(now, self._next.get(base, now))
            self._next[base] = start + interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


class ApiClient:
    """Thread-safe: share one per task; at most ``per_host_concurrency`` calls in flight per host,
    and calls under ``itunes_url`` paced to ``itunes_calls_per_minute``."""

    def __init__(self, config: ResolveConfig, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["User-Agent"] = config.user_agent
        self._slot = HostSlots(config.per_host_concurrency)
        self._pace = HostPace({config.itunes_url: config.itunes_calls_per_minute}, sleep, clock)
        self.waits: list[float] = []   # every pause after a failure, for run summaries and tests
        self.paced_s = 0.0             # seconds spent keeping to the per-host rates

    def close(self) -> None:
        """Close the HTTP session and its pooled connections."""
        self._session.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pause(self, attempt: int, retry_after: float | None, base_s: float) -> None:
        wait = backoff_seconds(attempt, retry_after, base_s, self.config.backoff_max_s)
        self.waits.append(wait)
        self._sleep(wait)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None,
                 retry_codes: tuple[int, ...] = (), throttle_403: bool = False) -> Any:
        """GET ``url`` and decode its JSON, retrying transient failures up to ``max_retries`` times.

        ``retry_codes``: in-band error codes (HTTP 200) that are transient; ``throttle_403``: a 403
        with an empty body is the host's throttle (iTunes), not a refusal. The body is returned
        as decoded, in-band errors included: callers judge the rest (:func:`in_band_error`).
        """
        host = urlsplit(url).netloc
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            base_s = self.config.backoff_base_s
            try:
                self.paced_s += self._pace.wait(url)
                with self._slot(host):
                    reply = self._session.get(url, params=params, timeout=self.config.timeout_s)
                if reply.status_code == 200:
                    body = reply.json()
                    error = in_band_error(body)
                    if error is None or error.code not in retry_codes:
                        return body
                    problem = ApiError(IN_BAND_KINDS.get(error.code, f"error_{error.code}"),
                                       f"{host}: {error.describe()}")
                elif reply.status_code in TRANSIENT:
                    retry_after = retry_after_seconds(reply.headers.get("Retry-After"))
                    problem = ApiError(f"http_{reply.status_code}", f"HTTP {reply.status_code} from {host}")
                elif reply.status_code == 403 and throttle_403 and not reply.content.strip():
                    # iTunes' throttle: back off at least one call interval, doubling
                    base_s = max(base_s, self._pace.interval_s.get(self._pace.base_of(url) or "", 0.0))
                    problem = ApiError("throttled", f"HTTP 403 with an empty body from {host} (rate limit)")
                else:
                    raise ApiError(f"http_{reply.status_code}", f"HTTP {reply.status_code} from {host}")
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                problem = ApiError("connection_error", first_line(exc))
            except ValueError as exc:   # not JSON
                raise ApiError("bad_json", f"{host}: {first_line(exc)}") from None
            if attempt > self.config.max_retries:
                raise problem
            log.debug("%s (attempt %d), retrying", problem, attempt)
            self._pause(attempt, retry_after, base_s)
