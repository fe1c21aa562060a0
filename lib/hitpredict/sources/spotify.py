"""Crawl Spotify with spotipy: the artists of a genre, then their albums, then every track.

The search API stops at an offset of 1,000 (``spotify.offset_cap``): it still hands out a
``next`` link to offset 1,000 and then answers it with HTTP 400, so a slice is paged by
offset and never asked for a page at or past the cap. A genre is searched one release year
at a time, and a year with more artists than the cap is split again by name prefix (``a*``,
``b*``, ...). Tracks are deduplicated by Spotify id and by ISRC. Since November 2024 new
apps get no ``preview_url`` and since February 2026 Development-Mode apps get no
``popularity`` and no batch ``/tracks`` endpoint: the crawl keeps what the API gives,
counts per field what it withheld, and falls back to one ``/tracks/{id}`` call per track.

A 429 is waited out (``Retry-After``) only up to ``spotify.max_wait_s``: the service has
asked for hours, which would block a task that long per retry; a longer one stops the crawl
with one line (resumable from ``crawl_state``).

Credentials are read once (environment or Databricks secrets, via the config's
``SecretStr``) and handed to spotipy's client-credentials manager with an in-memory token
cache (spotipy's default would write the token to ``./.cache``); spotipy's own debug log,
which prints the Basic authorisation header, is held at INFO.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import pandas as pd
from urllib3.util.retry import Retry

from hitpredict.config import SpotifyConfig
from hitpredict.http_retry import first_line
from hitpredict.ingest import SourceError
from hitpredict.sources.matching import normalise_name

log = logging.getLogger(__name__)

#: Fields of a full track object the catalogue keeps, and which the API may withhold.
WITHHELD_FIELDS = ("popularity", "preview_url", "isrc")


#: Why the Web API refuses a playlist, by status: what a user can do about it.
PLAYLIST_REFUSALS = {
    403: "is not readable by this app (since 2026 Development-Mode apps read only playlists their user "
         "owns or follows; extended access lifts this)",
    404: "does not exist or is not served to this app (private, or a Spotify-owned editorial or "
         "algorithmic playlist, which the Web API stopped serving to new apps in November 2024)",
}


class SpotifyError(SourceError):
    """The crawl cannot go on (bad credentials, a permanent API error); one line, no secrets."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass
class CrawlStats:
    """Counts of one crawl: search slices, artists, albums, tracks seen and dropped as duplicates, and
    how many kept tracks lack each field the API may withhold."""

    crawl: str = ""                                           # what was crawled: "genre:hip hop", ...
    slices: int = 0
    capped_slices: list[str] = field(default_factory=list)   # slices still over the cap after splitting
    artists: int = 0
    albums: int = 0
    tracks_seen: int = 0
    duplicate_ids: int = 0
    duplicate_isrcs: int = 0
    withheld: Counter = field(default_factory=Counter)       # field -> tracks without it
    token_refreshes: int = 0
    batch_endpoint: str = "unknown"                           # "available" | "withheld"

    def as_record(self) -> dict[str, Any]:
        """The counts as plain data (kept in ``crawl_state`` after each crawl)."""
        return {"crawl": self.crawl, "slices": self.slices, "capped_slices": self.capped_slices,
                "artists": self.artists, "albums": self.albums, "tracks_seen": self.tracks_seen,
                "duplicate_ids": self.duplicate_ids, "duplicate_isrcs": self.duplicate_isrcs,
                "withheld": {name: self.withheld.get(name, 0) for name in WITHHELD_FIELDS},
                "token_refreshes": self.token_refreshes, "batch_endpoint": self.batch_endpoint}

    def summary(self) -> str:
        """The counts as one log line."""
        withheld = ", ".join(f"{k} {self.withheld.get(k, 0)}" for k in WITHHELD_FIELDS)
        return (f"{self.crawl}: {self.slices} search slices, {self.artists} artists, {self.albums} albums, "
                f"{self.tracks_seen} tracks seen, {self.duplicate_ids} duplicate ids, {self.duplicate_isrcs} "
                f"duplicate ISRCs; withheld: {withheld}; batch /tracks {self.batch_endpoint}")


class RetryAfterTooLong(Exception):
    """The service asked for a pause (``Retry-After``, seconds) longer than ``spotify.max_wait_s``."""

    def __init__(self, seconds: float, status: int, path: str) -> None:
        super().__init__(f"Retry-After {seconds:.0f} s on HTTP {status} from {path}")
        self.seconds, self.status, self.path = seconds, status, path


