"""The fetcher against the loopback fault server: retries, caps, sniffing, SSRF guard."""
from __future__ import annotations

import time

import pytest

from hitpredict.config import FetchConfig
from hitpredict.fetch import AddressPolicy, FetchError, Fetcher, FetchItem, sniff_audio
from hitpredict.testing.preview_server import Fault, PreviewServer


@pytest.fixture()
def server(mp3):
    with PreviewServer(files={f"{i}.mp3": mp3 for i in range(20)}) as srv:
        yield srv


def config(**overrides):
    base = dict(allow_hosts=["127.0.0.1"], max_retries=3, backoff_base_s=0.01, backoff_max_s=2.0,
                connect_timeout_s=2, read_timeout_s=0.5, total_timeout_s=3)
    return FetchConfig(**{**base, **overrides})


def fetch(server, name, **overrides):
    with Fetcher(config(**overrides)) as fetcher:
        return fetcher.fetch(FetchItem("t1", preview_url=server.url(name)))


def test_ok_download_is_byte_identical_with_hash(server, mp3):
    result = fetch(server, "0.mp3")
    assert result.ok and result.audio == mp3 and result.attempts == 1
    assert result.content_type == "audio/mpeg" and result.size_bytes == len(mp3)
    import hashlib

    assert result.sha256 == hashlib.sha256(mp3).hexdigest()


def test_transient_5xx_is_retried_until_ok(server, mp3):
    server.set_fault("0.mp3", Fault("status", status=503, times=2))
    result = fetch(server, "0.mp3")
    assert result.ok and result.attempts == 3 and result.audio == mp3


def test_5xx_that_never_ends_is_a_transient_failure(server):
    server.set_fault("0.mp3", Fault("status", status=500))
    result = fetch(server, "0.mp3", max_retries=2)
    assert (result.status, result.error_kind, result.transient, result.attempts) == ("failed", "http_500", True, 3)


def test_429_honours_retry_after(server, mp3):
    server.set_fault("0.mp3", Fault("retry_after", retry_after=1, times=1))
    started = time.monotonic()
    result = fetch(server, "0.mp3")
    assert result.ok and result.attempts == 2
    assert time.monotonic() - started >= 1.0


def test_404_is_permanent_and_not_retried(server):
    server.set_fault("0.mp3", Fault("status", status=404))
    result = fetch(server, "0.mp3")
    assert (result.error_kind, result.transient, result.attempts) == ("http_404", False, 1)
    assert server.hits["0.mp3"] == 1


def test_slow_body_times_out_then_succeeds(server, mp3):
    server.set_fault("0.mp3", Fault("slow", delay_s=10, times=1))
    result = fetch(server, "0.mp3")
    assert result.ok and result.attempts == 2


def test_trickling_body_hits_the_total_deadline(server):
    server.set_fault("0.mp3", Fault("slow", delay_s=4.0))  # 0.4 s pauses: under the read timeout
    result = fetch(server, "0.mp3", read_timeout_s=2, total_timeout_s=1, max_retries=0)
    assert (result.error_kind, result.transient) == ("timeout", True)


def test_truncated_body_is_retried(server, mp3):
    server.set_fault("0.mp3", Fault("truncate", times=1))
    result = fetch(server, "0.mp3")
    assert result.ok and result.attempts == 2 and result.audio == mp3


def test_reset_connection_is_retried(server, mp3):
    server.set_fault("0.mp3", Fault("reset", times=1))
    assert fetch(server, "0.mp3").ok


def test_html_is_not_audio(server):
    server.set_fault("0.mp3", Fault("html"))
    result = fetch(server, "0.mp3")
    assert (result.error_kind, result.transient) == ("not_audio", False)
    assert "text/html" in result.error_detail


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_body_is_refused_without_reading_it_all(server, declare_length):
    server.set_fault("0.mp3", Fault("oversize", size=50 * 1024 * 1024, declare_length=declare_length))
    started = time.monotonic()
    result = fetch(server, "0.mp3", max_body_bytes=1024 * 1024, read_timeout_s=5)
    assert (result.error_kind, result.transient) == ("too_large", False)
    assert time.monotonic() - started < 3


def test_redirect_is_followed_on_the_same_host(server, mp3):
    server.set_fault("old.mp3", Fault("redirect", location="1.mp3"))
    result = fetch(server, "old.mp3")
    assert result.ok and result.audio == mp3 and result.url.endswith("/1.mp3")


