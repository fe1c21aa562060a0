"""The Spotify crawl, with spotipy itself, against a loopback fake of the Web API: pagination to
the end, the offset cap, a token expiring mid-crawl, 429 storms, withheld fields, no leaked secret.

Whole crawls go through the product's crawl (:func:`hitpredict.fanouts.spotify_crawl.crawl`: search
on the driver, artists and albums fanned out over Spark tasks, progress in ``crawl_state``); the
search tests call the driver-side :class:`~hitpredict.sources.spotify.SpotifyCrawler` it uses."""
from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from hitpredict import credentials
from hitpredict.config import Config, load_config
from hitpredict.credentials import spotify_credentials
from hitpredict.fanouts.spotify_crawl import CrawlRequest, CrawlResult, crawl
from hitpredict.ingest import SourceError
from hitpredict.sources.spotify import SpotifyCrawler, SpotifyError, crawler_with
from hitpredict.testing.spotify_api import SpotifyApiServer, sample_artists as world

CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"
CLIENT_ID, SECRET = "test-client-id", "s3cr3t-Zq81-do-not-leak"
#: One spotipy session, so one first token, per crawler: the driver's (search), and with
#: ``spotify.max_concurrency=1`` one task's per level (artists, then albums).
SESSIONS_PER_CRAWL = 3


def crawl_config(server: SpotifyApiServer, *extra: str, secret: str = SECRET) -> Config:
    """A config for ``server``'s endpoints, 2020-2021, with the credentials in its environment."""
    return load_config(None, [f"spotify.api_url={server.base_url}/v1/",
                              f"spotify.token_url={server.base_url}/api/token", "spotify.first_year=2020",
                              "spotify.last_year=2021", "spotify.backoff_factor=0", *extra],
                       environ={"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": secret})


def crawler_for(server: SpotifyApiServer, *extra: str, secret: str = SECRET) -> SpotifyCrawler:
    """The driver-side crawler the product's crawl builds (search slices, artists)."""
    config = crawl_config(server, *extra, secret=secret)
    return crawler_with(config.spotify, config.secrets)


def run_crawl(spark, lake, config: Config, genre: str = "hip hop", tag: str | None = None) -> CrawlResult:
    """The product's crawl of ``genre`` (a new ``tag`` crawls afresh in the same lake)."""
    return crawl(config, spark, lake, CrawlRequest(genre=genre, tag=tag))


def test_crawl_pages_to_the_end_and_dedupes_by_id_and_isrc(spark, lake):
    artists = world()
    with SpotifyApiServer(artists, CLIENT_ID, SECRET) as server:
        result = run_crawl(spark, lake, crawl_config(server))
    rows, stats = result.rows, result.stats
    assert stats.artists == 15 and stats.albums == 30                 # the jazz artist is not crawled
    assert stats.tracks_seen == 15 * 6 + 2 and stats.duplicate_ids == 1 and stats.duplicate_isrcs == 1
    assert len(rows) == 90 and rows["track_id"].is_unique and rows["isrc"].is_unique
    first = rows.set_index("track_id").loc["spotify:tr00001"]   # album with year precision
    assert (first["title"], first["artists"], first["release_date"], first["popularity"]) == (
        "Song 0-0-1", artists[0].name, "2020-01-01", 1)
    assert first["preview_url"] == "https://p.scdn.test/001.mp3"
    assert stats.withheld == {} and stats.batch_endpoint == "available" and stats.capped_slices == []


def test_a_year_over_the_offset_cap_is_sliced_by_name_prefix():
    # Like the real service, the fake links ``next`` to offset 20 (= the cap) and answers it with 400.
    with SpotifyApiServer(world(artists_2020=45), CLIENT_ID, SECRET, offset_cap=20) as server:
        crawler = crawler_for(server, "spotify.offset_cap=20")
        found = crawler.genre_artists("hip hop")
        asked = list(server.search_requests)
    assert len(found) == 48 and crawler.stats.capped_slices == []
    assert crawler.stats.slices > 2                                    # 2 years, then prefix slices for 2020
    assert max(offset + limit for offset, limit in asked) <= 20 and all(offset < 20 for offset, _ in asked)


