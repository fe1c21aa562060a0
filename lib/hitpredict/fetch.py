"""Download previews: bounded concurrency, retries, size caps, audio sniffing, SSRF guard.

Pure Python (no Spark): a :class:`Fetcher` is built once per Spark task and fetches
that task's tracks with a bounded thread pool over one keep-alive ``requests.Session``.

Outcomes carry an ``error_kind`` and whether it is *transient* (worth another run:
5xx, 429, timeouts, resets, truncated bodies) or *permanent* (4xx, not audio, too
large, blocked address): permanent failures are recorded once and never retried.

A *signed* preview URL (Deezer's ``hdnea=exp=...``) that has expired, or that answers
401/403/410, is handed to the ``refresh`` hook for a fresh URL once (a new look-up of
the same track) instead of failing for good.

An ``audio_uri`` is untrusted too: a local path is read only under the allowed roots
(``ingest.allow_roots``), only if it is a regular file (checked before opening), and
never from /proc, /sys or /dev; an http(s) URI goes through the address policy like a
preview URL; another scheme only when ``fetch.allow_schemes`` lists it, its host passing
the address policy. Every read has the whole-body deadline and a size cap, and no
``error_detail`` quotes what a file holds.

A mistake in the local setup (a proxy scheme whose support is not installed, a header
requests refuses, a missing fsspec backend) is not the track's failure: it is reported as
``setup_error``, and fetch tasks stop on it before they write any row.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from hitpredict.audio import sniff_audio
from hitpredict.audio_paths import outside_roots, real_roots
from hitpredict.body_decoding import ACCEPT_ENCODING, BoundedDecoder, DecodeFailed
from hitpredict.config import REMOTE_SCHEMES, FetchConfig
from hitpredict.errors import HitpredictError
from hitpredict.http_retry import HostSlots, backoff_seconds, first_line, retry_after_seconds
from hitpredict.net_guard import PinnedAdapter, blocked_reason, connect_failed, pin
from hitpredict.signed_urls import is_expired, signed_url_expiry

log = logging.getLogger(__name__)

REDIRECT_CODES = {301, 302, 303, 307, 308}
#: A host with many addresses: the connection tries at most this many of them.
MAX_ADDRESSES_TRIED = 3
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
    """One track's outcome: the audio bytes (``ok``) or the ``error_kind`` and whether it is transient."""

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
        """Whether the audio was fetched (``status == "ok"``)."""
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


class FetchSetupError(HitpredictError, RuntimeError):
    """The local setup (config, installed packages), not a track, makes fetching fail; one line
    naming the key to fix. A run that meets it stops before it marks any row."""


#: The error kind of a result whose failure came from the local setup (see FetchSetupError).
SETUP_ERROR = "setup_error"
#: Bytes per read of a local or fsspec file: the deadline is checked between reads.
READ_CHUNK = 1 << 20


#: The content type stored for each kind :func:`~hitpredict.audio.sniff_audio` recognises.
CONTENT_TYPES = {"mp3": "audio/mpeg", "aac": "audio/aac", "m4a": "audio/mp4", "ogg": "audio/ogg",
                 "flac": "audio/flac", "wav": "audio/wav"}


# --------------------------------------------------------------------------- address policy


