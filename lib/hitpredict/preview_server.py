"""A loopback HTTP server that serves audio previews and injects faults on demand.

Real sockets on 127.0.0.1, HTTP/1.1 with keep-alive, one thread per connection.
Tests, benchmarks and the demo start it themselves; nothing leaves the machine. It sits
outside ``hitpredict.testing`` because the demo (product code) serves its sample previews with it.

    with PreviewServer(directory=sample.audio_dir, latency_s=0.1) as server:
        server.set_fault("a.mp3", Fault("status", status=503, times=2))  # transient 5xx
        url = server.url("a.mp3")

Faults (``Fault.kind``):

``status``      answer ``status`` (5xx, 404, ...) with a short text body
``retry_after`` 429 with a ``Retry-After: <retry_after>`` header
``slow``        headers at once, then the body trickles out over ``delay_s`` seconds
``truncate``    a full ``Content-Length`` but only half the body, then the connection closes
``html``        200 with an HTML page instead of audio
``oversize``    200 ``audio/mpeg`` with ``size`` bytes (declared, or chunked if ``declare_length`` is false)
``redirect``    ``status`` 302 (or 301/307/308) to ``location`` (a URL or a path on this server)
``reset``       close the connection without answering
``gzip``        200 with the file gzip-encoded (``Content-Encoding: gzip``), whatever the request
                accepts; ``Content-Length`` is the encoded size (chunked if ``declare_length`` is false)
``gzip_bomb``   200 gzip-encoded ``audio/mpeg`` that inflates to ``size`` bytes (about 1/1000 of that on the wire)

A signed URL (``?hdnea=exp=<unix>~...``, as Deezer's CDN signs) past its expiry is
answered 403, as the real CDN does.

A fault with ``times=N`` hits only the first N requests for its path, after which
the path is served normally: that is how transient faults are made.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import io
import logging
import mimetypes
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import unquote, urlsplit

from hitpredict.signed_urls import is_expired
from hitpredict.loopback import LoopbackServer

log = logging.getLogger(__name__)

FaultKind = Literal["status", "retry_after", "slow", "truncate", "html", "oversize", "redirect", "reset",
                    "gzip", "gzip_bomb"]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]

AUDIO_TYPES = {".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".aac": "audio/aac", ".ogg": "audio/ogg",
               ".flac": "audio/flac", ".wav": "audio/wav"}
HTML_PAGE = b"<!doctype html><html><head><title>Not here</title></head><body><h1>Track unavailable</h1></body></html>"


@dataclass(frozen=True)
class Fault:
    """One injected fault; see the module docstring for the kinds."""

    kind: FaultKind
    status: int = 503
    times: int | None = None
    retry_after: float = 1.0
    delay_s: float = 5.0
    size: int = 12 * 1024 * 1024
    declare_length: bool = True
    location: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.kind == "redirect" and not self.location:
            raise ValueError("a redirect fault needs a location")


class PreviewServer(LoopbackServer):
    """Serves files (from a mapping and/or a folder) on 127.0.0.1 with injectable faults.

    Parameters
    ----------
    files : name -> bytes served at ``/<name>``.
    directory : a folder whose files are served at ``/<file name>`` (read per request).
    latency_s : delay added before every response (simulates a far-away CDN).
    host : address to bind; loopback only by default.
    port : port to bind; 0 picks a free one.
    """

    def __init__(
        self, files: Mapping[str, bytes] | None = None, directory: str | Path | None = None,
        latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0,
    ) -> None:
        self._files: dict[str, bytes] = dict(files or {})
        self._directory = Path(directory).resolve() if directory is not None else None
        self.latency_s = latency_s
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        #: The ``Host`` header of every request, in order (what name the client asked for).
        self.host_headers: list[str] = []
        super().__init__(_handler_for(self), host, port)

    def url(self, name: str) -> str:
        """The URL at which ``name`` is served: ``http://127.0.0.1:PORT/<name>``."""
        return f"{self.base_url}/{name.lstrip('/')}"

    def content(self, name: str) -> bytes | None:
        """The bytes served for ``name`` (what a correct download must equal)."""
        name = name.lstrip("/")
        with self._lock:
            if name in self._files:
                return self._files[name]
        if self._directory is not None:
            path = (self._directory / name).resolve()
            if path.parent == self._directory and path.is_file():
                return path.read_bytes()
        return None

    def set_fault(self, name: str, fault: Fault) -> None:
        """Answer requests for ``name`` with ``fault`` (replacing any fault set before for it)."""
        with self._lock:
            self._faults[name.lstrip("/")] = fault

    def clear_faults(self) -> None:
        """Serve every path normally again."""
        with self._lock:
            self._faults.clear()

    def _take(self, name: str) -> tuple[int, Fault | None]:
        """Count a hit on ``name``; return the hit number and the fault that applies to it."""
        with self._lock:
            self.hits[name] += 1
            hit = self.hits[name]
            fault = self._faults.get(name)
        if fault is not None and fault.times is not None and hit > fault.times:
            fault = None
        return hit, fault