def test_a_page_size_that_does_not_divide_the_cap_stops_exactly_at_it():
    with SpotifyApiServer(world(artists_2020=45), CLIENT_ID, SECRET, offset_cap=25) as server:
        crawler = crawler_for(server, "spotify.offset_cap=25", "spotify.page_size=10")
        total, artists = crawler.search_slice('genre:"hip hop" year:2020')
        asked = list(server.search_requests)
    assert (total, len(artists)) == (45, 25) and asked == [(0, 10), (10, 10), (20, 5)]


def test_the_fake_pages_search_like_the_recorded_service():
    from hitpredict.testing.recorded_answers import SPOTIFY_INVALID_OFFSET, SPOTIFY_SEARCH_PAGE

    import requests

    with SpotifyApiServer(world(artists_2020=45), CLIENT_ID, SECRET, offset_cap=20) as server:
        token = requests.post(f"{server.base_url}/api/token", data={"grant_type": "client_credentials"},
                              auth=(CLIENT_ID, SECRET)).json()["access_token"]
        get = lambda offset: requests.get(f"{server.base_url}/v1/search", headers={"Authorization": f"Bearer {token}"},
                                          params={"q": 'genre:"hip hop" year:2020', "type": "artist",
                                                  "offset": offset, "limit": 10})
        page = get(10).json()["artists"]
        refused = get(20)
    assert set(page) == set(SPOTIFY_SEARCH_PAGE) | {"items"}
    assert (page["offset"], page["limit"], page["total"]) == (10, 10, 45)
    assert "offset=20" in page["next"] and "offset=0" in page["previous"]     # a link to the cap, as recorded
    assert (refused.status_code, refused.json()) == (400, SPOTIFY_INVALID_OFFSET)


def test_a_restricted_app_gets_a_counted_outcome_not_silent_nulls(spark, lake):
    with SpotifyApiServer(world(), CLIENT_ID, SECRET, restricted=True) as server:
        result = run_crawl(spark, lake, crawl_config(server))
    rows, stats = result.rows, result.stats
    assert len(rows) == 90 and rows["preview_url"].isna().all() and rows["popularity"].isna().all()
    assert stats.withheld == {"popularity": 90, "preview_url": 90} and stats.batch_endpoint == "withheld"
    assert "withheld: popularity 90, preview_url 90, isrc 0; batch /tracks withheld" in stats.summary()


def test_a_token_expiring_mid_crawl_and_a_429_storm_give_the_same_catalogue(spark, lake):
    with SpotifyApiServer(world(), CLIENT_ID, SECRET) as server:
        baseline = run_crawl(spark, lake, crawl_config(server), tag="baseline").rows
    with SpotifyApiServer(world(), CLIENT_ID, SECRET, token_uses=7) as server:
        server.fail_next(4, retry_after=0)
        result = run_crawl(spark, lake, crawl_config(server, "spotify.max_concurrency=1"), tag="storm")
        rows = result.rows
        # Every token after each session's first one is a refresh the crawl counted.
        assert server.calls["token"] > SESSIONS_PER_CRAWL + 2
        assert result.stats.token_refreshes == server.calls["token"] - SESSIONS_PER_CRAWL
    assert rows.equals(baseline)