class AddressPolicy:
    """Refuses URLs that are not http(s) or that resolve to non-public addresses.

    ``allow`` entries are host names (``"cdn.example.com"``), addresses (``"127.0.0.1"``)
    or networks (``"10.20.0.0/16"``) that are reachable even though they are not public.
    Addresses are judged by :func:`hitpredict.net_guard.blocked_reason` (IPv6 forms that
    embed IPv4 by their IPv4 address). :meth:`check` returns the addresses it judged, and
    the fetcher connects to one of those, never to a second DNS answer.
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

    def check(self, url: str) -> list[str] | None:
        """Raise ``FetchError('blocked_address')`` unless ``url`` may be fetched.

        Returns the addresses to connect to (in the resolver's order of preference), or
        ``None`` for a host allow-listed by name (the system resolves it when connecting).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError("blocked_address", f"scheme {parts.scheme or '(none)'!r} is not http or https")
        try:
            host = (parts.hostname or "").lower()
        except ValueError as exc:
            raise FetchError("bad_url", f"{exc} in {url!r}") from None
        if not host:
            raise FetchError("bad_url", f"no host in {url!r}")
        return self.check_host(host)

    def check_host(self, host: str) -> list[str] | None:
        """The addresses ``host`` (a name or an IP literal) may be reached at; see :meth:`check`."""
        host = host.lower().strip("[]")
        if host in self.allow_hosts:
            return None
        try:
            addresses = self._resolve(host)
        except (OSError, UnicodeError) as exc:
            raise FetchError("dns_error", f"cannot resolve {host}: {exc}", transient=True) from None
        if not addresses:
            raise FetchError("dns_error", f"{host} resolves to no address", transient=True)
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise FetchError("dns_error", f"{host} resolves to {text!r}, not an address") from None
            reason = blocked_reason(address, self.allow_networks)
            if reason is not None:
                raise FetchError("blocked_address", f"{host} resolves to non-public address {text}: {reason}")
        return list(addresses)


def _resolve(host: str) -> list[str]:
    """``host``'s addresses in ``getaddrinfo``'s order (the system's preference), without repeats."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --------------------------------------------------------------------------- the fetcher


class Fetcher:
    """Fetches previews concurrently; thread-safe; one per Spark task."""

    def __init__(self, config: FetchConfig, sleep: Callable[[float], None] = time.sleep,
                 refresh: Refresh | None = None, local_roots: Iterable[str] = ()) -> None:
        self.config = config
        self.refresh = refresh
        #: Folders a local audio_uri may be read from (real paths; none: no local reads).
        self.local_roots = real_roots(local_roots)
        self.policy = AddressPolicy(config.allow_hosts)
        self._sleep = sleep
        self._session = requests.Session()
        # Connects to the address the policy checked (no second DNS answer: rebinding),
        # keeping the URL's name for Host, SNI and certificate checks.
        adapter = PinnedAdapter(pool_connections=64, pool_maxsize=config.max_concurrency, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = config.user_agent
        # Fixed, whatever decoders are installed; _read_body caps the decoded size and
        # checks Content-Length against the bytes on the wire.
        self._session.headers["Accept-Encoding"] = ACCEPT_ENCODING
        # Proxies come from config, not from scanning the environment on every request
        # (requests' default costs ~0.4 ms of CPU per request). Through a proxy, the
        # proxy resolves the name and connects: the policy still checks our own answer,
        # but the connection is not pinned (the proxy must enforce its own egress rules).
        self._session.trust_env = False
        if config.proxy:
            self._session.proxies = {"http": config.proxy, "https": config.proxy}
        self._slot = HostSlots(config.per_host_concurrency)

    def close(self) -> None:
        """Close the keep-alive session and its pooled connections."""
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

    def check_setup(self) -> None:
        """Raise :class:`FetchSetupError` when the local setup would fail every fetch: a
        ``fetch.user_agent`` requests refuses, a ``fetch.proxy`` it cannot use, a scheme of
        ``fetch.allow_schemes`` whose fsspec backend is missing. Makes no network call."""
        try:
            requests.utils.check_header_validity(("User-Agent", self.config.user_agent))
        except requests.exceptions.InvalidHeader:
            raise FetchSetupError("fetch.user_agent is not a valid HTTP header value "
                                  "(CR, LF or other control characters)") from None
        if self.config.proxy:
            scheme = self.config.proxy.split("://", 1)[0] if "://" in self.config.proxy else "(none)"
            try:
                adapter = self._session.get_adapter("http://")
                assert isinstance(adapter, requests.adapters.HTTPAdapter)   # a PinnedAdapter, mounted above
                adapter.proxy_manager_for(self.config.proxy)
            except Exception as exc:  # noqa: BLE001 - requests/urllib3 raise several kinds for this
                raise FetchSetupError(f"fetch.proxy (scheme {scheme!r}) cannot be used: {first_line(exc)}") from None
        for scheme in self.config.allow_schemes:
            import fsspec

            try:
                fsspec.get_filesystem_class(scheme)
            except (ImportError, ValueError) as exc:
                raise FetchSetupError(f"fetch.allow_schemes lists {scheme!r}, which cannot be read here: "
                                      f"{first_line(exc)}") from None

    # ------------------------------------------------------------------ one
    def fetch(self, item: FetchItem) -> FetchResult:
        """Fetch one track, retrying transient failures with backoff; never raises.

        A failure of the local setup comes back as error kind ``setup_error``; any other
        unexpected exception as ``internal_error`` naming the exception's type (its message
        is logged, not stored: it may quote what was read).
        """
        url = item.audio_uri or item.preview_url
        try:
            return self._fetch(item)
        except FetchSetupError as exc:
            return FetchResult(item.track_id, url, "failed", error_kind=SETUP_ERROR, error_detail=str(exc),
                               attempts=1, transient=True)
        except Exception as exc:  # noqa: BLE001 - one track's surprise must not cost the task
            log.warning("%s: internal error while fetching", item.track_id, exc_info=True)
            return FetchResult(item.track_id, url, "failed", error_kind="internal_error",
                               error_detail=f"{type(exc).__name__} at {_where(exc)}", attempts=1)

    def _fetch(self, item: FetchItem) -> FetchResult:
        if item.audio_uri:
            return self._read_uri(item)
        if not item.preview_url:
            return FetchResult(item.track_id, None, "failed", error_kind="no_audio_reference",
                               error_detail="neither audio_uri nor preview_url is set")
        url = item.preview_url
        expiry = signed_url_expiry(url)
        refreshed = False
        attempt = 0
        if expiry is not None and self.refresh and is_expired(url, dt.datetime.now(dt.timezone.utc),
                                                              self.config.expiry_margin_s):
            url, failure = self._refreshed(item, f"signed URL expired at {expiry:%Y-%m-%d %H:%M} UTC", attempt)
            if failure is not None:
                return failure
            refreshed = True
        while True:
            attempt += 1
            try:
                data, content_type, final_url = self._get(url)
                kind = sniff_audio(data)
                if kind is None:  # the detail never quotes the body
                    raise FetchError("not_audio", f"{content_type or 'unknown type'}, {len(data)} bytes, "
                                                  "not a known audio format")
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
        """One attempt, following redirects by hand so every hop passes the address policy
        and connects to the addresses that passed it."""
        for _ in range(6):
            addresses = self.policy.check(url)
            host = urlsplit(url).netloc.lower()
            with self._slot(host):
                reply = self._request(url, addresses)
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

    def _request(self, url: str, addresses: list[str] | None = None) -> requests.Response:
        """GET ``url`` (streamed, no redirects) connecting to ``addresses`` in turn, the next one
        only when the connection to the previous could not be made; ``None``: the system resolves."""
        targets: list[str | None] = list(addresses[:MAX_ADDRESSES_TRIED]) if addresses else [None]
        timeout = (self.config.connect_timeout_s, self.config.read_timeout_s)
        try:
            prepared = self._session.prepare_request(requests.Request("GET", url))
            for address in targets[:-1]:
                try:
                    return self._session.send(pin(prepared, address), stream=True, allow_redirects=False,
                                              timeout=timeout)
                except requests.exceptions.RequestException as exc:
                    if not connect_failed(exc):
                        raise
                    log.debug("%s: cannot connect to %s (%s); trying the next address", url, address,
                              first_line(exc))
            return self._session.send(pin(prepared, targets[-1]), stream=True, allow_redirects=False,
                                      timeout=timeout)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidProxyURL, urllib3.exceptions.ProxySchemeUnknown) as exc:
            # A header or proxy of our own config, not the track's URL (the policy passed it).
            raise FetchSetupError(f"fetch.user_agent or fetch.proxy cannot be used: {first_line(exc)}") from None
        except requests.exceptions.InvalidURL as exc:
            if self.config.proxy and "proxy" in str(exc).lower():   # requests wraps urllib3's ProxySchemeUnknown
                raise FetchSetupError(f"fetch.proxy cannot be used: {first_line(exc)}") from None
            raise FetchError("bad_url", first_line(exc)) from None
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", f"{type(exc).__name__} for {url}", transient=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise FetchError("connection_error", first_line(exc), transient=True) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("bad_url", first_line(exc)) from None

    def _read_body(self, reply: requests.Response) -> bytes:
        """The decoded body, at most ``max_body_bytes`` of it: a gzip bomb is refused once that
        much is inflated, never inflated whole. ``Content-Length`` is checked against the bytes
        on the wire (the encoded size, when the server gzipped the body)."""
        limit = self.config.max_body_bytes
        declared = reply.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError("too_large", f"Content-Length {declared} > limit {limit}")
        decoder = BoundedDecoder(reply.headers.get("Content-Encoding"))
        deadline = time.monotonic() + self.config.total_timeout_s
        chunks: list[bytes] = []
        size = on_wire = 0
        try:
            while True:
                # read1 returns what one socket read gives, so the whole-body deadline is
                # checked after every read, however slowly the server trickles.
                raw = reply.raw.read1(1 << 20, decode_content=False)
                if not raw:
                    break
                on_wire += len(raw)
                chunk = decoder.decode(raw, limit - size + 1)
                size += len(chunk)
                if size > limit:
                    raise FetchError("too_large", f"body passed the limit of {limit} bytes"
                                     + (f" ({decoder.kind}-decoded, {on_wire} bytes on the wire)"
                                        if decoder.kind else ""))
                if time.monotonic() > deadline:
                    raise FetchError("timeout", f"body not complete after {self.config.total_timeout_s:g}s",
                                     transient=True)
                chunks.append(chunk)
            decoder.finish()
        except DecodeFailed as exc:
            raise FetchError("bad_encoding", f"{exc} (Content-Encoding {reply.headers.get('Content-Encoding')})",
                             transient=True) from None
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise FetchError("timeout", first_line(exc), transient=True) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
            kind = "truncated" if "IncompleteRead" in repr(exc) or "incomplete" in str(exc).lower() else "connection_error"
            raise FetchError(kind, first_line(exc), transient=True) from None
        if declared and declared.isdigit() and on_wire != int(declared):
            raise FetchError("truncated", f"got {on_wire} of {declared} bytes", transient=True)
        return b"".join(chunks)

    def _read_uri(self, item: FetchItem) -> FetchResult:
        """A local path or fsspec URI: see the module docstring for what may be read."""
        uri = item.audio_uri or ""
        try:
            scheme, target = self._audio_target(uri)
            if scheme in ("http", "https"):
                return self._fetch(FetchItem(item.track_id, preview_url=uri))
            if scheme == "":
                data = _with_deadline(lambda deadline: self._read_local(target, deadline),
                                      self.config.total_timeout_s)
            else:
                data = _with_deadline(lambda deadline: self._read_remote(uri, scheme, deadline),
                                      self.config.total_timeout_s)
            if not data:
                raise FetchError("empty", "zero bytes")
            kind = sniff_audio(data)
            if kind is None:  # the detail never quotes the file
                raise FetchError("not_audio", f"{len(data)} bytes, not a known audio format")
        except FetchError as err:
            return FetchResult(item.track_id, uri, "failed", error_kind=err.kind, error_detail=err.detail,
                               attempts=1, transient=err.transient)
        except FileNotFoundError:
            return FetchResult(item.track_id, uri, "failed", error_kind="missing_file",
                               error_detail=f"no such file: {uri}", attempts=1)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            return FetchResult(item.track_id, uri, "failed", error_kind="read_error",
                               error_detail=f"{why}: {uri}", attempts=1, transient=True)
        return _ok(item.track_id, uri, data, CONTENT_TYPES[kind], 1)

    def _audio_target(self, uri: str) -> tuple[str, str]:
        """``(scheme, what to read)``: ``""`` and a local path, or an allowed remote scheme and the URI."""
        if not uri.strip():
            raise FetchError("bad_url", "empty audio_uri")
        if "::" in uri:
            raise FetchError("blocked_address", "chained fsspec URLs ('::') are not allowed in audio_uri")
        try:
            parts = urlsplit(uri)
        except ValueError as exc:
            raise FetchError("bad_url", f"{exc} in audio_uri") from None
        scheme = parts.scheme.lower()
        if scheme == "":
            return "", uri
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise FetchError("blocked_address", f"file URI names a host ({parts.netloc!r})")
            return "", parts.path
        if scheme in ("http", "https") or scheme in self.config.allow_schemes:
            return scheme, uri
        allowed = ", ".join(self.config.allow_schemes) or "none"
        raise FetchError("blocked_address", f"scheme {scheme!r} is not allowed for audio_uri "
                                            f"(fetch.allow_schemes: {allowed})")

    def _read_local(self, path: str, deadline: float) -> bytes:
        """A regular file under the allowed roots, at most ``local_cap_bytes``, by ``deadline``."""
        if not os.path.isabs(path):
            raise FetchError("blocked_path", f"{path!r} is not an absolute path")
        refused = outside_roots(path, self.local_roots)
        if refused:
            raise FetchError("blocked_path", refused)
        real = os.path.realpath(path)
        before = os.stat(real)
        if not stat.S_ISREG(before.st_mode):
            raise FetchError("not_a_file", f"{path} is {_file_type(before.st_mode)}, not a regular file")
        cap = self.config.local_cap_bytes
        _check_size(before.st_size, cap)
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open; O_NOFOLLOW: nor a symlink.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
                raise FetchError("read_error", f"{path} changed while it was opened", transient=True)
            return _read_capped(lambda n: os.read(fd, n), cap, deadline, self.config.total_timeout_s)
        finally:
            os.close(fd)

    def _read_remote(self, uri: str, scheme: str, deadline: float) -> bytes:
        """An fsspec URI of an allowed scheme; a host scheme's host passes the address policy first."""
        import fsspec

        if REMOTE_SCHEMES.get(scheme, ("host", None))[0] == "host":
            host = urlsplit(uri).hostname
            if not host:
                raise FetchError("bad_url", f"no host in {uri!r}")
            self.policy.check_host(host)
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except ImportError as exc:
            raise FetchSetupError(f"fetch.allow_schemes lists {scheme!r} but its fsspec backend is missing: "
                                  f"{first_line(exc)}") from None
        cap = self.config.local_cap_bytes
        _check_size(fs.size(path), cap)
        with fs.open(path, "rb") as handle:
            return _read_capped(handle.read, cap, deadline, self.config.total_timeout_s)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_size(size: int | None, cap: int) -> None:
    """``too_large`` when a file's known size (bytes; ``None``: unknown) is over ``cap``, before reading it."""
    if size is not None and size > cap:
        raise FetchError("too_large", f"{size} bytes > limit {cap}")


