"""Deezer and iTunes preview look-ups against a loopback fake that speaks their JSON:
ISRC first, a title+artist search accepted only on a close match, 429/5xx/quota retried."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from hitpredict.config import load_config
from hitpredict.sources.api_client import ApiClient, ApiError
from hitpredict.sources.matching import names_match, normalise_name
from hitpredict.sources.preview_lookup import PreviewLookup, TrackQuery
from hitpredict.testing.music_apis import FakeTrack, MusicApiServer, RecordedSleeps as Sleeps, resolve_overrides

TRACKS = [
    FakeTrack(1, "Déjà Vu (feat. Jay-Z)", "Beyoncé", "USSM10603618", "http://cdn.test/dz/1.mp3", rank=912_345),
    FakeTrack(2, "Midnight Signal", "Lil Orbit", "QZABC2400001", "http://cdn.test/dz/2.mp3", rank=120_000,
              isrc_known=False),
    FakeTrack(3, "Midnight Signal", "Lil Orbital Crew", None, "http://cdn.test/dz/3.mp3", rank=5_000),
    FakeTrack(4, "Gold Ghost", "King Nyx", "QZABC2400004", "http://cdn.test/it/4.m4a", on_deezer=False),
]


@pytest.fixture()
def server():
    with MusicApiServer(TRACKS) as fake:
        yield fake


def lookup_for(server, *extra: str, sleep=None):
    config = load_config(None, resolve_overrides(server, *extra), environ={}).resolve
    client = ApiClient(config, sleep=sleep if sleep is not None else Sleeps())
    return PreviewLookup(config, client), client


def test_names_are_compared_after_normalising():
    assert normalise_name("Déjà Vu (feat. Jay-Z) - 2006 Remaster") == "deja vu"
    assert normalise_name("  SICKO MODE ft. Drake ") == "sicko mode"
    assert names_match("Deja Vu", "Beyonce", "Déjà Vu (feat. Jay-Z)", "Beyoncé", 0.9) == 1.0
    assert names_match("Midnight Signal", "Lil Orbit", "Midnight Signal", "Lil Orbital Crew", 0.9) is None


def test_isrc_finds_the_deezer_preview_and_rank(server):
    lookup, _ = lookup_for(server)
    (answer,) = lookup.resolve(TrackQuery("t1", "Deja Vu", "Beyonce", "USSM10603618"))
    assert (answer.service, answer.status, answer.method) == ("deezer", "found", "isrc")
    assert answer.preview_url == "http://cdn.test/dz/1.mp3" and answer.rank == 912_345 and answer.match_score is None


def test_search_is_accepted_only_when_title_and_artist_both_match(server):
    lookup, _ = lookup_for(server)
    (answer,) = lookup.resolve(TrackQuery("t2", "Midnight Signal", "Lil Orbit", "QZABC2400001"))
    assert (answer.status, answer.method, answer.external_id) == ("found", "search", "2")  # not track 3
    assert answer.match_score == 1.0
    deezer, itunes = lookup.resolve(TrackQuery("t3", "Midnight Signal", "Lil Orbit Gang"))
    assert deezer.status == "no_match" and "none with title and artist both >= 0.9" in deezer.detail
    assert itunes.status == "no_match"
    loose, _ = lookup_for(server, "resolve.match_threshold=0.6")
    assert loose.resolve(TrackQuery("t3", "Midnight Signal", "Lil Orbit Gang"))[0].found


def test_itunes_fills_what_deezer_does_not_have(server):
    lookup, _ = lookup_for(server)
    deezer, itunes = lookup.resolve(TrackQuery("t4", "Gold Ghost", "King Nyx", "QZABC2400004"))
    assert deezer.status == "not_found"
    assert (itunes.service, itunes.status, itunes.method, itunes.preview_url) == (
        "itunes", "found", "isrc", "http://cdn.test/it/4.m4a")
    assert itunes.rank is None


def test_429s_wait_retry_after_and_5xx_back_off_exponentially(server):
    sleeps = Sleeps()
    lookup, client = lookup_for(server, "resolve.backoff_max_s=30", sleep=sleeps)
    server.fail_next("deezer", [429, 429, 429], retry_after=7)
    assert lookup.resolve(TrackQuery("t1", isrc="USSM10603618"))[0].found
    assert sleeps == [7.0, 7.0, 7.0]
    sleeps.clear()
    server.fail_next("deezer", [503, 502, 500])
    assert lookup.resolve(TrackQuery("t1", isrc="USSM10603618"))[0].found
    assert len(sleeps) == 3 and all(0.005 * 2 ** i <= s <= 0.01 * 2 ** i for i, s in enumerate(sleeps)), sleeps
    sleeps.clear()
    server.quota_next(2)   # Deezer's in-band quota error (HTTP 200, code 4)
    assert lookup.resolve(TrackQuery("t1", isrc="USSM10603618"))[0].found and len(sleeps) == 2


def test_a_storm_longer_than_the_retries_is_a_counted_failure_not_a_crash(server):
    lookup, _ = lookup_for(server, "resolve.max_retries=2", "resolve.services=[deezer]")
    server.fail_next("deezer", [429] * 5, retry_after=1)
    (answer,) = lookup.resolve(TrackQuery("t1", isrc="USSM10603618"))
    assert answer.status == "failed" and answer.detail == "http_429: HTTP 429 from " + server.base_url[7:]
    with pytest.raises(ApiError, match="http_404"):
        ApiClient(lookup.config).get_json(server.base_url + "/nowhere-404", {})  # not retried: permanent


def test_calls_per_host_stay_under_the_cap(server):
    server.latency_s = 0.05
    lookup, _ = lookup_for(server, "resolve.per_host_concurrency=2")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: lookup.resolve(TrackQuery(f"t{i}", isrc="USSM10603618"))[-1], range(24)))
    assert all(a.found for a in answers)
    assert server.max_in_flight["deezer"] == 2