def test_credentials_never_reach_logs_or_errors(spark, lake, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    secrets = [SECRET, base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()]
    with SpotifyApiServer(world(artists_2020=2, artists_2021=0), CLIENT_ID, SECRET) as server:
        config = crawl_config(server)
        result = run_crawl(spark, lake, config)
        tokens = list(server.tokens)
        with pytest.raises(SpotifyError) as refused:
            run_crawl(spark, lake, crawl_config(server, secret="wrong-" + SECRET), tag="wrong-secret")
    assert str(refused.value) == "spotify: the client id or secret was refused (invalid_client)"
    out = capsys.readouterr()
    text = "\n".join([caplog.text, out.out, out.err, str(refused.value), repr(result.stats), repr(config)])
    for secret in secrets + tokens:
        assert secret not in text


def test_credentials_come_from_the_environment_and_their_absence_is_one_line(spark, lake):
    with pytest.raises(SpotifyError, match="no credentials: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET"):
        run_crawl(spark, lake, load_config(CONF, environ={}))
    with SpotifyApiServer(world(artists_2020=2, artists_2021=0), CLIENT_ID, SECRET) as server:
        config = load_config(CONF, [f"spotify.api_url={server.base_url}/v1/",
                                                 f"spotify.token_url={server.base_url}/api/token",
                                                 "spotify.first_year=2020", "spotify.last_year=2020"],
                             environ={"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": SECRET})
        assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
        assert len(run_crawl(spark, lake, config).rows) == 12


class FakeDbutils:
    """``dbutils.secrets.get(scope, key)`` as on Databricks, from a dict; records what was asked."""

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.secrets, self.values, self.asked = self, values, []

    def get(self, scope: str, key: str) -> str:
        self.asked.append((scope, key))
        return self.values[(scope, key)]


def test_credentials_from_a_databricks_secret_scope(spark, lake, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    scope = {("hp", "spotify_client_id"): CLIENT_ID, ("hp", "spotify_client_secret"): SECRET}
    with SpotifyApiServer(world(artists_2020=2, artists_2021=0), CLIENT_ID, SECRET) as server:
        config = load_config(None, [f"spotify.api_url={server.base_url}/v1/",
                                    f"spotify.token_url={server.base_url}/api/token", "spotify.first_year=2020",
                                    "spotify.last_year=2020", "secrets.databricks_scope=hp"], environ={})
        dbutils = FakeDbutils(scope)
        monkeypatch.setattr(credentials, "databricks_dbutils", lambda: dbutils)   # as on a Databricks driver
        rows = run_crawl(spark, lake, config).rows
        secrets = spotify_credentials(config.secrets, FakeDbutils(scope))
    assert len(rows) == 12 and dbutils.asked == [("hp", "spotify_client_id"), ("hp", "spotify_client_secret")]
    assert SECRET not in repr(secrets) and SECRET not in caplog.text
    from_env = load_config(None, ["secrets.databricks_scope=hp"],
                           environ={"SPOTIPY_CLIENT_ID": "id-from-env", "SPOTIPY_CLIENT_SECRET": "secret-from-env"})
    unused = FakeDbutils(scope)
    assert spotify_credentials(from_env.secrets, unused) is from_env.secrets and unused.asked == []
    with pytest.raises(SourceError, match=r"^databricks secret scope 'hp': cannot read key 'spotify_client_secret' "
                                          r"\(KeyError\)$"):
        spotify_credentials(config.secrets, FakeDbutils({("hp", "spotify_client_id"): CLIENT_ID}))
    monkeypatch.undo()
    with pytest.raises(SourceError, match="dbutils is not available"):
        spotify_credentials(config.secrets)       # not on Databricks


@pytest.mark.parametrize("retry_after", [2_484, 12_471, 4_397])   # seen from the service; spotify-web-api-java's stub
def test_a_retry_after_of_hours_stops_at_once_with_one_line(retry_after):
    import threading

    outcome: list[BaseException] = []
    with SpotifyApiServer(world(artists_2020=2, artists_2021=0), CLIENT_ID, SECRET) as server:
        server.fail_next(1, retry_after=retry_after)
        crawler = crawler_for(server)

        def run() -> None:
            try:
                crawler.genre_artists("hip hop")
            except BaseException as exc:   # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)   # the old crawl slept Retry-After: hours
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), f"the crawl is waiting out Retry-After: {retry_after} s"
    (error,) = outcome
    assert isinstance(error, SpotifyError) and error.http_status == 429
    message = str(error)
    assert f"asks to wait {retry_after} s (Retry-After), more than spotify.max_wait_s (60 s)" in message
    assert "/v1/search" in message and "\n" not in message and "try again after" in message


def test_a_retry_after_within_max_wait_is_waited_out():
    with SpotifyApiServer(world(artists_2020=2, artists_2021=0), CLIENT_ID, SECRET) as server:
        server.fail_next(2, retry_after=1)
        crawler = crawler_for(server, "spotify.max_wait_s=1")
        assert len(crawler.genre_artists("hip hop")) == 2
        server.fail_next(1, retry_after=2)
        with pytest.raises(SpotifyError, match=r"asks to wait 2 s .*max_wait_s \(1 s\)"):
            crawler_for(server, "spotify.max_wait_s=1").genre_artists("hip hop")
