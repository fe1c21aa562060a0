"""Undo an HTTP ``Content-Encoding`` (gzip, deflate) without ever inflating more than a cap.

A small compressed body can inflate a thousand-fold (a "gzip bomb"); :class:`BoundedDecoder`
inflates only as much as the caller still accepts, so the fetcher refuses such a body as
``too_large`` after at most ``limit + 1`` decoded bytes, whatever the installed urllib3 does.
Pure Python (``zlib``), tested without a network.
"""
from __future__ import annotations

import zlib

#: The encodings the fetcher asks for (``Accept-Encoding``) and can undo.
ACCEPT_ENCODING = "gzip, deflate"


class DecodeFailed(ValueError):
    """The body is not valid in its declared encoding."""


class BoundedDecoder:
    """Decodes one body's ``Content-Encoding``, one wire chunk at a time.

    ``encoding`` is the header's value: ``""``/``identity`` pass bytes through; ``gzip``
    (or ``x-gzip``; several members allowed, trailing garbage ignored as browsers and
    urllib3 do) and ``deflate`` (zlib-wrapped, or raw as some servers send it) are
    inflated; any other coding passes through undecoded (the audio sniffer refuses it).
    """

    def __init__(self, encoding: str | None) -> None:
        coding = (encoding or "").strip().lower()
        self.kind: str | None = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}.get(coding)
        self._inflater = self._new()
        self._first_input = b""       # kept until a byte decodes: "deflate" may turn out raw
        self._decoded_any = False
        self._raw_tried = False
        self._member = 0              # gzip member being read (0: the first)
        self._done = False            # what follows the gzip members is ignored

    def _new(self, raw_deflate: bool = False):  # -> a zlib decompressobj, or None for no coding
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "deflate":
            return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)
        return None

    def decode(self, data: bytes, max_length: int) -> bytes:
        """The decoded bytes of the wire bytes ``data``: all of them, or ``max_length`` (>= 1)
        bytes when there are that many or more (the rest of the input is then not decoded:
        the caller stops, the body being too large)."""
        if self._inflater is None:
            return data
        if self._done:
            return b""
        if not self._decoded_any:
            self._first_input += data
        out = bytearray()
        buffer = data
        while len(out) < max_length:
            try:
                out += self._inflater.decompress(buffer, max_length - len(out))
            except zlib.error as exc:
                if self.kind == "deflate" and not self._decoded_any and not self._raw_tried:
                    # "deflate" without the zlib wrapper (RFC 1951): start again from the first byte.
                    self._raw_tried = True
                    self._inflater, buffer = self._new(raw_deflate=True), self._first_input
                    continue
                if self._member > 0:
                    self._done = True  # not another gzip member: trailing garbage, ignored
                    break
                raise DecodeFailed(f"invalid {self.kind} body: {exc}") from None
            if out and not self._decoded_any:
                self._decoded_any, self._first_input = True, b""
            buffer = self._inflater.unconsumed_tail
            if buffer:
                continue
            if self.kind == "gzip" and self._inflater.eof and self._inflater.unused_data:
                buffer = self._inflater.unused_data  # the next gzip member
                self._inflater, self._member = self._new(), self._member + 1
                continue
            break
        return bytes(out)

    def finish(self) -> None:
        """At the end of the body: raise :class:`DecodeFailed` if the first encoded stream stopped
        before its end marker (a cut body whose length nobody declared)."""
        if self._inflater is not None and not self._done and self._member == 0 \
                and (self._decoded_any or self._first_input) and not self._inflater.eof:
            raise DecodeFailed(f"{self.kind} body ends before its end marker")