class CappedRetry(Retry):
    """urllib3's retries as spotipy configures them, but a ``Retry-After`` over ``max_wait_s``
    raises :class:`RetryAfterTooLong` instead of sleeping (urllib3 would sleep any length)."""

    def __init__(self, *args: Any, max_wait_s: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_wait_s = max_wait_s

    def new(self, **kwargs: Any) -> "CappedRetry":
        """The next retry state (urllib3 makes one per attempt), keeping ``max_wait_s``."""
        retry = super().new(**kwargs)
        retry.max_wait_s = self.max_wait_s
        return retry

    def sleep_for_retry(self, response: Any) -> bool:
        """Sleep ``Retry-After`` as urllib3 does; raise :class:`RetryAfterTooLong` if it is over ``max_wait_s``."""
        wait = self.get_retry_after(response)
        if wait is not None and wait > self.max_wait_s:
            raise RetryAfterTooLong(wait, response.status, urlsplit(getattr(response, "url", "") or "").path)
        return super().sleep_for_retry(response)


def _session(config: SpotifyConfig) -> Any:
    """The HTTP session spotipy would build (same retries, backoff and status list), with :class:`CappedRetry`."""
    import requests
    import spotipy

    retry = CappedRetry(total=config.retries, connect=None, read=False,
                        allowed_methods=frozenset(["GET", "POST", "PUT", "DELETE"]), status=config.retries,
                        backoff_factor=config.backoff_factor, status_forcelist=spotipy.Spotify.default_retry_codes,
                        max_wait_s=config.max_wait_s)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def make_client(config: SpotifyConfig, client_id: str, client_secret: str) -> Any:
    """A spotipy client for ``config``'s endpoints, token kept in memory only."""
    import spotipy
    from spotipy.cache_handler import MemoryCacheHandler
    from spotipy.oauth2 import SpotifyClientCredentials

    logging.getLogger("spotipy").setLevel(max(logging.INFO, logging.getLogger("spotipy").getEffectiveLevel()))
    auth = SpotifyClientCredentials(client_id=client_id, client_secret=client_secret,
                                    cache_handler=MemoryCacheHandler(), requests_timeout=config.timeout_s)
    auth.OAUTH_TOKEN_URL = config.token_url
    client = spotipy.Spotify(auth_manager=auth, requests_timeout=config.timeout_s, retries=config.retries,
                             status_retries=config.retries, backoff_factor=config.backoff_factor,
                             requests_session=_session(config))
    client.prefix = config.api_url if config.api_url.endswith("/") else config.api_url + "/"
    return client


def _release_date(value: str | None) -> str | None:
    """Spotify's year / year-month / day precision, as the catalogue's date text."""
    if not value:
        return None
    return value if len(value) == 10 else (value + "-01-01")[:10] if len(value) == 4 else value + "-01"


class SpotifyCrawler:
    """The crawl's units of work, each a few API calls with one spotipy session.

    A crawl is levels of units: search slices (driver, sequential: a capped slice is split),
    then one unit per artist (its album ids) and one per album (its track rows); the last
    two fan out across executors (``hitpredict.fanouts.spotify_crawl``). :func:`assemble`
    turns the album units' rows into the catalogue source rows, in a fixed order, so the
    result does not depend on which units ran when.
    """

    def __init__(self, config: SpotifyConfig, client: Any) -> None:
        self.config = config
        self.sp = client
        self.stats = CrawlStats()

    # ------------------------------------------------------------------ calls
    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call; an expired token (401) is dropped and the call made once more."""
        from spotipy.exceptions import SpotifyException

        try:
            return method(*args, **kwargs)
        except SpotifyException as exc:
            if exc.http_status == 401:
                self.stats.token_refreshes += 1
                log.info("spotify: access token rejected (%s); fetching a new one", exc.msg.splitlines()[-1][:80])
                self.sp.auth_manager.cache_handler.save_token_to_cache(None)
                try:
                    return method(*args, **kwargs)
                except SpotifyException as again:
                    exc = again
                except RetryAfterTooLong as long_wait:
                    raise self._too_long(long_wait) from None
            where = exc.msg.split(":\n", 1)[0].strip()[:200]
            if "Max Retries" in exc.msg:   # spotipy reports any exhausted retries as 429
                reason = str(getattr(exc, "reason", "") or "")
                status = re.search(r"\b([45]\d\d)\b", reason)
                raise SpotifyError(f"spotify: gave up after {self.config.retries} retries on {where}: "
                                   f"{reason.splitlines()[0][:120] if reason else 'no answer'}",
                                   int(status.group(1)) if status else exc.http_status) from None
            raise SpotifyError(f"spotify: HTTP {exc.http_status} from {where}", exc.http_status) from None
        except RetryAfterTooLong as exc:
            raise self._too_long(exc) from None
        except Exception as exc:  # spotipy raises plain errors for bad credentials and dead connections
            if "invalid_client" in str(exc):
                raise SpotifyError("spotify: the client id or secret was refused (invalid_client)") from None
            raise SpotifyError(f"spotify: {type(exc).__name__}: {first_line(exc)}") from None

    def _too_long(self, exc: RetryAfterTooLong) -> SpotifyError:
        """One line for a ``Retry-After`` past ``spotify.max_wait_s``: when to try again."""
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=exc.seconds)
        return SpotifyError(f"spotify: rate limited: HTTP {exc.status} from {exc.path} asks to wait "
                            f"{exc.seconds:.0f} s (Retry-After), more than spotify.max_wait_s "
                            f"({self.config.max_wait_s:g} s); try again after {until:%Y-%m-%d %H:%M} UTC",
                            exc.status)

    def _pages(self, page: dict[str, Any] | None, key: str | None = None) -> Iterator[dict[str, Any]]:
        while page:
            page = page.get(key, page) if key else page
            yield from page.get("items") or []
            page = self._call(self.sp.next, page) if page.get("next") else None

    # ------------------------------------------------------------------ artists
    def search_slice(self, query: str) -> tuple[int, list[list[str]]]:
        """``(total, [[artist id, name], ...])`` of one artist search, paged up to ``spotify.offset_cap``.

        Paged by offset, not by following ``next``: the service links to a page at the cap and
        answers it with HTTP 400. No request reaches past the cap (``offset + limit <= cap``);
        a ``total`` above what was reached tells the caller to split the slice.
        """
        cap, size = self.config.offset_cap, self.config.page_size
        total, offset = 0, 0
        artists: list[list[str]] = []
        while offset < cap:
            page = self._call(self.sp.search, q=query, type="artist", limit=min(size, cap - offset), offset=offset,
                              market=self.config.market)["artists"]
            total = page["total"]
            items = [a for a in page.get("items") or [] if a]
            artists += [[a["id"], a["name"]] for a in items]
            if not page.get("next") or not items:
                break
            offset = page["offset"] + page["limit"]   # where ``next`` points
        return total, artists

    def genre_artists(self, genre: str, done: dict[str, tuple[int, list[list[str]]]] | None = None,
                      on_slice: Callable[[str, int, list[list[str]]], None] | None = None) -> dict[str, str]:
        """Every artist of ``genre`` the search reaches (id -> name): year slices, split by prefix when capped.

        ``done`` holds slices searched by an earlier, interrupted run (query -> result); they are
        not searched again. ``on_slice`` sees every slice searched now.
        """
        done = done or {}
        found: dict[str, str] = {}
        for year in range(self.config.first_year, self.config.last_year + 1):
            base = f'genre:"{genre}" year:{year}'
            queue = [base]
            while queue:
                query = queue.pop(0)
                if query in done:
                    total, artists = done[query]
                else:
                    total, artists = self.search_slice(query)
                    if on_slice:
                        on_slice(query, total, artists)
                self.stats.slices += 1
                found.update((a_id, name) for a_id, name in artists)
                if total > len(artists):   # stopped at the offset cap: slice finer
                    prefix = query[len(base):].strip().rstrip("*")
                    if len(prefix) < 2:
                        queue += [f"{base} {prefix}{c}*" for c in self.config.prefixes]
                    else:
                        self.stats.capped_slices.append(f"{query} ({total} artists, {len(artists)} reached)")
        self.stats.artists = len(found)
        return found

    def find_artist(self, ref: str) -> list[list[str]]:
        """``[[id, name]]`` for an artist id, URI, URL or exact name (case and accents aside); ``[]`` if none."""
        ref = ref.strip()
        artist_id = spotify_id(ref, "artist")
        if artist_id:
            artist = self._call(self.sp.artist, artist_id)
            return [[artist["id"], artist["name"]]]
        page = self._call(self.sp.search, q=f'artist:"{ref}"', type="artist", limit=self.config.page_size,
                          market=self.config.market)
        hits = page["artists"]["items"]
        wanted = normalise_name(ref)
        return [[a["id"], a["name"]] for a in hits if normalise_name(a["name"]) == wanted][:1]

    # ------------------------------------------------------------------ albums, tracks
    def artist_albums(self, artist_id: str) -> list[str]:
        """The ids of an artist's albums and singles, in the API's order."""
        page = self._call(self.sp.artist_albums, artist_id, include_groups="album,single", limit=self.config.page_size)
        return [album["id"] for album in self._pages(page)]

    def _full_tracks(self, ids: list[str]) -> list[dict[str, Any]]:
        if self.stats.batch_endpoint != "withheld":
            try:
                out = []
                for start in range(0, len(ids), 50):
                    out += self._call(self.sp.tracks, ids[start:start + 50], market=self.config.market)["tracks"]
                self.stats.batch_endpoint = "available"
                return out
            except SpotifyError as exc:
                if exc.http_status not in (403, 404):
                    raise
                self.stats.batch_endpoint = "withheld"
                log.info("spotify: batch /tracks is not available to this app; one call per track")
        return [self._call(self.sp.track, i, market=self.config.market) for i in ids]

    def album_rows(self, album_id: str, genre: str | None = None) -> list[dict[str, Any]]:
        """Catalogue source rows of every track of one album (duplicates kept: :func:`assemble` drops them)."""
        ids = [t["id"] for t in self._pages(self._call(self.sp.album_tracks, album_id, limit=self.config.page_size))]
        return [track_row(t, genre) for t in self._full_tracks(ids) if t]

    def playlist_rows(self, playlist: str, genre: str | None = None) -> list[dict[str, Any]]:
        """Catalogue source rows of a playlist's tracks (episodes and local files skipped)."""
        playlist_id = spotify_id(playlist, "playlist") or playlist
        try:
            page = self._call(self.sp.playlist_items, playlist_id, limit=min(50, self.config.page_size * 5),
                              market=self.config.market, additional_types=("track",))
        except SpotifyError as exc:
            if exc.http_status not in PLAYLIST_REFUSALS:
                raise
            raise SpotifyError(f"{exc}: playlist {playlist_id} {PLAYLIST_REFUSALS[exc.http_status]}",
                               exc.http_status) from None
        items = [item.get("track") or item.get("item") for item in self._pages(page)]
        return [track_row(t, genre) for t in items if t and t.get("type", "track") == "track" and t.get("id")]


_ID = re.compile(r"^[0-9A-Za-z]{22}$")


def spotify_id(ref: str, kind: str) -> str | None:
    """The id in ``spotify:KIND:ID`` or ``https://open.spotify.com/KIND/ID?...``, or ``ref`` if it is a bare id."""
    match = re.search(rf"(?:spotify:{kind}:|open\.spotify\.com/(?:intl-\w+/)?{kind}/)([0-9A-Za-z]+)", ref)
    if match:
        return match.group(1)
    return ref if _ID.match(ref) else None


def track_row(track: dict[str, Any], genre: str | None) -> dict[str, Any]:
    """One full track object as a catalogue source row (the fields the API withheld stay ``None``)."""
    return {
        "track_id": f"spotify:{track['id']}", "title": track.get("name"),
        "artists": ";".join(a["name"] for a in track.get("artists") or []),
        "isrc": (track.get("external_ids") or {}).get("isrc"),
        "release_date": _release_date((track.get("album") or {}).get("release_date")),
        "preview_url": track.get("preview_url"), "popularity": track.get("popularity"), "genre": genre,
    }


SOURCE_COLUMNS = ["track_id", "title", "artists", "isrc", "release_date", "preview_url", "popularity", "genre"]


def assemble(rows: Iterable[dict[str, Any]], stats: CrawlStats) -> pd.DataFrame:
    """Rows in crawl order -> one row per track: the first of each Spotify id and of each ISRC wins;
    withheld fields are counted on what is kept. Sorted by track id."""
    kept: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_isrcs: set[str] = set()
    for row in rows:
        stats.tracks_seen += 1
        if row["track_id"] in seen_ids:
            stats.duplicate_ids += 1
            continue
        seen_ids.add(row["track_id"])
        isrc = row.get("isrc")
        if isrc and isrc in seen_isrcs:
            stats.duplicate_isrcs += 1
            continue
        if isrc:
            seen_isrcs.add(isrc)
        for name in WITHHELD_FIELDS:
            if row.get(name) is None:
                stats.withheld[name] += 1
        kept.append(row)
    frame = pd.DataFrame(kept, columns=SOURCE_COLUMNS)
    return frame.sort_values("track_id", kind="stable").reset_index(drop=True)


def crawler_with(spotify: SpotifyConfig, secrets: Any) -> SpotifyCrawler:
    """A crawler for ``spotify``'s endpoints with the credentials of ``secrets`` (``SecretsConfig``)."""
    if not (secrets.spotify_client_id and secrets.spotify_client_secret):
        raise SpotifyError("spotify: no credentials: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET in the "
                           "environment (on Databricks, from a secret scope into the job's environment)")
    client = make_client(spotify, secrets.spotify_client_id.get_secret_value(),
                         secrets.spotify_client_secret.get_secret_value())
    return SpotifyCrawler(spotify, client)