@pytest.mark.parametrize("url", [
    "http://127.0.0.2/x.mp3", "http://10.0.0.1/x.mp3", "http://169.254.169.254/latest/meta-data/",
    "http://192.168.1.1/x.mp3", "http://[::1]/x.mp3", "file:///etc/passwd", "ftp://example.com/x.mp3",
    "http://0.0.0.0/x.mp3",
])
def test_non_public_addresses_are_blocked(url):
    with Fetcher(config(allow_hosts=[])) as fetcher:
        result = fetcher.fetch(FetchItem("t", preview_url=url))
    assert (result.error_kind, result.transient, result.attempts) == ("blocked_address", False, 1)


def test_loopback_is_blocked_unless_allow_listed(server):
    assert fetch(server, "0.mp3", allow_hosts=[]).error_kind == "blocked_address"
    assert server.hits["0.mp3"] == 0  # refused before connecting
    assert fetch(server, "0.mp3", allow_hosts=["127.0.0.0/8"]).ok


def test_redirect_to_a_private_address_is_blocked(server):
    server.set_fault("away.mp3", Fault("redirect", location="http://10.0.0.1/x.mp3"))
    result = fetch(server, "away.mp3")
    assert result.error_kind == "blocked_address" and "10.0.0.1" in result.error_detail


def test_host_names_are_checked_by_what_they_resolve_to():
    policy = AddressPolicy([], resolver=lambda host: {"cdn.example": ["93.184.216.34"],
                                                      "evil.example": ["93.184.216.34", "10.1.2.3"]}[host])
    policy.check("https://cdn.example/a.mp3")
    with pytest.raises(FetchError, match="10.1.2.3"):
        policy.check("https://evil.example/a.mp3")


def test_fetch_all_runs_concurrently_and_caps_per_host(server):
    server.latency_s = 0.2
    items = [FetchItem(f"t{i}", preview_url=server.url(f"{i}.mp3")) for i in range(20)]
    started = time.monotonic()
    with Fetcher(config(max_concurrency=10, per_host_concurrency=5, read_timeout_s=5)) as fetcher:
        results = list(fetcher.fetch_all(items))
    elapsed = time.monotonic() - started
    assert sorted(r.track_id for r in results) == sorted(i.track_id for i in items)
    assert all(r.ok for r in results)
    assert 0.2 * 20 / 5 * 0.9 <= elapsed < 0.2 * 20 / 2  # 5 at a time: ~0.8 s, never sequential (4 s)


def test_local_files_are_read_directly(tmp_path, mp3):
    (tmp_path / "a.mp3").write_bytes(mp3)
    (tmp_path / "fake.mp3").write_bytes(b"<html>no</html>" * 10)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with Fetcher(config()) as fetcher:
        assert fetcher.fetch(FetchItem("a", audio_uri=str(tmp_path / "a.mp3"))).audio == mp3
        assert fetcher.fetch(FetchItem("b", audio_uri=f"file://{tmp_path}/a.mp3")).ok
        assert fetcher.fetch(FetchItem("c", audio_uri=str(tmp_path / "fake.mp3"))).error_kind == "not_audio"
        assert fetcher.fetch(FetchItem("d", audio_uri=str(tmp_path / "empty.mp3"))).error_kind == "empty"
        assert fetcher.fetch(FetchItem("e", audio_uri=str(tmp_path / "none.mp3"))).error_kind == "missing_file"
        assert fetcher.fetch(FetchItem("f")).error_kind == "no_audio_reference"


def test_sniffing_recognises_audio_containers_only(mp3):
    assert sniff_audio(mp3) == "mp3"
    assert sniff_audio(b"\x00\x00\x00\x20ftypM4A " + bytes(20)) == "m4a"
    assert sniff_audio(b"OggS" + bytes(20)) == "ogg"
    assert sniff_audio(b"fLaC" + bytes(20)) == "flac"
    assert sniff_audio(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20)) == "wav"
    assert sniff_audio(b"<!doctype html><html>") is None
    assert sniff_audio(b"ID3\x04\x00\x00\x00\x00\x00\x20" + bytes(32)) is None  # a tag and nothing after it
    assert sniff_audio(bytes(100)) is None
