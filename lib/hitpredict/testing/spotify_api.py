"""A loopback fake of the Spotify Web API as spotipy uses it, with the documented shapes.

``POST /api/token`` (client credentials, HTTP Basic) answers ``{"access_token", "token_type":
"Bearer", "expires_in"}``; a token stops working after ``token_uses`` API calls (``401 The
access token expired``), which is how a token expiring mid-crawl is made. Under ``/v1``:
``GET /search?type=artist&q=genre:"X" year:Y [p*]`` (artists whose name has a word starting
with ``p``), ``/artists/{id}/albums``, ``/albums/{id}/tracks`` (simplified tracks),
``/tracks/{id}`` and ``/tracks?ids=`` (full tracks). Lists are paging objects (``href``,
``items``, ``limit``, ``next``, ``offset``, ``previous``, ``total``) whose ``next`` is there
while ``offset + limit < total``, also when it points at or past the search's ``offset_cap``
(the real service hands out that link and then refuses it). Search refuses an offset at or
past the cap (or ``offset + limit`` past it), and search and artist albums refuse ``limit``
over ``max_limit`` (10 since 2026), with 400 and the recorded error bodies
(:mod:`hitpredict.testing.recorded_answers`); ``search_requests`` records every search's
``(offset, limit)``.

``restricted=True`` answers like a Development-Mode app since 2026: no ``popularity``, no
``preview_url`` and no batch ``/tracks?ids=`` (403). ``fail_next(n, retry_after)`` answers
the next n API calls with 429; ``down_after(n)`` answers every call after the next n with 503
until ``up()`` (an outage mid-crawl), or with 429 and ``Retry-After: retry_after`` when given
one (the service has sent hours). Also ``/artists/{id}``, ``search?type=artist&q=artist:"X"``
and ``/playlists/{id}/items`` (``playlists``: id -> track ids; ``unreadable_playlists``
answer 403, as a Development-Mode app's view of other users' playlists).
"""
from __future__ import annotations

import base64
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from hitpredict.loopback import LoopbackServer, send_json
from hitpredict.testing.recorded_answers import SPOTIFY_INVALID_CLIENT, SPOTIFY_INVALID_LIMIT, SPOTIFY_INVALID_OFFSET


@dataclass
class FakeArtist:
    """An artist of the fake catalogue: found by genre and year searches, with its albums."""

    id: str
    name: str
    genres: list[str]
    year: int
    albums: list["FakeAlbum"] = field(default_factory=list)


@dataclass
class FakeAlbum:
    """An album of the fake catalogue (``release_date`` in Spotify's precision: year, month or day)."""

    id: str
    name: str
    release_date: str
    tracks: list["FakeSpotifyTrack"] = field(default_factory=list)


@dataclass
class FakeSpotifyTrack:
    """A track of the fake catalogue, as the full track object gives it."""

    id: str
    name: str
    isrc: str
    popularity: int
    preview_url: str | None


_GENRE = re.compile(r'genre:"([^"]+)"')
_YEAR = re.compile(r"year:(\d{4})")
_ARTIST = re.compile(r'artist:"([^"]+)"')
_PREFIX = re.compile(r"(?:^|\s)(\w+)\*")


