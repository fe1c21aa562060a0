"""Download previews: bounded concurrency, retries, size caps, audio sniffing, SSRF guard.

Pure Python (no Spark): a :class:`Fetcher` is built once per Spark task and fetches
that task's tracks with a bounded thread pool over one keep-alive ``requests.Session``.

Outcomes carry an ``error_kind`` and whether it is *transient* (worth another run:
5xx, 429, timeouts, resets, truncated bodies) or *permanent* (4xx, not audio, too
large, blocked address): permanent failures are recorded once and never retried.

A *signed* preview URL (Deezer's ``hdnea=exp=...``) that has expired, or that answers
401/403/410, is handed to the ``refresh`` hook for a fresh URL once (a new look-up of
the same track) instead of failing for good.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from hitpredict.config import FetchConfig
from hitpredict.http_retry import HostSlots, backoff_seconds, first_line, retry_after_seconds
from hitpredict.signed_urls import signed_url_expiry

log = logging.getLogger(__name__)

#: Addresses no preview URL may reach unless allow-listed: cloud metadata services.
METADATA_ADDRESSES = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"}
REDIRECT_CODES = {301, 302, 303, 307, 308}
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: What a CDN answers for a signed URL past its expiry (or with a revoked signature), as error kinds.
EXPIRED_SIGNATURE_KINDS = {"http_401", "http_403", "http_410"}


@dataclass(frozen=True)
class FetchItem:
    """One track to fetch: a local/fsspec ``audio_uri`` wins over an http(s) ``preview_url``."""

    track_id: str
    preview_url: str | None = None
    audio_uri: str | None = None


@dataclass
class FetchResult:
    track_id: str
    url: str | None
    status: str                      # "ok" | "failed"
    audio: bytes | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    error_kind: str | None = None
    error_detail: str | None = None
    attempts: int = 0
    transient: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Refreshed:
    """A refresh hook's answer for a track whose signed URL died: a fresh URL, or why none."""

    url: str | None
    detail: str                      # e.g. "deezer: found by isrc", "deezer: not_found (...)"
    transient: bool = False          # no URL, but a later run may get one (the service failed)


#: Given the item whose signed preview URL expired, look the track up again.
Refresh = Callable[[FetchItem], Refreshed]


