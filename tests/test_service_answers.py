"""The real services' answers, replayed through the project's clients: Deezer's in-band errors
(HTTP 200), iTunes' throttle (403, empty body) and its rate, and the Spotify config values the
API refuses. The bodies are the recorded ones (:mod:`hitpredict.testing.recorded_answers`)."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from hitpredict.config import ConfigError, load_config
from hitpredict.sources.api_client import ApiClient
from hitpredict.sources.preview_lookup import PreviewLookup, TrackQuery
from hitpredict.testing import recorded_answers as rec
from hitpredict.testing.music_apis import FakeTrack, MusicApiServer, RecordedSleeps as Sleeps, resolve_overrides

TRACKS = [FakeTrack(1, "Amber River", "Kalo Mi", "QZAAA2600001", "http://cdn.test/1.mp3", rank=420_000),
          FakeTrack(2, "Broken Rocket", "Lone Sa", "QZAAA2600002", "http://cdn.test/2.mp3", on_deezer=False)]
AMBER = TrackQuery("t1", isrc="QZAAA2600001")


@pytest.fixture()
def server():
    with MusicApiServer(TRACKS) as fake:
        yield fake


def lookup_for(server, *extra: str, sleep=None, clock=None) -> tuple[PreviewLookup, Sleeps]:
    config = load_config(None, resolve_overrides(server, *extra), environ={}).resolve
    sleeps = sleep if sleep is not None else Sleeps()
    client = ApiClient(config, sleep=sleeps, **({"clock": clock} if clock else {}))
    return PreviewLookup(config, client), sleeps


# --------------------------------------------------------------------------- the fakes answer as recorded
def test_the_fake_answers_with_the_recorded_bodies(server):
    missing = requests.get(f"{server.base_url}/deezer/track/isrc:QZNOTHERE0001")
    assert (missing.status_code, missing.text) == (200, rec.DEEZER_NO_DATA)
    unknown = requests.get(f"{server.base_url}/deezer/does-not-exists")
    assert (unknown.status_code, unknown.text) == (404, rec.DEEZER_UNKNOWN_PATH)
    server.fail_next("itunes", [403])
    throttled = requests.get(f"{server.base_url}/itunes/lookup", params={"isrc": "QZAAA2600002"})
    assert (throttled.status_code, throttled.content) == (403, b"")
    server.deezer_error_next(rec.DEEZER_WRONG_PARAMETER)
    assert requests.get(f"{server.base_url}/deezer/search").text == rec.DEEZER_WRONG_PARAMETER


def test_in_band_errors_are_read_without_raising_whatever_their_shape():
    from hitpredict.sources.api_client import in_band_error

    assert in_band_error(json.loads(rec.DEEZER_NO_DATA)).code == 800
    assert in_band_error(json.loads(rec.DEEZER_WRONG_PARAMETER)).describe() == \
        "ParameterException (code 500): Wrong parameter"
    assert in_band_error(json.loads(rec.DEEZER_NO_CODE)).code is None
    assert in_band_error(json.loads(rec.DEEZER_EMPTY_ERROR_LIST)) is None          # success, with "error": []
    assert in_band_error({"error": ["quota?"]}).code is None                        # a list: an error, no raise
    assert in_band_error(json.loads(rec.DEEZER_UNKNOWN_PATH)).message == "'Not Found'"
    assert in_band_error([1, 2]) is None and in_band_error({"data": []}) is None


# --------------------------------------------------------------------------- Deezer: HTTP 200 errors
def test_deezer_no_data_is_not_found(server):
    lookup, _ = lookup_for(server, "resolve.services=[deezer]")
    (answer,) = lookup.resolve(TrackQuery("t9", isrc="QZNOTHERE0001"))
    assert answer.status == "not_found"


@pytest.mark.parametrize("body, detail", [
    (rec.DEEZER_WRONG_PARAMETER, "deezer_error: ParameterException (code 500): Wrong parameter"),
    (rec.DEEZER_NO_CODE, "deezer_error: Exception: An error has occured"),
    ('{"error":["unexpected"]}', "deezer_error: error: ['unexpected']"),
], ids=["ParameterException-500", "no-code", "error-is-a-list"])
def test_other_deezer_errors_are_failures_not_not_found(server, body, detail):
    lookup, _ = lookup_for(server, "resolve.services=[deezer]")
    server.deezer_error_next(body)
    (answer,) = lookup.resolve(AMBER)
    assert (answer.status, answer.detail) == ("failed", detail)
    server.deezer_error_next(body)          # on the search too (the ISRC missed)
    (answer,) = lookup.resolve(TrackQuery("t9", "Amber River", "Kalo Mi", "QZNOTHERE0001"))
    assert (answer.status, answer.detail) == ("failed", detail)


def test_an_empty_error_list_beside_a_result_is_no_error(server):
    server.deezer_error_next(rec.DEEZER_EMPTY_ERROR_LIST)
    lookup, _ = lookup_for(server, "resolve.services=[deezer]")
    (answer,) = lookup.resolve(TrackQuery("t1", "Amber River", "Kalo Mi", "QZAAA2600001"))
    assert (answer.status, answer.method) == ("found", "search")      # no preview in that answer: searched


@pytest.mark.parametrize("body, kind", [(rec.DEEZER_QUOTA, "quota"), (rec.DEEZER_BUSY, "busy")])
def test_deezer_quota_and_busy_are_retried_then_failed_not_not_found(server, body, kind):
    lookup, sleeps = lookup_for(server, "resolve.services=[deezer]", "resolve.max_retries=3")
    server.deezer_error_next(body, 2)
    (answer,) = lookup.resolve(AMBER)
    assert answer.found and len(sleeps) == 2
    server.deezer_error_next(body, 10)
    (answer,) = lookup.resolve(AMBER)
    assert answer.status == "failed" and answer.detail.startswith(f"{kind}: ")


def test_the_fetch_time_refresh_treats_a_deezer_failure_as_transient(server):
    from hitpredict.fetch import FetchItem
    from hitpredict.stages.fetch_previews import refresh_by_lookup

    lookup, _ = lookup_for(server, "resolve.services=[deezer]")
    refresh = refresh_by_lookup(lookup, {"t1": AMBER})
    server.deezer_error_next(rec.DEEZER_WRONG_PARAMETER)
    refreshed = refresh(FetchItem("t1", preview_url="http://cdn.test/1.mp3"))
    assert refreshed.url is None and refreshed.transient      # tried again on a later run, not settled
    server.deezer_error_next(rec.DEEZER_NO_DATA)
    gone = refresh(FetchItem("t1", preview_url="http://cdn.test/1.mp3"))
    assert gone.url is None and not gone.transient             # "no data": really not there


# --------------------------------------------------------------------------- iTunes: 403 throttle, pacing
def test_itunes_403_with_an_empty_body_is_retried_with_backoff(server):
    lookup, _ = lookup_for(server, "resolve.services=[itunes]")
    server.fail_next("itunes", [403, 403])
    (answer,) = lookup.resolve(TrackQuery("t2", isrc="QZAAA2600002"))
    assert answer.found
    waits = lookup.client.waits               # backoff from one call interval (3 s at 20 a minute), doubling
    assert len(waits) == 2 and 1.5 <= waits[0] <= 3.0 <= waits[1] <= 6.0, waits
    server.fail_next("itunes", [403] * 10)
    (answer,) = lookup.resolve(TrackQuery("t2", isrc="QZAAA2600002"))
    assert answer.status == "failed" and answer.detail.startswith("throttled: HTTP 403 with an empty body")


def test_itunes_calls_are_paced_to_20_a_minute_by_default(server):
    assert load_config(None, environ={}).resolve.itunes_calls_per_minute == 20
    lookup, sleeps = lookup_for(server, "resolve.services=[itunes]", clock=lambda: 1000.0)   # time stands still
    for _ in range(3):
        assert lookup.resolve(TrackQuery("t2", isrc="QZAAA2600002"))[0].found
    lookup.resolve(AMBER)                                    # not on iTunes by ISRC: no search without a title
    assert sleeps == [3.0, 6.0, 9.0]                         # 60 s / 20: one call every 3 s
    assert lookup.client.paced_s == 18.0
    deezer, _ = lookup_for(server, "resolve.services=[deezer]", clock=lambda: 1000.0)
    for _ in range(3):
        deezer.resolve(AMBER)
    assert deezer.client.paced_s == 0                         # only the iTunes base is paced


def test_paced_calls_stay_under_a_throttling_itunes():
    with MusicApiServer(TRACKS, itunes_limit=(3, 1.0)) as server:     # 3 calls a second, then 403s
        unpaced, _ = lookup_for(server, "resolve.services=[itunes]", "resolve.itunes_calls_per_minute=0",
                                sleep=lambda s: None)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: unpaced.resolve(TrackQuery(f"t{i}", isrc="QZAAA2600002")), range(8)))
        assert server.throttled > 0
        time.sleep(1.1)                                                                 # the window empties
        server.throttled = 0
        paced, _ = lookup_for(server, "resolve.services=[itunes]", "resolve.itunes_calls_per_minute=120",
                              sleep=time.sleep)                                         # one call every 0.5 s
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: paced.resolve(TrackQuery(f"t{i}", isrc="QZAAA2600002"))[-1],
                                    range(8)))
    assert all(a.found for a in answers) and server.throttled == 0


def test_a_resolve_run_divides_the_itunes_rate_among_its_tasks():
    from hitpredict.fanouts.resolve_previews import task_config

    config = load_config(None, environ={}).resolve
    assert task_config(config, 4).itunes_calls_per_minute == 5 and task_config(config, 1) is config
    unlimited = config.model_copy(update={"itunes_calls_per_minute": 0})
    assert task_config(unlimited, 4).itunes_calls_per_minute == 0


# --------------------------------------------------------------------------- Spotify: what the API refuses
def test_spotify_settings_the_api_refuses_are_refused_at_load_naming_the_key():
    with pytest.raises(ConfigError, match=r"spotify\.page_size = 20 is not allowed: Development-Mode apps get at "
                                          r"most 10 items per search and artist-albums page"):
        load_config(None, ["spotify.page_size=20"], environ={})
    assert load_config(None, ["spotify.extended_access=true", "spotify.page_size=50"],
                       environ={}).spotify.page_size == 50
    with pytest.raises(ConfigError, match=r"spotify\.first_year \(2024\) is after spotify\.last_year"):
        load_config(None, ["spotify.first_year=2024", "spotify.last_year=2020"], environ={})
    assert load_config(None, ["spotify.first_year=2020", "spotify.last_year=2020"], environ={}).spotify.last_year == 2020
    assert load_config(None, environ={}).spotify.max_wait_s == 60
