"""The loopback preview server produces every fault it advertises."""
from __future__ import annotations

import gzip
import http.client
import socket
import time

import pytest
import requests

from hitpredict.preview_server import FAULT_KINDS, Fault, PreviewServer

AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 400  # ~100 KB "MP3"


@pytest.fixture()
def server():
    with PreviewServer(files={"a.mp3": AUDIO, "b.mp3": AUDIO[::-1]}) as srv:
        yield srv


def test_serves_files_on_loopback_with_keep_alive(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    with requests.Session() as session:
        first = session.get(server.url("a.mp3"), timeout=5)
        second = session.get(server.url("b.mp3"), timeout=5)
    assert first.status_code == 200 and first.content == AUDIO
    assert first.headers["Content-Type"] == "audio/mpeg"
    assert second.content == AUDIO[::-1]
    assert requests.get(server.url("missing.mp3"), timeout=5).status_code == 404
    assert server.hits["a.mp3"] == 1


def test_serves_a_directory(tmp_path):
    (tmp_path / "x.flac").write_bytes(b"fLaC" + bytes(10))
    with PreviewServer(directory=tmp_path) as srv:
        reply = requests.get(srv.url("x.flac"), timeout=5)
        assert reply.content == b"fLaC" + bytes(10) and reply.headers["Content-Type"] == "audio/flac"
        assert requests.get(srv.url("../etc/passwd"), timeout=5).status_code == 404


def test_transient_5xx_then_ok(server):
    server.set_fault("a.mp3", Fault("status", status=503, times=2))
    codes = [requests.get(server.url("a.mp3"), timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_permanent_404(server):
    server.set_fault("a.mp3", Fault("status", status=404))
    assert [requests.get(server.url("a.mp3"), timeout=5).status_code for _ in range(3)] == [404] * 3


def test_429_with_retry_after(server):
    server.set_fault("a.mp3", Fault("retry_after", retry_after=2, times=1))
    first = requests.get(server.url("a.mp3"), timeout=5)
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert requests.get(server.url("a.mp3"), timeout=5).status_code == 200


def test_slow_body_exceeds_a_read_timeout(server):
    server.set_fault("a.mp3", Fault("slow", delay_s=3.0))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):  # ReadTimeoutError while streaming the body
        requests.get(server.url("a.mp3"), timeout=(2, 0.2))
    assert time.monotonic() - started < 2.5
    server.clear_faults()
    server.set_fault("b.mp3", Fault("slow", delay_s=0.5))
    slow = requests.get(server.url("b.mp3"), timeout=5)
    assert slow.content == AUDIO[::-1]  # slow but complete when the client waits


def test_truncated_body(server):
    server.set_fault("a.mp3", Fault("truncate"))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url("a.mp3"), timeout=5)
    # The raw bytes really stop half-way although Content-Length promised them all.
    conn = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]), timeout=5)
    conn.request("GET", "/a.mp3")
    reply = conn.getresponse()
    assert int(reply.getheader("Content-Length")) == len(AUDIO)
    with pytest.raises(http.client.IncompleteRead) as err:
        reply.read()
    assert len(err.value.partial) == len(AUDIO) // 2


def test_html_instead_of_audio(server):
    server.set_fault("a.mp3", Fault("html"))
    reply = requests.get(server.url("a.mp3"), timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/html")
    assert reply.content.lstrip().lower().startswith(b"<!doctype html")


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_body(server, declare_length):
    size = 3 * 1024 * 1024
    server.set_fault("a.mp3", Fault("oversize", size=size, declare_length=declare_length))
    with requests.get(server.url("a.mp3"), timeout=5, stream=True) as reply:
        assert reply.status_code == 200
        assert (reply.headers.get("Content-Length") == str(size)) is declare_length
        received = sum(len(chunk) for chunk in reply.iter_content(65536))
    assert received == size


def test_redirect_to_a_path_and_to_an_absolute_url(server):
    server.set_fault("old.mp3", Fault("redirect", location="a.mp3"))
    reply = requests.get(server.url("old.mp3"), timeout=5)
    assert reply.content == AUDIO and reply.history[0].status_code == 302
    server.set_fault("away.mp3", Fault("redirect", status=301, location="http://10.0.0.1/x.mp3"))
    first = requests.get(server.url("away.mp3"), timeout=5, allow_redirects=False)
    assert first.status_code == 301 and first.headers["Location"] == "http://10.0.0.1/x.mp3"


def test_connection_reset(server):
    server.set_fault("a.mp3", Fault("reset", times=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url("a.mp3"), timeout=5)
    assert requests.get(server.url("a.mp3"), timeout=5).content == AUDIO


def test_added_latency(server):
    server.latency_s = 0.2
    started = time.monotonic()
    requests.get(server.url("a.mp3"), timeout=5)
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("declare_length", [True, False])
def test_gzip_encoded_body_and_gzip_bomb(server, declare_length):
    server.set_fault("a.mp3", Fault("gzip", declare_length=declare_length))
    with requests.get(server.url("a.mp3"), timeout=5, stream=True) as reply:
        assert reply.headers["Content-Encoding"] == "gzip"
        wire = reply.raw.read(decode_content=False)
    assert gzip.decompress(wire) == AUDIO
    assert (reply.headers.get("Content-Length") == str(len(wire))) is declare_length
    server.set_fault("b.mp3", Fault("gzip_bomb", size=8 * 1024 * 1024, declare_length=declare_length))
    with requests.get(server.url("b.mp3"), timeout=5, stream=True) as reply:
        wire = reply.raw.read(decode_content=False)
    assert len(wire) < 64 * 1024 and len(gzip.decompress(wire)) == 8 * 1024 * 1024


def test_every_advertised_fault_kind_is_tested():
    tested = {"status", "retry_after", "slow", "truncate", "html", "oversize", "redirect", "reset",
              "gzip", "gzip_bomb"}
    assert set(FAULT_KINDS) == tested
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")  # type: ignore[arg-type]


def test_server_only_listens_on_loopback(server):
    host = server.base_url.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    assert socket.inet_aton(host)[0] == 127