class FetchError(Exception):
    """A failed attempt: ``kind`` names it, ``transient`` says if retrying may help."""

    def __init__(self, kind: str, detail: str, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after


# --------------------------------------------------------------------------- audio sniffing


def sniff_audio(data: bytes) -> str | None:
    """The container/codec of ``data`` from its magic bytes: mp3, aac, m4a, ogg, flac, wav; else ``None``.

    An ID3 tag is skipped and an MPEG frame must follow it, so a file that is only a tag
    is not audio.
    """
    if len(data) < 12:
        return None
    if data[:3] == b"ID3":
        size = ((data[6] & 0x7F) << 21) | ((data[7] & 0x7F) << 14) | ((data[8] & 0x7F) << 7) | (data[9] & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        rest = data[10 + size + footer:]
        rest = rest.lstrip(b"\x00")  # padding after the tag
        return "mp3" if _mpeg_sync(rest) else None
    if data[4:8] == b"ftyp":
        return "m4a"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "aac"  # ADTS
    if _mpeg_sync(data):
        return "mp3"
    return None


def _mpeg_sync(data: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid version, layer and bitrate."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version, layer, bitrate = (data[1] >> 3) & 0x3, (data[1] >> 1) & 0x3, data[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15)


CONTENT_TYPES = {"mp3": "audio/mpeg", "aac": "audio/aac", "m4a": "audio/mp4", "ogg": "audio/ogg",
                 "flac": "audio/flac", "wav": "audio/wav"}


# --------------------------------------------------------------------------- address policy


class AddressPolicy:
    """Refuses URLs that are not http(s) or that resolve to non-public addresses.

    ``allow`` entries are host names (``"cdn.example.com"``), addresses (``"127.0.0.1"``)
    or networks (``"10.20.0.0/16"``) that are reachable even though they are not public.
    """

    def __init__(self, allow: Iterable[str] = (), resolver: Callable[[str], list[str]] | None = None) -> None:
        self.allow_hosts: set[str] = set()
        self.allow_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.allow_networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.allow_hosts.add(entry.lower())
        self._resolve = resolver or _resolve

    def check(self, url: str) -> None:
        """Raise ``FetchError('blocked_address')`` unless ``url`` may be fetched."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError("blocked_address", f"scheme {parts.scheme or '(none)'!r} is not http or https")
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError("bad_url", f"no host in {url!r}")
        if host in self.allow_hosts:
            return
        try:
            addresses = self._resolve(host)
        except OSError as exc:
            raise FetchError("dns_error", f"cannot resolve {host}: {exc}", transient=True) from None
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if any(address in net for net in self.allow_networks):
                continue
            if text in METADATA_ADDRESSES or not address.is_global or address.is_multicast:
                raise FetchError("blocked_address", f"{host} resolves to non-public address {text}")


def _resolve(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


# --------------------------------------------------------------------------- the fetcher


class Fetcher:
    """Fetches previews concurrently; thread-safe; one per Spark task."""

    def __init__(self, config: FetchConfig, sleep: Callable[[float], None] = time.sleep,
                 refresh: Refresh | None = None) -> None:
        self.config = config
        self.refresh = refresh
        self.policy = AddressPolicy(config.allow_hosts)
        self._sleep = sleep
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=64, pool_maxsize=config.max_concurrency, max_retries=0,
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = config.user_agent
        # Proxies come from config, not from scanning the environment on every request
        # (requests' default costs ~0.4 ms of CPU per request).
        self._session.trust_env = False
        if config.proxy:
            self._session.proxies = {"http": config.proxy, "https": config.proxy}
        self._slot = HostSlots(config.per_host_concurrency)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ many
    def fetch_all(self, items: Iterable[FetchItem]) -> Iterator[FetchResult]:
        """Fetch ``items`` with at most ``max_concurrency`` in flight; yields results as they finish.

        At most ``2 * max_concurrency`` items are held at once, so memory stays flat
        however many items there are.
        """
        window = 2 * self.config.max_concurrency
        pending: set[Future[FetchResult]] = set()
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency, thread_name_prefix="fetch") as pool:
            for item in items:
                pending.add(pool.submit(self.fetch, item))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)

    # ------------------------------------------------------------------ one
    def fetch(self, item: FetchItem) -> FetchResult:
        """Fetch one track, retrying transient failures with backoff; never raises."""
        if item.audio_uri:
            return self._read_uri(item)
        if not item.preview_url:
            return FetchResult(item.track_id, None, "failed", error_kind="no_audio_reference",
                               error_detail="neither audio_uri nor preview_url is set")
        url = item.preview_url
        expiry = signed_url_expiry(url)
        refreshed = False
        attempt = 0
        margin = dt.timedelta(seconds=self.config.expiry_margin_s)
        if expiry is not None and self.refresh and expiry <= dt.datetime.now(dt.timezone.utc) + margin:
            url, failure = self._refreshed(item, f"signed URL expired at {expiry:%Y-%m-%d %H:%M} UTC", attempt)
            if failure is not None:
                return failure
            refreshed = True
        while True:
            attempt += 1
            try:
                data, content_type, final_url = self._get(url)
                kind = sniff_audio(data)
                if kind is None:
                    raise FetchError("not_audio", f"{content_type or 'unknown type'}, {len(data)} bytes, "
                                                  f"starts {data[:16]!r}")
                return _ok(item.track_id, final_url, data, CONTENT_TYPES[kind], attempt)
            except FetchError as err:
                if expiry is not None and not refreshed and self.refresh and err.kind in EXPIRED_SIGNATURE_KINDS:
                    url, failure = self._refreshed(item, f"signed URL answered {err.detail}", attempt)
                    if failure is not None:
                        return failure
                    refreshed = True
                    continue
                if not err.transient or attempt > self.config.max_retries:
                    return FetchResult(item.track_id, url, "failed", error_kind=err.kind, error_detail=err.detail,
                                       attempts=attempt, transient=err.transient)
                self._sleep(backoff_seconds(attempt, err.retry_after, self.config.backoff_base_s,
                                            self.config.backoff_max_s))

    def _refreshed(self, item: FetchItem, why: str, attempts: int) -> tuple[str, FetchResult | None]:
        """A fresh URL for ``item`` from the refresh hook, or the failed result that says why there is none."""
        assert self.refresh is not None
        answer = self.refresh(item)
        if answer.url:
            log.debug("%s: %s; refreshed (%s)", item.track_id, why, answer.detail)
            return answer.url, None
        return "", FetchResult(item.track_id, item.preview_url, "failed", error_kind="preview_expired",
                               error_detail=f"{why}; look-up again: {answer.detail}", attempts=attempts,
                               transient=answer.transient)

    def _get(self, url: str) -> tuple[bytes, str | None, str]:
        """One attempt, following redirects by hand so every hop passes the address policy."""
        for _ in range(6):
            self.policy.check(url)
            host = urlsplit(url).netloc.lower()
            with self._slot(host):
                reply = self._request(url)
                try:
                    if reply.status_code in REDIRECT_CODES and reply.headers.get("Location"):
                        url = urljoin(url, reply.headers["Location"])
                        continue
                    if reply.status_code != 200:
                        raise FetchError(f"http_{reply.status_code}", f"HTTP {reply.status_code} from {host}",
                                         transient=reply.status_code in TRANSIENT_STATUS,
                                         retry_after=retry_after_seconds(reply.headers.get("Retry-After")))
                    return self._read_body(reply), reply.headers.get("Content-Type"), url
                finally:
                    reply.close()
        raise FetchError("too_many_redirects", f"more than 5 redirects from {url}")

    def _request(self, url: str) -> requests.Response:
        try:
            return self._session.get(
                url, stream=True, allow_redirects=False,
                timeout=(self.config.connect_timeout_s, self.config.read_timeout_s),
            )
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", f"{type(exc).__name__} for {url}", transient=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise FetchError("connection_error", first_line(exc), transient=True) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("bad_url", first_line(exc)) from None

    def _read_body(self, reply: requests.Response) -> bytes:
        limit = self.config.max_body_bytes
        declared = reply.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError("too_large", f"Content-Length {declared} > limit {limit}")
        deadline = time.monotonic() + self.config.total_timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                # read1 returns what one socket read gives, so the whole-body deadline is
                # checked after every read, however slowly the server trickles.
                chunk = reply.raw.read1(1 << 20, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise FetchError("too_large", f"body passed the limit of {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError("timeout", f"body not complete after {self.config.total_timeout_s:g}s",
                                     transient=True)
                chunks.append(chunk)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise FetchError("timeout", first_line(exc), transient=True) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
            kind = "truncated" if "IncompleteRead" in repr(exc) or "incomplete" in str(exc).lower() else "connection_error"
            raise FetchError(kind, first_line(exc), transient=True) from None
        data = b"".join(chunks)
        if declared and declared.isdigit() and len(data) != int(declared):
            raise FetchError("truncated", f"got {len(data)} of {declared} bytes", transient=True)
        return data

    def _read_uri(self, item: FetchItem) -> FetchResult:
        """A local path or fsspec URI, read directly (no address policy: the label's own storage)."""
        import fsspec

        uri = item.audio_uri or ""
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            size = fs.size(path)
            if size is not None and size > self.config.max_local_bytes:
                raise FetchError("too_large", f"{size} bytes > limit {self.config.max_local_bytes}")
            with fs.open(path, "rb") as handle:
                data = handle.read(self.config.max_local_bytes + 1)
            if len(data) > self.config.max_local_bytes:
                raise FetchError("too_large", f"more than {self.config.max_local_bytes} bytes")
            if not data:
                raise FetchError("empty", "zero bytes")
            kind = sniff_audio(data)
            if kind is None:
                raise FetchError("not_audio", f"{len(data)} bytes, starts {data[:16]!r}")
        except FetchError as err:
            return FetchResult(item.track_id, uri, "failed", error_kind=err.kind, error_detail=err.detail, attempts=1)
        except FileNotFoundError:
            return FetchResult(item.track_id, uri, "failed", error_kind="missing_file",
                               error_detail=f"no such file: {uri}", attempts=1)
        except (OSError, ValueError) as exc:
            return FetchResult(item.track_id, uri, "failed", error_kind="read_error", error_detail=first_line(exc),
                               attempts=1, transient=True)
        return _ok(item.track_id, uri, data, CONTENT_TYPES[kind], 1)


def _ok(track_id: str, url: str, data: bytes, content_type: str, attempts: int) -> FetchResult:
    return FetchResult(track_id, url, "ok", audio=data, content_type=content_type, size_bytes=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), attempts=attempts)
