"""The fetcher against the loopback fault server: retries, caps, sniffing, SSRF guard."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from hitpredict.audio import sniff_audio
from hitpredict.config import FetchConfig
from hitpredict.fetch import AddressPolicy, FetchError, Fetcher, FetchItem
from hitpredict.preview_server import Fault, PreviewServer


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
    with Fetcher(config(), local_roots=[str(tmp_path)]) as fetcher:
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



# --------------------------------------------------------------------------- issue 12: untrusted audio_uri


@pytest.fixture()
def listener():
    """A loopback TCP listener that records every connection it receives (an FTP server would)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"220 hello\r\n")
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    srv.close()


def fetch_uri(uri, roots=(), timeout_s=10.0, **overrides):
    """Fetch one audio_uri in a thread, failing the test (not hanging it) if it does not return in time."""
    out = {}

    def run():
        with Fetcher(config(**overrides), local_roots=roots) as fetcher:
            out["result"] = fetcher.fetch(FetchItem("t", audio_uri=uri))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"fetching {uri} blocked for more than {timeout_s}s"
    return out["result"]


def test_audio_uri_scheme_not_allowed_never_connects(listener):
    port, accepted = listener
    result = fetch_uri(f"ftp://127.0.0.1:{port}/x.mp3")
    assert (result.error_kind, result.transient) == ("blocked_address", False)
    assert "fetch.allow_schemes" in result.error_detail
    # listed, the scheme's host still passes the address policy first: loopback is not allow-listed
    result = fetch_uri(f"ftp://127.0.0.1:{port}/x.mp3", allow_schemes=["ftp"], allow_hosts=[])
    assert result.error_kind == "blocked_address" and "127.0.0.1" in result.error_detail
    for uri in (f"webhdfs://127.0.0.1:{port}/x.mp3", f"simplecache::ftp://127.0.0.1:{port}/x.mp3",
                f"file://127.0.0.1:{port}/x.mp3"):
        assert fetch_uri(uri, allow_schemes=["ftp"]).error_kind == "blocked_address"
    time.sleep(0.3)
    assert accepted == []  # no connection was ever made


def test_http_audio_uri_goes_through_the_address_policy(server, mp3):
    assert fetch_uri(server.url("0.mp3"), allow_hosts=[]).error_kind == "blocked_address"
    assert server.hits["0.mp3"] == 0
    result = fetch_uri(server.url("0.mp3"))
    assert result.ok and result.audio == mp3


def test_a_fifo_named_mp3_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "x.mp3")
    result = fetch_uri(str(tmp_path / "x.mp3"), roots=[str(tmp_path)], timeout_s=5)
    assert (result.error_kind, result.transient) == ("not_a_file", False)
    assert "FIFO" in result.error_detail


def test_proc_files_are_refused_and_never_quoted(tmp_path):
    with open("/proc/self/environ", "rb") as handle:
        head = handle.read(12)
    assert head
    (tmp_path / "env.mp3").symlink_to("/proc/self/environ")
    for uri, roots in (("/proc/self/environ", [str(tmp_path)]), ("/proc/self/environ", ["/"]),
                       (str(tmp_path / "env.mp3"), [str(tmp_path)]), ("file:///proc/self/environ", ["/"])):
        result = fetch_uri(uri, roots=roots)
        assert (result.status, result.error_kind) == ("failed", "blocked_path"), uri
        for text in (head, head.decode("latin-1"), repr(head)[2:-1]):
            assert str(text) not in (result.error_detail or "")


def test_dev_zero_is_refused_at_once():
    started = time.monotonic()
    result = fetch_uri("/dev/zero", roots=["/"])
    assert result.error_kind == "blocked_path" and time.monotonic() - started < 2


