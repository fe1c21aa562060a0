"""Deezer and iTunes look-ups: a 30 s preview URL for a catalogue track, and Deezer's rank.

ISRC first (Deezer ``GET /track/isrc:{ISRC}``, iTunes ``GET /lookup?isrc=``); when that
finds nothing, a title+artist search (Deezer ``/search?q=artist:"X" track:"Y"``, iTunes
``/search?term=X Y&entity=song``) whose hit is accepted only when the normalised title and
artist both reach ``resolve.match_threshold``. Deezer's ``rank`` is kept as an alternative
popularity signal, named as such (``popularity_source = "deezer_rank"``).

Deezer answers errors with HTTP 200 (:func:`~hitpredict.sources.api_client.in_band_error`):
code 800 ("no data") means not found; 4 (quota) and 700 (service busy) are retried and, when
they last, the track is ``failed`` (transient); any other error (``ParameterException`` 500,
an error with no code) is ``failed`` too, never ``not_found``, so it is not recorded as a
permanent miss. iTunes' throttle (403, empty body) is retried with backoff.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hitpredict.config import ResolveConfig
from hitpredict.sources.api_client import ApiClient, ApiError, in_band_error
from hitpredict.sources.matching import names_match

log = logging.getLogger(__name__)

#: Deezer's in-band codes that pass: 4 "Quota limit exceeded", 700 "Service busy".
DEEZER_TRANSIENT = (4, 700)
#: Deezer's in-band "no data": the track is not there.
DEEZER_NO_DATA = 800


@dataclass(frozen=True)
class TrackQuery:
    """One catalogue track to look up: its id, and the ISRC and/or title + artist to look it up by."""

    track_id: str
    title: str | None = None
    artist: str | None = None
    isrc: str | None = None


@dataclass(frozen=True)
class Resolution:
    """What one service said about one track: found (with how) or not (with why)."""

    track_id: str
    service: str
    status: str                      # "found" | "not_found" | "no_match" | "failed"
    method: str | None = None        # "isrc" | "search"
    preview_url: str | None = None
    external_id: str | None = None
    title: str | None = None
    artist: str | None = None
    match_score: float | None = None
    rank: int | None = None          # Deezer's popularity rank
    detail: str | None = None

    @property
    def found(self) -> bool:
        """Whether this service gave a preview URL."""
        return self.status == "found"


def tried_text(answers: list[Resolution]) -> str:
    """``"deezer: not_found (why); itunes: found by search"``: every service's answer, for rejects and logs."""
    parts = []
    for a in answers:
        how = f" by {a.method}" if a.found else f" ({a.detail})" if a.detail else ""
        parts.append(f"{a.service}: {a.status}{how}")
    return "; ".join(parts)


class PreviewLookup:
    """Resolves tracks against the configured services, in order, stopping at the first preview."""

    def __init__(self, config: ResolveConfig, client: ApiClient) -> None:
        self.config = config
        self.client = client

    def resolve(self, query: TrackQuery) -> list[Resolution]:
        """Every service's answer until one gives a preview (the last one is the result)."""
        answers = []
        for service in self.config.services:
            look = self._deezer if service == "deezer" else self._itunes
            try:
                answer = look(query)
            except ApiError as err:
                answer = Resolution(query.track_id, service, "failed", detail=str(err))
            answers.append(answer)
            if answer.found:
                break
        return answers

    # ------------------------------------------------------------------ Deezer
    def _deezer_get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Deezer's answer, ``None`` for its "no data" (800); raises :class:`ApiError` for any other error."""
        body = self.client.get_json(url, params, retry_codes=DEEZER_TRANSIENT)
        error = in_band_error(body)
        if error is not None:
            if error.code == DEEZER_NO_DATA:
                return None
            raise ApiError("deezer_error", error.describe())
        if not isinstance(body, dict):
            raise ApiError("bad_json", f"deezer answered a {type(body).__name__}, not an object")
        return body

    def _deezer(self, q: TrackQuery) -> Resolution:
        base = self.config.deezer_url.rstrip("/")
        if q.isrc:
            body = self._deezer_get(f"{base}/track/isrc:{q.isrc}")
            if body is not None and body.get("preview"):
                return self._deezer_hit(q, body, "isrc", None)
        if not (q.title and q.artist):
            return Resolution(q.track_id, "deezer", "not_found", detail="no ISRC hit and no title+artist to search")
        text = f'artist:"{q.artist}" track:"{q.title}"'
        body = self._deezer_get(f"{base}/search", {"q": text, "limit": self.config.search_limit}) or {}
        hits = [h for h in body.get("data") or [] if isinstance(h, dict)]
        return self._best(q, "deezer", [(h, h.get("title"), (h.get("artist") or {}).get("name")) for h in hits
                                         if h.get("preview")], self._deezer_hit)

    def _deezer_hit(self, q: TrackQuery, hit: dict[str, Any], method: str, score: float | None) -> Resolution:
        rank = hit.get("rank")
        return Resolution(q.track_id, "deezer", "found", method, hit["preview"], str(hit.get("id")), hit.get("title"),
                          (hit.get("artist") or {}).get("name"), score, int(rank) if rank is not None else None)

    # ------------------------------------------------------------------ iTunes
    def _itunes_get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        """iTunes' answer; its throttle (403, empty body) is retried by the client."""
        body = self.client.get_json(url, params, throttle_403=True)
        if not isinstance(body, dict):
            raise ApiError("bad_json", f"itunes answered a {type(body).__name__}, not an object")
        return body

    def _itunes(self, q: TrackQuery) -> Resolution:
        base = self.config.itunes_url.rstrip("/")
        country = self.config.itunes_country
        if q.isrc:
            body = self._itunes_get(f"{base}/lookup", {"isrc": q.isrc, "country": country, "entity": "song"})
            songs = [r for r in body.get("results") or [] if isinstance(r, dict) and r.get("previewUrl")
                     and r.get("kind") == "song"]
            if songs:
                return self._itunes_hit(q, songs[0], "isrc", None)
        if not (q.title and q.artist):
            return Resolution(q.track_id, "itunes", "not_found", detail="no ISRC hit and no title+artist to search")
        body = self._itunes_get(f"{base}/search", {"term": f"{q.artist} {q.title}", "entity": "song",
                                                   "country": country, "limit": self.config.search_limit})
        hits = [r for r in body.get("results") or [] if isinstance(r, dict) and r.get("previewUrl")]
        return self._best(q, "itunes", [(h, h.get("trackName"), h.get("artistName")) for h in hits], self._itunes_hit)

    def _itunes_hit(self, q: TrackQuery, hit: dict[str, Any], method: str, score: float | None) -> Resolution:
        return Resolution(q.track_id, "itunes", "found", method, hit["previewUrl"], str(hit.get("trackId")),
                          hit.get("trackName"), hit.get("artistName"), score)

    # ------------------------------------------------------------------ search hits
    def _best(self, q: TrackQuery, service: str, hits: list[tuple[dict, str | None, str | None]], make) -> Resolution:
        scored = [(names_match(q.title or "", q.artist or "", title or "", artist or "", self.config.match_threshold),
                   hit) for hit, title, artist in hits]
        accepted = [(score, hit) for score, hit in scored if score is not None]
        if not accepted:
            detail = f"{len(hits)} search hit(s), none with title and artist both >= {self.config.match_threshold}"
            return Resolution(q.track_id, service, "no_match" if hits else "not_found", detail=detail)
        score, hit = max(accepted, key=lambda pair: pair[0])
        return make(q, hit, "search", round(score, 4))
