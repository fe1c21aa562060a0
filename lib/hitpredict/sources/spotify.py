"""Crawl Spotify with spotipy: the artists of a genre, then their albums, then every track.

The search API stops at an offset of 1,000, so a genre is searched one release year at a
time, and a year with more artists than the cap is split again by name prefix (``a*``,
``b*``, ...). Tracks are deduplicated by Spotify id and by ISRC. Since November 2024 new
apps get no ``preview_url`` and since February 2026 Development-Mode apps get no
``popularity`` and no batch ``/tracks`` endpoint: the crawl keeps what the API gives,
counts per field what it withheld, and falls back to one ``/tracks/{id}`` call per track.

Credentials are read once (environment or Databricks secrets, via the config's
``SecretStr``) and handed to spotipy's client-credentials manager with an in-memory token
cache (spotipy's default would write the token to ``./.cache``); spotipy's own debug log,
which prints the Basic authorisation header, is held at INFO.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pandas as pd

from hitpredict.config import SpotifyConfig
from hitpredict.ingest import SourceError

log = logging.getLogger(__name__)

#: Fields of a full track object the catalogue keeps, and which the API may withhold.
WITHHELD_FIELDS = ("popularity", "preview_url", "isrc")


class SpotifyError(SourceError):
    """The crawl cannot go on (bad credentials, a permanent API error); one line, no secrets."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass
class CrawlStats:
    genre: str = ""
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

    def summary(self) -> str:
        withheld = ", ".join(f"{k} {self.withheld.get(k, 0)}" for k in WITHHELD_FIELDS)
        return (f"genre {self.genre!r}: {self.slices} search slices, {self.artists} artists, {self.albums} albums, "
                f"{self.tracks_seen} tracks seen, {self.duplicate_ids} duplicate ids, {self.duplicate_isrcs} "
                f"duplicate ISRCs; withheld: {withheld}; batch /tracks {self.batch_endpoint}")


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
                             status_retries=config.retries, backoff_factor=config.backoff_factor)
    client.prefix = config.api_url if config.api_url.endswith("/") else config.api_url + "/"
    return client


def _release_date(value: str | None) -> str | None:
    """Spotify's year / year-month / day precision, as the catalogue's date text."""
    if not value:
        return None
    return value if len(value) == 10 else (value + "-01-01")[:10] if len(value) == 4 else value + "-01"


class SpotifyCrawler:
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
            raise SpotifyError(f"spotify: HTTP {exc.http_status} from {exc.msg.split(':', 1)[-1].strip()[:200]}",
                               exc.http_status) from None
        except Exception as exc:  # spotipy raises plain errors for bad credentials
            text = str(exc)
            if "invalid_client" in text:
                raise SpotifyError("spotify: the client id or secret was refused (invalid_client)") from None
            raise

    def _pages(self, page: dict[str, Any] | None, key: str | None = None) -> Iterator[dict[str, Any]]:
        while page:
            page = page.get(key, page) if key else page
            yield from page.get("items") or []
            page = self._call(self.sp.next, page) if page.get("next") else None

    # ------------------------------------------------------------------ artists
    def _search(self, query: str) -> tuple[int, list[dict[str, Any]]]:
        first = self._call(self.sp.search, q=query, type="artist", limit=self.config.page_size, offset=0,
                           market=self.config.market)
        total = first["artists"]["total"]
        return total, list(self._pages(first, "artists"))

    def genre_artists(self, genre: str) -> dict[str, dict[str, Any]]:
        """Every artist of ``genre`` the search reaches, by id: year slices, split by prefix when capped."""
        found: dict[str, dict[str, Any]] = {}
        for year in range(self.config.first_year, self.config.last_year + 1):
            base = f'genre:"{genre}" year:{year}'
            queue = [base]
            while queue:
                query = queue.pop(0)
                total, artists = self._search(query)
                self.stats.slices += 1
                found.update((a["id"], a) for a in artists)
                if total > len(artists):   # stopped at the offset cap: slice finer
                    prefix = query[len(base):].strip().rstrip("*")
                    if len(prefix) < 2:
                        queue += [f"{base} {prefix}{c}*" for c in self.config.prefixes]
                    else:
                        self.stats.capped_slices.append(f"{query} ({total} artists, {len(artists)} reached)")
        self.stats.artists = len(found)
        return found

    # ------------------------------------------------------------------ tracks
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

    def crawl_genre(self, genre: str) -> pd.DataFrame:
        """Catalogue source rows (the ingest column names) for every track of the genre's artists."""
        self.stats = CrawlStats(genre=genre)
        rows: list[dict[str, Any]] = []
        seen_ids: set[str] = set()
        seen_isrcs: set[str] = set()
        for artist_id in sorted(self.genre_artists(genre)):
            albums = list(self._pages(self._call(self.sp.artist_albums, artist_id, include_groups="album,single",
                                                 limit=self.config.page_size)))
            self.stats.albums += len(albums)
            for album in albums:
                simple = list(self._pages(self._call(self.sp.album_tracks, album["id"], limit=self.config.page_size)))
                self.stats.tracks_seen += len(simple)
                new = [t["id"] for t in simple if t["id"] not in seen_ids]
                self.stats.duplicate_ids += len(simple) - len(new)
                seen_ids.update(new)
                for track in self._full_tracks(new):
                    isrc = (track.get("external_ids") or {}).get("isrc")
                    if isrc and isrc in seen_isrcs:
                        self.stats.duplicate_isrcs += 1
                        continue
                    if isrc:
                        seen_isrcs.add(isrc)
                    for name in WITHHELD_FIELDS:
                        value = isrc if name == "isrc" else track.get(name)
                        if value is None:
                            self.stats.withheld[name] += 1
                    rows.append({
                        "track_id": f"spotify:{track['id']}", "title": track.get("name"),
                        "artists": ";".join(a["name"] for a in track.get("artists") or []), "isrc": isrc,
                        "release_date": _release_date((track.get("album") or {}).get("release_date")),
                        "preview_url": track.get("preview_url"), "popularity": track.get("popularity"),
                        "genre": genre,
                    })
        log.info("spotify crawl: %s", self.stats.summary())
        frame = pd.DataFrame(rows, columns=["track_id", "title", "artists", "isrc", "release_date", "preview_url",
                                            "popularity", "genre"])
        return frame.sort_values("track_id", kind="stable").reset_index(drop=True)


def crawler_from_config(config: Any) -> SpotifyCrawler:
    """A crawler with the credentials of ``config.secrets`` (a :class:`~hitpredict.config.Config`)."""
    secrets = config.secrets
    if not (secrets.spotify_client_id and secrets.spotify_client_secret):
        raise SpotifyError("spotify: no credentials: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET in the "
                           "environment (on Databricks, from a secret scope into the job's environment)")
    client = make_client(config.spotify, secrets.spotify_client_id.get_secret_value(),
                         secrets.spotify_client_secret.get_secret_value())
    return SpotifyCrawler(config.spotify, client)