class SpotifyApiServer(LoopbackServer):
    """The fake Spotify Web API on a loopback port (module docstring); ``calls`` counts token and API calls."""

    def __init__(self, artists: list[FakeArtist], client_id: str, client_secret: str, max_limit: int = 10,
                 offset_cap: int = 1000, token_uses: int = 10_000, restricted: bool = False,
                 playlists: dict[str, list[str]] | None = None, unreadable_playlists: set[str] | None = None,
                 ) -> None:
        self.artists = artists
        self.playlists = playlists or {}
        self.unreadable_playlists = unreadable_playlists or set()   # exist, but 403 for this app
        self._ok_left: int | None = None
        self._down_fault: tuple[int, float] = (503, 0)
        self.search_requests: list[tuple[int, int]] = []   # (offset, limit) of every search
        self.credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.max_limit, self.offset_cap = max_limit, offset_cap
        self.token_uses, self.restricted = token_uses, restricted
        self.tokens: dict[str, int] = {}       # token -> API calls left
        self.calls: Counter = Counter()
        self._fail: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self.albums = {a.id: (artist, a) for artist in artists for a in artist.albums}
        self.tracks = {t.id: (artist, a, t) for artist in artists for a in artist.albums for t in a.tracks}
        super().__init__(self._handler())

    def fail_next(self, n: int, retry_after: float = 0) -> None:
        """Answer the next ``n`` API calls with 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._fail.extend([(429, retry_after)] * n)

    def down_after(self, n: int, retry_after: float | None = None) -> None:
        """Answer 503 (or 429 with ``Retry-After: retry_after``) to every API call after the next ``n``,
        until :meth:`up`."""
        with self._lock:
            self._ok_left = n
            self._down_fault = (503, 0) if retry_after is None else (429, retry_after)

    def up(self) -> None:
        """End the outage :meth:`down_after` started."""
        with self._lock:
            self._ok_left = None

    # ------------------------------------------------------------------ objects
    def _artist(self, a: FakeArtist) -> dict:
        out: dict[str, Any] = {"id": a.id, "name": a.name, "genres": a.genres, "type": "artist",
                               "uri": f"spotify:artist:{a.id}"}
        if not self.restricted:
            out["popularity"] = 50
        return out

    def _album(self, a: FakeAlbum, artist: FakeArtist) -> dict:
        precision = {4: "year", 7: "month"}.get(len(a.release_date), "day")
        return {"id": a.id, "name": a.name, "release_date": a.release_date, "release_date_precision": precision,
                "album_type": "album", "album_group": "album", "total_tracks": len(a.tracks),
                "artists": [{"id": artist.id, "name": artist.name}], "type": "album", "uri": f"spotify:album:{a.id}"}

    def _track(self, t: FakeSpotifyTrack, album: FakeAlbum, artist: FakeArtist, full: bool) -> dict:
        out = {"id": t.id, "name": t.name, "artists": [{"id": artist.id, "name": artist.name}], "type": "track",
               "duration_ms": 180000, "uri": f"spotify:track:{t.id}"}
        if full:
            out.update(album=self._album(album, artist), external_ids={"isrc": t.isrc})
            if not self.restricted:
                out.update(popularity=t.popularity, preview_url=t.preview_url)
            else:
                out["preview_url"] = None
        return out

    def _page(self, path: str, query: dict, items: list[dict], limit: int, offset: int) -> dict:
        def link(at: int) -> str:
            return f"{self.base_url}/v1{path}?{urlencode({**query, 'offset': at, 'limit': limit})}"
        end = offset + limit
        return {"href": link(offset), "items": items[offset:end], "limit": limit, "offset": offset,
                "total": len(items), "next": link(end) if end < len(items) else None,
                "previous": link(max(0, offset - limit)) if offset else None}

    # ------------------------------------------------------------------ routes
    def _api(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        limit, offset = int(query.get("limit", 20)), int(query.get("offset", 0))
        if path == "/search":
            with self._lock:
                self.search_requests.append((offset, limit))
            if limit > self.max_limit:
                return 400, SPOTIFY_INVALID_LIMIT
            if offset >= self.offset_cap or offset + limit > self.offset_cap:
                return 400, SPOTIFY_INVALID_OFFSET
            q = query.get("q", "")
            named = _ARTIST.search(q)
            if named:
                hits = [self._artist(a) for a in self.artists if a.name.lower() == named.group(1).lower()]
                return 200, {"artists": self._page(path, {"q": q, "type": "artist"}, hits, limit, offset)}
            genre, year, prefix = _GENRE.search(q), _YEAR.search(q), _PREFIX.search(_GENRE.sub("", q))
            found = [a for a in self.artists if (not genre or genre.group(1) in a.genres)
                     and (not year or a.year == int(year.group(1)))
                     and (not prefix or any(w.lower().startswith(prefix.group(1).lower()) for w in a.name.split()))]
            found.sort(key=lambda a: a.id)
            # ``next`` follows ``total`` even past the cap: the service hands out that link, then refuses it
            return 200, {"artists": self._page(path, {"q": q, "type": "artist"}, [self._artist(a) for a in found],
                                               limit, offset)}
        parts = path.strip("/").split("/")
        if parts[0] == "artists" and len(parts) == 2:
            artist = next((a for a in self.artists if a.id == parts[1]), None)
            return (200, self._artist(artist)) if artist else (404, {"error": {"status": 404,
                                                                               "message": "Resource not found"}})
        if parts[0] == "playlists" and len(parts) == 3 and parts[2] == "items":
            if parts[1] in self.unreadable_playlists:
                return 403, {"error": {"status": 403, "message": "Forbidden"}}
            if parts[1] not in self.playlists:
                return 404, {"error": {"status": 404, "message": "Resource not found"}}
            items = [{"added_at": "2026-01-01T00:00:00Z", "is_local": False,
                      "track": self._track(t, al, ar, True)} for ar, al, t in
                     (self.tracks[i] for i in self.playlists[parts[1]])]
            return 200, self._page(path, {}, items, limit, offset)
        if parts[0] == "artists" and len(parts) == 3 and parts[2] == "albums":
            artist = next((a for a in self.artists if a.id == parts[1]), None)
            if artist is None:
                return 404, {"error": {"status": 404, "message": "Resource not found"}}
            if limit > self.max_limit:
                return 400, SPOTIFY_INVALID_LIMIT
            return 200, self._page(path, {}, [self._album(al, artist) for al in artist.albums], limit, offset)
        if parts[0] == "albums" and len(parts) == 3 and parts[2] == "tracks":
            artist, album = self.albums[parts[1]]
            return 200, self._page(path, {}, [self._track(t, album, artist, False) for t in album.tracks], limit,
                                   offset)
        if parts[0] == "tracks" and len(parts) == 2:
            artist, album, t = self.tracks[parts[1]]
            return 200, self._track(t, album, artist, True)
        if parts == ["tracks"]:
            if self.restricted:
                return 403, {"error": {"status": 403, "message": "Forbidden"}}
            return 200, {"tracks": [self._track(t, al, ar, True) for ar, al, t in
                                    (self.tracks[i] for i in query.get("ids", "").split(","))]}
        return 404, {"error": {"status": 404, "message": "Service not found"}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                send_json(self, status, body, headers)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = parse_qs(self.rfile.read(length).decode())
                with server._lock:
                    server.calls["token"] += 1
                if self.headers.get("Authorization") != f"Basic {server.credentials}" \
                        or body.get("grant_type") != ["client_credentials"]:
                    return self._send(400, SPOTIFY_INVALID_CLIENT)
                token = uuid.uuid4().hex
                with server._lock:
                    server.tokens[token] = server.token_uses
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                with server._lock:
                    server.calls["api"] += 1
                    fault = server._fail.pop(0) if server._fail else None
                    if server._ok_left is not None:
                        if server._ok_left <= 0:
                            fault = server._down_fault
                        server._ok_left -= 1
                    left = server.tokens.get(token)
                    if left is not None and left > 0 and not fault:
                        server.tokens[token] = left - 1
                if fault and fault[0] == 503:
                    return self._send(503, {"error": {"status": 503, "message": "Service unavailable"}})
                if fault:
                    return self._send(429, {"error": {"status": 429, "message": "API rate limit exceeded"}},
                                      {"Retry-After": str(int(fault[1]))})
                if left is None:
                    return self._send(401, {"error": {"status": 401, "message": "Invalid access token"}})
                if left <= 0:
                    return self._send(401, {"error": {"status": 401, "message": "The access token expired"}})
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, body = server._api(parts.path.removeprefix("/v1"), query)
                self._send(status, body)

        return Handler


SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "bu"]


def sample_artists(artists_2020: int = 12, artists_2021: int = 3) -> list[FakeArtist]:
    """Hip-hop artists with two albums of three tracks; one single reappears on an album (same id)
    and one track is re-issued under a new id with the same ISRC."""
    artists = []
    for i in range(artists_2020 + artists_2021):
        name = f"{SYLLABLES[i % 10].title()}{SYLLABLES[(i // 10) % 10]} {SYLLABLES[(i * 7) % 10].title()}"
        artist = FakeArtist(f"ar{i:03d}", name, ["hip hop"], 2020 if i < artists_2020 else 2021)
        for j in range(2):
            album = FakeAlbum(f"al{i:03d}{j}", f"Album {j}", "2020-05-01" if j else "2020")
            for k in range(3):
                album.tracks.append(FakeSpotifyTrack(f"tr{i:03d}{j}{k}", f"Song {i}-{j}-{k}", f"QZ{i:03d}{j}{k}00000",
                                                     popularity=(i * 7 + k) % 100,
                                                     preview_url=f"https://p.scdn.test/{i}{j}{k}.mp3"))
            artist.albums.append(album)
        artists.append(artist)
    artists[0].albums[1].tracks.append(artists[0].albums[0].tracks[0])              # same id twice
    reissue = artists[1].albums[0].tracks[0]
    artists[1].albums[1].tracks.append(FakeSpotifyTrack("trreissue", reissue.name, reissue.isrc, 3, None))
    artists.append(FakeArtist("arjazz", "Some Jazz Trio", ["jazz"], 2020))
    return artists