def _handler_for(server: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hitpredict-preview/1.0"

        def log_message(self, fmt: str, *args: object) -> None:  # quiet by default
            log.debug("%s %s", self.address_string(), fmt % args)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
            self._respond(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._respond(body=True)

        # -------------------------------------------------------------- helpers
        def _send(self, status: int, content_type: str, payload: bytes, body: bool, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _respond(self, body: bool) -> None:
            name = unquote(urlsplit(self.path).path).lstrip("/")
            server.host_headers.append(self.headers.get("Host", ""))
            _, fault = server._take(name)
            if server.latency_s:
                time.sleep(server.latency_s)
            try:
                if fault is not None:
                    self._fault(name, fault, body)
                    return
                if is_expired(f"http://host{self.path}", dt.datetime.now(dt.timezone.utc)):
                    self._send(403, "text/plain", b"expired token", body)
                    return
                data = server.content(name)
                if data is None:
                    self._send(404, "text/plain", b"not found", body)
                    return
                kind = AUDIO_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0]
                self._send(200, kind or "application/octet-stream", data, body)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                self.close_connection = True  # the client gave up; nothing to do

        def _fault(self, name: str, fault: Fault, body: bool) -> None:
            data = server.content(name) or b""
            if fault.kind == "status":
                self._send(fault.status, "text/plain", f"injected {fault.status}".encode(), body)
            elif fault.kind == "retry_after":
                self._send(429, "text/plain", b"slow down", body, Retry_After=f"{fault.retry_after:g}")
            elif fault.kind == "html":
                self._send(200, "text/html; charset=utf-8", HTML_PAGE, body)
            elif fault.kind == "redirect":
                location = fault.location if "://" in fault.location else server.url(fault.location)
                self._send(fault.status if 300 <= fault.status < 400 else 302, "text/plain", b"moved", body,
                           Location=location)
            elif fault.kind == "reset":
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
            elif fault.kind == "slow":
                self._stream(data, body, pause=fault.delay_s / 10, pieces=10)
            elif fault.kind == "truncate":
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                self.close_connection = True
            elif fault.kind == "oversize":
                self._oversize(data or b"\xff\xfb\x90\x00" + bytes(413), fault, body)
            elif fault.kind == "gzip":
                self._gzipped(gzip.compress(data), fault.declare_length, body)
            elif fault.kind == "gzip_bomb":
                self._gzipped(gzip_bomb(fault.size), fault.declare_length, body)

        def _gzipped(self, encoded: bytes, declare_length: bool, body: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Encoding", "gzip")
            if declare_length:
                self.send_header("Content-Length", str(len(encoded)))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not body:
                return
            if declare_length:
                self.wfile.write(encoded)
            else:
                for start in range(0, len(encoded), 4096):
                    piece = encoded[start:start + 4096]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        def _stream(self, data: bytes, body: bool, pause: float, pieces: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not body:
                return
            step = max(1, -(-len(data) // pieces))
            for start in range(0, len(data), step):
                time.sleep(pause)
                self.wfile.write(data[start:start + step])
                self.wfile.flush()

        def _oversize(self, unit: bytes, fault: Fault, body: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            if fault.declare_length:
                self.send_header("Content-Length", str(fault.size))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not body:
                return
            block = (unit * (65536 // len(unit) + 1))[:65536]
            sent = 0
            while sent < fault.size:
                piece = block[: min(len(block), fault.size - sent)]
                if fault.declare_length:
                    self.wfile.write(piece)
                else:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
            if not fault.declare_length:
                self.wfile.write(b"0\r\n\r\n")

    return Handler


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """gzip of an MPEG frame header followed by zeros, ``size`` bytes once inflated."""
    head = b"\xff\xfb\x90\x00"
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as packer:
        packer.write(head)
        block, left = bytes(1 << 20), size - len(head)
        while left > 0:
            packer.write(block[:min(left, len(block))])
            left -= len(block)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Serve a folder on 127.0.0.1 until stdin closes or the process is stopped.

    ``python -m hitpredict.preview_server DIR --latency 0.1`` prints
    ``serving http://127.0.0.1:PORT`` once it listens; benchmarks run it as its own
    process so that, like a real CDN, it does not share the Spark driver's interpreter.
    """
    parser = argparse.ArgumentParser(description="loopback preview server")
    parser.add_argument("directory")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every response")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with PreviewServer(directory=args.directory, latency_s=args.latency, port=args.port) as server:
        sys.stdout.write(f"serving {server.base_url}\n")
        sys.stdout.flush()
        sys.stdin.read()  # returns when the parent closes our stdin or exits


if __name__ == "__main__":
    main()
