"""A threaded HTTP server on a free loopback port: the base of the demo's preview server and of every
fake service the tests start (``hitpredict.testing``)."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-request (timeouts, size caps) are normal here, not errors."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops connections when hundreds of client
    # threads connect at once (each drop costs a 1 s SYN retransmit).
    request_queue_size = 1024

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a client that went away at debug level instead of printing a traceback."""
        log.debug("client %s went away", client_address, exc_info=True)


class LoopbackServer:
    """Serves ``handler`` on ``host:port`` (default 127.0.0.1, a free port) from a daemon thread;
    ``start()``/``stop()`` or ``with``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = QuietServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the bound socket (the port is known once constructed)."""
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self):
        """Serve from a daemon thread; returns ``self``."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        log.info("%s on %s", type(self).__name__, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and wait (up to 5 s) for the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def send_json(handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None
              ) -> None:
    """Answer ``handler``'s request with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def send_bytes(handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str | None = None,
               headers: dict[str, str] | None = None) -> None:
    """Answer ``handler``'s request with ``data`` exactly as given (a recorded body, or an empty one)."""
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)