def test_local_paths_outside_the_roots_are_refused(tmp_path, mp3):
    (tmp_path / "root").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "root" / "in.mp3").write_bytes(mp3)
    (tmp_path / "other" / "out.mp3").write_bytes(mp3)
    (tmp_path / "root" / "link.mp3").symlink_to(tmp_path / "other" / "out.mp3")
    roots = [str(tmp_path / "root")]
    assert fetch_uri(str(tmp_path / "root" / "in.mp3"), roots=roots).ok
    for uri in (str(tmp_path / "other" / "out.mp3"), str(tmp_path / "root" / "link.mp3"),
                str(tmp_path / "root" / ".." / "other" / "out.mp3"), "/etc/hostname", "in.mp3"):
        result = fetch_uri(uri, roots=roots)
        assert (result.error_kind, result.transient) == ("blocked_path", False), uri
    assert fetch_uri(str(tmp_path / "root" / "in.mp3")).error_kind == "blocked_path"  # no roots: no local reads
    (tmp_path / "root" / "dir.mp3").mkdir()
    assert fetch_uri(str(tmp_path / "root" / "dir.mp3"), roots=roots).error_kind == "not_a_file"


def test_error_detail_never_quotes_file_content(tmp_path, server):
    (tmp_path / "secret.mp3").write_bytes(b"API_TOKEN=hunter2-do-not-leak\n" * 4)
    result = fetch_uri(str(tmp_path / "secret.mp3"), roots=[str(tmp_path)])
    assert result.error_kind == "not_audio" and "hunter2" not in result.error_detail
    assert "API_TOKEN" not in result.error_detail
    server.set_fault("0.mp3", Fault("html"))
    result = fetch(server, "0.mp3")
    assert result.error_kind == "not_audio" and "<" not in result.error_detail and "html" not in result.error_detail.replace("text/html", "")


def test_local_reads_have_the_whole_body_deadline(tmp_path, mp3, monkeypatch):
    import hitpredict.fetch as fetch_module

    (tmp_path / "a.mp3").write_bytes(mp3)

    def hung_read(*args, **kwargs):  # a read stuck in the kernel (a hung network mount)
        time.sleep(30)

    monkeypatch.setattr(fetch_module, "_read_capped", hung_read)
    started = time.monotonic()
    result = fetch_uri(str(tmp_path / "a.mp3"), roots=[str(tmp_path)], total_timeout_s=0.5)
    assert (result.error_kind, result.transient) == ("timeout", True)
    assert time.monotonic() - started < 3


def test_local_reads_have_the_size_cap(tmp_path, mp3):
    (tmp_path / "big.mp3").write_bytes(mp3 + bytes(4096))
    result = fetch_uri(str(tmp_path / "big.mp3"), roots=[str(tmp_path)], max_local_bytes=1024)
    assert result.error_kind == "too_large"


def test_local_reads_have_the_http_size_cap_by_default(tmp_path, mp3):
    """Issue 12: local files get the same cap as HTTP bodies unless fetch.max_local_bytes raises it
    (the old default let a local file be 512 MB, 50x what decoding is bounded for)."""
    (tmp_path / "big.mp3").write_bytes(mp3 + bytes(4096))
    capped = fetch_uri(str(tmp_path / "big.mp3"), roots=[str(tmp_path)], max_body_bytes=len(mp3))
    raised = fetch_uri(str(tmp_path / "big.mp3"), roots=[str(tmp_path)], max_body_bytes=len(mp3),
                       max_local_bytes=len(mp3) + 8192)
    assert (capped.error_kind, raised.error_kind) == ("too_large", None)


@pytest.mark.parametrize("error", [EOFError("ran out"), ImportError("No module named 'aiohttp'"), KeyError("x"),
                                   AssertionError("Proxy URL had unsupported scheme")])
def test_any_exception_inside_fetch_becomes_an_internal_error_row(server, mp3, monkeypatch, error):
    with Fetcher(config()) as fetcher:
        real_get = fetcher._get

        def flaky_get(url):
            if url.endswith("/1.mp3"):
                raise error
            return real_get(url)

        monkeypatch.setattr(fetcher, "_get", flaky_get)
        items = [FetchItem(f"t{i}", preview_url=server.url(f"{i}.mp3")) for i in range(3)]
        results = {r.track_id: r for r in fetcher.fetch_all(items)}
    assert results["t0"].ok and results["t2"].ok
    bad = results["t1"]
    assert (bad.status, bad.error_kind) == ("failed", "internal_error")
    assert type(error).__name__ in bad.error_detail