def _read_capped(read: Callable[[int], bytes], cap: int, deadline: float, timeout_s: float) -> bytes:
    """Read until EOF in chunks; ``too_large`` past ``cap`` bytes, ``timeout`` past ``deadline`` (monotonic)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise FetchError("too_large", f"more than {cap} bytes")
        if time.monotonic() > deadline:
            raise FetchError("timeout", f"read not complete after {timeout_s:g}s", transient=True)
        chunks.append(chunk)


def _with_deadline(read: Callable[[float], bytes], timeout_s: float) -> bytes:
    """``read(deadline)`` in a daemon thread, waited for at most ``timeout_s`` seconds: a read that
    blocks in the kernel (a hung network mount) costs a timeout, never the fetch thread."""
    deadline = time.monotonic() + timeout_s
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["data"] = read(deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="fetch-read", daemon=True).start()
    if not done.wait(timeout_s + 1.0):
        raise FetchError("timeout", f"read not complete after {timeout_s:g}s", transient=True)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["data"]  # type: ignore[return-value]


def _where(exc: BaseException) -> str:
    """``file.py:line`` of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def _ok(track_id: str, url: str, data: bytes, content_type: str, attempts: int) -> FetchResult:
    return FetchResult(track_id, url, "ok", audio=data, content_type=content_type, size_bytes=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), attempts=attempts)
