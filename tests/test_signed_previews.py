"""Signed preview URLs (Deezer's expire within hours): an expired one, or one its CDN refuses,
is looked up again for a fresh URL instead of failing for good."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from hitpredict.config import FetchConfig, load_config
from hitpredict.fetch import Fetcher, FetchItem, Refreshed
from hitpredict.signed_urls import is_expired, signed_url_expiry
from hitpredict.testing.music_apis import FakeTrack, MusicApiServer
from hitpredict.preview_server import Fault, PreviewServer

UTC = dt.timezone.utc
PAST, FUTURE = 1_700_000_000, 4_100_000_000          # 2023-11-14 and 2099-12-04


@pytest.fixture()
def server(mp3):
    with PreviewServer(files={f"{i}.mp3": mp3 for i in range(4)}) as srv:
        yield srv


def signed(url: str, exp: int) -> str:
    return f"{url}?hdnea=exp={exp}~acl=/api/1/*~hmac=0f1e2d"


class Hook:
    """A refresh hook that records what it was asked and answers as told."""

    def __init__(self, *answers: Refreshed) -> None:
        self.answers = list(answers)
        self.asked: list[FetchItem] = []

    def __call__(self, item: FetchItem) -> Refreshed:
        self.asked.append(item)
        return self.answers.pop(0)


def fetch(server, url: str, hook: Hook | None):
    config = FetchConfig(allow_hosts=["127.0.0.1"], max_retries=1, backoff_base_s=0.01)
    with Fetcher(config, refresh=hook) as fetcher:
        return fetcher.fetch(FetchItem("t1", preview_url=url))


def test_expiry_is_read_from_akamai_and_cloudfront_signatures():
    at = dt.datetime.fromtimestamp(PAST, UTC)
    assert signed_url_expiry(signed("https://cdnt-preview.dzcdn.net/api/1/1/a/b/0/c.mp3", PAST)) == at
    assert signed_url_expiry(f"https://cdn.test/a.mp3?x=1&__token__=st=1~exp={PAST}~hmac=ab") == at
    assert signed_url_expiry(f"https://d111.cloudfront.net/a.mp3?Expires={PAST}&Signature=x&Key-Pair-Id=K") == at
    for unsigned in ("https://p.scdn.co/mp3-preview/abc?cid=1", "https://audio-ssl.itunes.apple.com/a.m4a", None, "",
                     "https://cdn.test/a.mp3?hdnea=exp=soon~hmac=1", "https://cdn.test/a.mp3?Expires=9" + "9" * 30):
        assert signed_url_expiry(unsigned) is None, unsigned
    now = dt.datetime.fromtimestamp(PAST - 30, UTC)
    assert not is_expired(signed("https://cdn.test/a.mp3", PAST), now)
    assert is_expired(signed("https://cdn.test/a.mp3", PAST), now, margin_s=60)     # within the margin
    assert not is_expired("https://cdn.test/a.mp3", now, margin_s=10**9)            # unsigned never expires


def test_an_expired_url_is_refreshed_before_any_request(server, mp3):
    fresh = signed(server.url("1.mp3"), FUTURE)
    hook = Hook(Refreshed(fresh, "deezer: found by isrc"))
    result = fetch(server, signed(server.url("0.mp3"), PAST), hook)
    assert result.ok and result.audio == mp3 and result.url == fresh and result.attempts == 1
    assert [i.track_id for i in hook.asked] == ["t1"]
    assert server.hits == {"1.mp3": 1}                          # the dead URL was never requested


def test_a_signed_url_the_cdn_refuses_is_refreshed_once(server, mp3):
    server.set_fault("0.mp3", Fault("status", status=403, times=1))
    fresh = signed(server.url("0.mp3"), FUTURE + 1)
    hook = Hook(Refreshed(fresh, "deezer: found by isrc"))
    result = fetch(server, signed(server.url("0.mp3"), FUTURE), hook)
    assert result.ok and result.url == fresh and result.attempts == 2 and len(hook.asked) == 1

    server.set_fault("2.mp3", Fault("status", status=403))      # the fresh URL is refused too: no loop
    hook = Hook(Refreshed(signed(server.url("2.mp3"), FUTURE + 2), "deezer: found by isrc"))
    result = fetch(server, signed(server.url("2.mp3"), FUTURE), hook)
    assert (result.status, result.error_kind, result.transient, len(hook.asked)) == ("failed", "http_403", False, 1)


def test_no_fresh_url_is_a_counted_failure_that_says_why(server):
    dead = signed(server.url("0.mp3"), PAST)
    hook = Hook(Refreshed(None, "deezer: not_found (no data); itunes: not_found (0 results)"))
    result = fetch(server, dead, hook)
    assert (result.status, result.error_kind, result.transient) == ("failed", "preview_expired", False)
    assert result.url == dead
    assert result.error_detail == ("signed URL expired at 2023-11-14 22:13 UTC; look-up again: "
                                   "deezer: not_found (no data); itunes: not_found (0 results)")
    hook = Hook(Refreshed(None, "deezer: failed (HTTP 503)", transient=True))
    assert fetch(server, dead, hook).transient                  # the service failed: a later run tries again
    assert not server.hits


def test_unsigned_urls_and_fetchers_without_a_hook_fail_as_before(server):
    server.set_fault("0.mp3", Fault("status", status=403))
    hook = Hook()
    result = fetch(server, server.url("0.mp3"), hook)
    assert (result.error_kind, hook.asked) == ("http_403", [])
    result = fetch(server, signed(server.url("1.mp3"), PAST), None)
    assert (result.error_kind, result.error_detail) == ("http_403", "HTTP 403 from " + server.url("")[7:-1])


def test_fetch_previews_looks_expired_deezer_previews_up_again(spark, lake, tmp_path, mp3):
    from hitpredict.stages import fetch_previews, ingest_catalogue

    with PreviewServer(files={f"{i}.mp3": mp3 for i in range(1, 4)}) as cdn:
        music = [FakeTrack(i, title, "Kalo Mi", f"QZAAA260000{i}", cdn.url(f"{i}.mp3"))
                 for i, title in ((1, "Amber River"), (2, "Broken Rocket"), (3, "Cosmic Garden"))]
        csv = tmp_path / "demos.csv"
        csv.write_text("title,artists,isrc\n" + "".join(f"{t.title},{t.artist},{t.isrc}\n" for t in music))
        with MusicApiServer(music, preview_lifetime_s=1) as apis:
            config = load_config(None, [f"resolve.deezer_url={apis.base_url}/deezer",
                                        f"resolve.itunes_url={apis.base_url}/itunes", "resolve.backoff_base_s=0",
                                        "ingest.resolve_missing=true", "fetch.allow_hosts=[127.0.0.1]",
                                        "fetch.expiry_margin_s=0"], environ={})
            assert ingest_catalogue.run(config, spark, lake, str(csv)).ok == 3
            given = lake.read("catalogue").toPandas().set_index("track_id")["preview_url"]
            assert all(signed_url_expiry(u) is not None for u in given)
            time.sleep(max(0.0, max(signed_url_expiry(u) for u in given).timestamp() - time.time() + 0.5))
            # A day later: Deezer signs for longer, no longer has track 2 (iTunes does), nor track 3 anywhere.
            apis.preview_lifetime_s = 3600
            apis.tracks[1] = dataclasses.replace(music[1], on_deezer=False)
            apis.tracks[2] = dataclasses.replace(music[2], on_deezer=False, on_itunes=False)
            report = fetch_previews.run(config, spark, lake)
    assert report.details == ["signed preview URLs: 3, 3 expired before this run; "
                              "fetched from a fresh look-up 2, no fresh URL (preview_expired) 1"]
    assert (report.ok, report.failed) == (2, {"preview_expired": 1})
    previews = lake.read("previews").toPandas().set_index("track_id").join(given)
    ids = lake.read("catalogue").toPandas().set_index("title")["track_id"]
    amber, broken, cosmic = (previews.loc[ids[t.title]] for t in music)
    assert amber["status"] == "ok" and amber["url"] != amber["preview_url"]
    assert signed_url_expiry(amber["url"]) > dt.datetime.now(UTC) + dt.timedelta(minutes=50)
    assert broken["status"] == "ok" and broken["url"] == cdn.url("2.mp3")           # iTunes: unsigned
    assert cosmic["status"] == "failed" and cosmic["url"] == cosmic["preview_url"]
    assert cosmic["error_detail"].startswith("signed URL expired at ")
    assert cosmic["error_detail"].endswith(
        "; look-up again: deezer: not_found (0 search hit(s), none with title and artist both >= 0.9); "
        "itunes: no_match (2 search hit(s), none with title and artist both >= 0.9)")   # Kalo Mi's other songs
    assert bytes(amber["audio"]) == mp3 and cdn.hits["1.mp3"] == 1                  # never the dead URL