def test_duplicate_track_id_in_one_fetch_task_costs_nothing(server, mp3):
    import pyarrow as pa

    from hitpredict.stages.fetch_previews import PENDING_COLUMNS, FetchTask

    rows = [{"track_id": t, "preview_url": server.url(f"{i}.mp3"), "audio_uri": None, "title": None,
             "primary_artist": None, "isrc": None, "runs": 0}
            for i, t in enumerate(["a", "b", "a", "c", "b"])]
    schema = pa.schema([(c, pa.string()) for c in PENDING_COLUMNS] + [("runs", pa.int64())])
    batches = [pa.RecordBatch.from_pylist(rows[:3], schema=schema), pa.RecordBatch.from_pylist(rows[3:], schema=schema)]
    out = pa.Table.from_batches(list(FetchTask(config())(iter(batches)))).to_pylist()
    assert sorted(r["track_id"] for r in out) == ["a", "b", "c"]  # one row per track, none lost
    assert all(r["status"] == "ok" and r["run"] == 1 for r in out)


# --------------------------------------------------------------------------- issue 12: setup errors stop the run


def broken(**changes):
    """A FetchConfig with values load_config refuses (as a config built in code, or an older check, could hold)."""
    return config().model_copy(update=changes)


@pytest.mark.parametrize("changes, key", [
    ({"proxy": "socks5h://127.0.0.1:1080"}, "fetch.proxy"),
    ({"proxy": "foo://127.0.0.1:1080"}, "fetch.proxy"),
    ({"user_agent": "hitpredict/0.1\r\nX-Injected: 1"}, "fetch.user_agent"),
])
def test_setup_errors_are_not_track_failures(server, changes, key):
    from hitpredict.fetch import FetchSetupError

    with Fetcher(broken(**changes)) as fetcher:
        with pytest.raises(FetchSetupError, match=key):
            fetcher.check_setup()
        result = fetcher.fetch(FetchItem("t", preview_url=server.url("0.mp3")))
    assert result.error_kind == "setup_error"
    assert server.hits["0.mp3"] == 0


def test_fetch_task_stops_on_a_setup_error_before_any_row(server):
    import pyarrow as pa

    from hitpredict.fetch import FetchSetupError
    from hitpredict.stages.fetch_previews import PENDING_COLUMNS, FetchTask

    rows = [{"track_id": f"t{i}", "preview_url": server.url(f"{i}.mp3"), "audio_uri": None, "title": None,
             "primary_artist": None, "isrc": None, "runs": 0} for i in range(3)]
    schema = pa.schema([(c, pa.string()) for c in PENDING_COLUMNS] + [("runs", pa.int64())])
    task = FetchTask(broken(proxy="socks5h://127.0.0.1:1080"))
    with pytest.raises(FetchSetupError, match="fetch.proxy"):
        list(task(iter([pa.RecordBatch.from_pylist(rows, schema=schema)])))


def test_stage_with_a_broken_setup_marks_nothing_then_fetches_once_fixed(spark, tmp_path, server):
    from hitpredict.config import load_config
    from hitpredict.fetch import FetchSetupError
    from hitpredict.lake import DeltaRsLake
    from hitpredict.stages import fetch_previews, ingest_catalogue

    csv = tmp_path / "catalogue.csv"
    csv.write_text("track_id,title,preview_url\n" + "".join(f"t{i},T{i},{server.url(f'{i}.mp3')}\n" for i in range(4)))
    good = load_config(None, [f"lake.root={tmp_path / 'lh'}", "fetch.allow_hosts=[127.0.0.1]", "fetch.max_retries=0",
                              "fetch.read_timeout_s=5"], environ={})
    lake = DeltaRsLake(good.lake, spark)
    ingest_catalogue.run(good, spark, lake, str(csv))
    bad = good.model_copy(update={"fetch": good.fetch.model_copy(update={"proxy": "socks5h://127.0.0.1:1080"})})
    with pytest.raises(FetchSetupError, match="fetch.proxy"):
        fetch_previews.run(bad, spark, lake)
    assert lake.read_arrow("previews").num_rows == 0 and lake.read_arrow("fetch_attempts").num_rows == 0
    report = fetch_previews.run(good, spark, lake)
    assert report.ok == 4
    assert sorted(lake.read_arrow("previews").column("status").to_pylist()) == ["ok"] * 4
