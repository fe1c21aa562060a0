"""When a signed preview URL stops working.

Deezer's preview URLs are signed by its CDN (Akamai) and carry their own end of life:
``.../preview.mp3?hdnea=exp=1732300000~acl=/api/1/*~hmac=...``. They are good for hours,
not weeks: a URL looked up at ingest and fetched a day later answers HTTP 403. CloudFront
signs with ``Expires=<unix time>`` in the same way. Pure functions, no I/O.
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

#: Query parameters that hold an Akamai token (``exp=<unix>~acl=...~hmac=...``).
AKAMAI_TOKEN_PARAMS = ("hdnea", "hdnts", "__token__")


def _from_unix(text: str) -> dt.datetime | None:
    if not text.isdigit():
        return None
    try:
        return dt.datetime.fromtimestamp(int(text), dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def signed_url_expiry(url: str | None) -> dt.datetime | None:
    """When ``url`` stops working (UTC), or ``None`` for a URL that carries no expiry."""
    if not url:
        return None
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return None
    for name in AKAMAI_TOKEN_PARAMS:
        for token in query.get(name, []):
            for field in token.split("~"):
                key, _, value = field.partition("=")
                if key == "exp" and (when := _from_unix(value)) is not None:
                    return when
    for value in query.get("Expires", []):
        if (when := _from_unix(value)) is not None:
            return when
    return None


def is_expired(url: str | None, now: dt.datetime, margin_s: float = 0.0) -> bool:
    """Whether ``url`` is signed and stops working before ``now + margin_s``."""
    expiry = signed_url_expiry(url)
    return expiry is not None and expiry <= now + dt.timedelta(seconds=margin_s)
