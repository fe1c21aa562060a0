"""A loopback fake of the Deezer and iTunes public APIs, with the documented JSON shapes.

Deezer (under ``/deezer``): ``GET /track/isrc:{ISRC}`` returns a track object (``id``,
``title``, ``isrc``, ``rank``, ``preview``, ``artist: {id, name}``) or, with HTTP 200, the
recorded ``{"error":{"type":"DataException","message":"no data","code":800}}``;
``GET /search?q=artist:"X" track:"Y"`` returns ``{"data": [...], "total": N}``; an unknown
path is HTTP 404 ``{"error":"Not Found"}`` as recorded. Error bodies are the real ones, byte
for byte (:mod:`hitpredict.testing.recorded_answers`).
iTunes (under ``/itunes``): ``GET /lookup?isrc=`` and ``GET /search?term=&entity=song``
return ``{"resultCount": N, "results": [{"wrapperType": "track", "kind": "song", "trackId",
"trackName", "artistName", "previewUrl", ...}]}``.

``preview_lifetime_s`` signs Deezer's preview URLs the way its CDN does
(``?hdnea=exp=<unix>~acl=/*~hmac=...``), good for that many seconds from the answer;
:class:`~hitpredict.preview_server.PreviewServer` refuses them with 403 once expired.

Faults: ``fail_next(service, statuses, retry_after)`` answers the next requests to a service
with those HTTP statuses (429 with ``Retry-After``; a 403 from iTunes has an empty body, as
Apple's throttle does); ``deezer_error_next(body, n)`` answers the next n Deezer requests with
HTTP 200 and an in-band error body (``quota_next(n)``: the quota error, code 4).
``itunes_limit=(calls, window_s)`` throttles iTunes like Apple (about 20 calls a minute): a
call past ``calls`` in the last ``window_s`` seconds gets 403 with an empty body, counted in
``throttled``. ``latency_s`` delays every answer, and ``max_in_flight`` records the most
concurrent requests seen per service.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from hitpredict.loopback import LoopbackServer, send_bytes, send_json
from hitpredict.testing.recorded_answers import (DEEZER_NO_DATA, DEEZER_QUOTA, DEEZER_UNKNOWN_PATH,
                                                 ITUNES_THROTTLED_BODY, ITUNES_THROTTLED_STATUS)


@dataclass(frozen=True)
class FakeTrack:
    """One track as the fake Deezer and iTunes know it (and whether each has it)."""

    id: int
    title: str
    artist: str
    isrc: str | None
    preview: str
    rank: int = 500_000
    on_deezer: bool = True
    on_itunes: bool = True
    isrc_known: bool = True   # whether the service's ISRC index has it (search still finds it)


_QUERY = re.compile(r'(artist|track):"([^"]*)"')
JSON = "application/json; charset=utf-8"


class MusicApiServer(LoopbackServer):
    """Fakes of Deezer's and iTunes' track look-up and search APIs on one loopback server (module docstring)."""

    def __init__(self, tracks: list[FakeTrack], latency_s: float = 0.0,
                 preview_lifetime_s: float | None = None, itunes_limit: tuple[int, float] | None = None) -> None:
        self.tracks = tracks
        self.itunes_limit = itunes_limit
        self.throttled = 0
        self._itunes_calls: deque = deque()   # monotonic times of the iTunes calls answered
        self.latency_s = latency_s
        self.preview_lifetime_s = preview_lifetime_s
        self.requests: Counter = Counter()
        self.max_in_flight: Counter = Counter()
        self._in_flight: Counter = Counter()
        self._faults: dict[str, deque] = {"deezer": deque(), "itunes": deque()}
        self._lock = threading.Lock()
        super().__init__(self._handler())

    # ------------------------------------------------------------------ control
    def fail_next(self, service: str, statuses: list[int], retry_after: float | None = None) -> None:
        """Answer the next requests to ``service`` with ``statuses``, one each (``Retry-After`` when given)."""
        with self._lock:
            self._faults[service].extend(("status", s, retry_after) for s in statuses)

    def deezer_error_next(self, body: str, n: int = 1) -> None:
        """Answer the next ``n`` Deezer requests with HTTP 200 and ``body`` (a recorded in-band error)."""
        with self._lock:
            self._faults["deezer"].extend(("in_band", 200, body) for _ in range(n))

    def quota_next(self, n: int) -> None:
        """Answer the next ``n`` Deezer requests with its in-band "Quota limit exceeded" (code 4)."""
        self.deezer_error_next(DEEZER_QUOTA, n)

    def _over_itunes_limit(self) -> bool:
        """Whether this iTunes call is past ``itunes_limit`` (call under the lock)."""
        if self.itunes_limit is None:
            return False
        calls, window_s = self.itunes_limit
        now = time.monotonic()
        while self._itunes_calls and self._itunes_calls[0] <= now - window_s:
            self._itunes_calls.popleft()
        if len(self._itunes_calls) >= calls:
            self.throttled += 1
            return True
        self._itunes_calls.append(now)
        return False

    # ------------------------------------------------------------------ answers
    def _signed(self, url: str) -> str:
        if self.preview_lifetime_s is None:
            return url
        expires = math.ceil(time.time() + self.preview_lifetime_s)
        mac = hashlib.sha256(f"{url}|{expires}".encode()).hexdigest()[:32]
        return f"{url}{'&' if '?' in url else '?'}hdnea=exp={expires}~acl=/*~hmac={mac}"

    def _deezer_track(self, t: FakeTrack) -> dict:
        return {"id": t.id, "readable": True, "title": t.title, "title_short": t.title, "isrc": t.isrc,
                "link": f"https://www.deezer.com/track/{t.id}", "duration": 180, "rank": t.rank,
                "preview": self._signed(t.preview), "artist": {"id": abs(hash(t.artist)) % 10**6, "name": t.artist,
                                                 "type": "artist"}, "type": "track"}

    def _itunes_track(self, t: FakeTrack) -> dict:
        return {"wrapperType": "track", "kind": "song", "trackId": t.id, "trackName": t.title,
                "artistName": t.artist, "previewUrl": t.preview, "trackTimeMillis": 180000, "country": "USA"}

    def _answer(self, service: str, path: str, query: dict[str, list[str]]) -> dict | str | None:
        if service == "deezer":
            tracks = [t for t in self.tracks if t.on_deezer]
            if path.startswith("/track/isrc:"):
                isrc = unquote(path[len("/track/isrc:"):])
                for t in tracks:
                    if t.isrc == isrc and t.isrc_known:
                        return self._deezer_track(t)
                return DEEZER_NO_DATA
            if path == "/search":
                wanted = dict(_QUERY.findall(query.get("q", [""])[0]))
                limit = int(query.get("limit", ["25"])[0])
                # like the real search, fuzzy: a word of the artist and half the title's words
                artist_words = set(wanted.get("artist", "").lower().split())
                title_words = set(wanted.get("track", "").lower().split(" (")[0].split())
                hits = [self._deezer_track(t) for t in tracks
                        if artist_words & set(t.artist.lower().split())
                        and len(title_words & set(t.title.lower().split())) * 2 >= len(title_words)]
                return {"data": hits[:limit], "total": len(hits)}
        else:
            tracks = [t for t in self.tracks if t.on_itunes]
            if path == "/lookup":
                isrc = query.get("isrc", [""])[0]
                hits = [self._itunes_track(t) for t in tracks if t.isrc == isrc and t.isrc_known]
                return {"resultCount": len(hits), "results": hits}
            if path == "/search":
                words = query.get("term", [""])[0].lower().split()
                limit = int(query.get("limit", ["50"])[0])
                hits = [self._itunes_track(t) for t in tracks
                        if sum(w in f"{t.artist} {t.title}".lower() for w in words) >= max(1, len(words) // 2)]
                return {"resultCount": len(hits[:limit]), "results": hits[:limit]}
        return None   # unknown path: HTTP 404

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                service, _, rest = parts.path.lstrip("/").partition("/")
                with server._lock:
                    server.requests[service] += 1
                    server._in_flight[service] += 1
                    server.max_in_flight[service] = max(server.max_in_flight[service], server._in_flight[service])
                    fault = server._faults.get(service, deque()).popleft() if server._faults.get(service) else None
                    if fault is None and service == "itunes" and server._over_itunes_limit():
                        fault = ("status", ITUNES_THROTTLED_STATUS, None)
                try:
                    if server.latency_s:
                        time.sleep(server.latency_s)
                    headers = {}
                    if fault and fault[0] == "status":
                        if service == "itunes" and fault[1] == ITUNES_THROTTLED_STATUS:
                            return send_bytes(self, fault[1], ITUNES_THROTTLED_BODY)
                        status, body = fault[1], {"error": f"HTTP {fault[1]}"}
                        if fault[2] is not None:
                            headers["Retry-After"] = str(fault[2])
                    elif fault:
                        return send_bytes(self, 200, fault[2].encode(), JSON)
                    else:
                        body = server._answer(service, "/" + rest, parse_qs(parts.query))
                        if body is None:
                            return send_bytes(self, 404, DEEZER_UNKNOWN_PATH.encode(), JSON)
                        if isinstance(body, str):    # a recorded body
                            return send_bytes(self, 200, body.encode(), JSON)
                        status = 200
                    send_json(self, status, body, headers)
                finally:
                    with server._lock:
                        server._in_flight[service] -= 1

        return Handler


class RecordedSleeps(list):
    """A ``sleep`` for clients under test: records each pause (seconds) instead of taking it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def resolve_overrides(server: "MusicApiServer", *extra: str) -> list[str]:
    """``--set`` overrides that point ``resolve`` at ``server`` (Deezer and iTunes), with short backoffs."""
    return [f"resolve.deezer_url={server.base_url}/deezer", f"resolve.itunes_url={server.base_url}/itunes",
            "resolve.backoff_base_s=0.01", *extra]
