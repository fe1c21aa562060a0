"""Where a preview download may connect: address classification and pinned connections.

Two halves of one SSRF guard, kept apart from the fetcher so they can be tested as
pure functions:

- :func:`blocked_reason` judges one resolved address. IPv6 forms that carry an IPv4
  address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``,
  IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4
  ``2002::/16``, Teredo ``2001::/32``) are judged by the IPv4 address they reach, since
  that is where a translator or relay delivers the packets.
- :class:`PinnedAdapter` makes ``requests`` connect to the address that was checked
  instead of resolving the name again (a second DNS answer may differ: DNS rebinding),
  while the ``Host`` header, TLS SNI and certificate verification keep the URL's name.
"""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Iterable, Union
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy

IPAddress = Union[IPv4Address, IPv6Address]
IPNetwork = Union[IPv4Network, IPv6Network]

#: Cloud metadata services (also non-public by their ranges, listed here so the reason says so).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))

_MAPPED = IPv6Network("::ffff:0:0/96")          # IPv4-mapped, RFC 4291
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")    # IPv4-translated (SIIT), RFC 2765
_COMPATIBLE = IPv6Network("::/96")              # IPv4-compatible (deprecated), RFC 4291
_NAT64_WKP = IPv6Network("64:ff9b::/96")        # NAT64 well-known prefix, RFC 6052
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")    # NAT64 local-use prefixes, RFC 8215
_SIX_TO_FOUR = IPv6Network("2002::/16")         # 6to4, RFC 3056
_TEREDO = IPv6Network("2001::/32")              # Teredo, RFC 4380

#: RFC 6052 layouts of a prefix shorter than /96: the IPv4 address's octet positions
#: in the IPv6 address (octet 8, the "u" octet, is skipped), then the octets that must be zero.
_RFC6052_SHORT_LAYOUTS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((6, 7, 9, 10), (8, 11, 12, 13, 14, 15)),   # /48
    ((7, 9, 10, 11), (8, 12, 13, 14, 15)),      # /56
    ((9, 10, 11, 12), (8, 13, 14, 15)),         # /64
)


def embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (empty when it is not such a form).

    A NAT64 local-use address (``64:ff9b:1::/48``) may use any RFC 6052 prefix length:
    its last 32 bits (the /96 layout) always count, and each shorter layout whose zero
    octets are zero counts too, so an address is public only if every reading is.
    Teredo yields the server and the (de-obfuscated) client address.
    """
    last32 = IPv4Address(address.packed[12:])
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64_WKP:
        return (last32,)
    if address in _COMPATIBLE:
        return (last32,)
    if address in _NAT64_LOCAL:
        packed = address.packed
        found = [last32]
        for v4_octets, zero_octets in _RFC6052_SHORT_LAYOUTS:
            if all(packed[i] == 0 for i in zero_octets):
                found.append(IPv4Address(bytes(packed[i] for i in v4_octets)))
        return tuple(found)
    if address in _SIX_TO_FOUR:
        return (IPv4Address(address.packed[2:6]),)
    if address in _TEREDO:
        server, client = address.teredo  # type: ignore[misc]
        return (server, client)
    return ()


def _public_v4(address: IPv4Address) -> bool:
    return address.is_global and not address.is_multicast and address not in METADATA_ADDRESSES


def blocked_reason(address: IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why a connection to ``address`` is refused (``None``: it may be reached).

    Public unicast addresses may be reached; loopback, private, link-local, shared,
    reserved, multicast and cloud-metadata addresses only when inside an ``allow``
    network. An IPv6 form that embeds IPv4 is judged by the embedded address(es) alone.
    """
    allow = tuple(allow)
    if any(address in net for net in allow):
        return None
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if isinstance(address, IPv6Address):
        if address.scope_id:
            address = IPv6Address(address.compressed.split("%", 1)[0])
        inner = embedded_ipv4(address)
        if inner:
            for v4 in inner:
                if not any(v4 in net for net in allow) and not _public_v4(v4):
                    return f"{address} embeds the non-public IPv4 address {v4}"
            return None
        if not address.is_global or address.is_multicast:
            return f"{address} is not a public address"
        return None
    if not _public_v4(address):
        return f"{address} is not a public address"
    return None


# --------------------------------------------------------------------------- pinned connections

#: Attribute of a ``PreparedRequest`` naming the address to connect to (set by the fetcher).
CONNECT_TO = "hitpredict_connect_to"


def pin(request: requests.PreparedRequest, address: str | None) -> requests.PreparedRequest:
    """Mark ``request`` to connect to ``address`` (an IP literal) instead of resolving its host."""
    setattr(request, CONNECT_TO, address)
    return request


class PinnedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that connects to a request's pinned address, if it has one.

    The connection pool is keyed by the address (so keep-alive still works per
    address) and, for https, by ``server_hostname``: the TLS handshake sends the URL's
    name as SNI and the certificate is verified against that name, not the address.
    The ``Host`` header is the URL's. Through a proxy nothing is pinned: the proxy
    resolves the name itself (the fetcher documents that).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        if not hasattr(HTTPAdapter, "get_connection_with_tls_context"):  # added in requests 2.32.2
            raise RuntimeError(f"connecting to checked addresses needs requests >= 2.32.2, "
                               f"found {requests.__version__}")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):  # type: ignore[override]
        """requests' connection pool for ``request``, connected to the address pinned on it (TLS still
        checks the URL's host name); a request without a pinned address, or through a proxy, as usual."""
        address = getattr(request, CONNECT_TO, None)
        if address is None or select_proxy(request.url, proxies):
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        except ValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from None
        name = host_params["host"]
        host_params["host"] = address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = name
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def add_headers(self, request, **kwargs):  # type: ignore[override]
        """Pinned requests name their host themselves (http.client would write the address)."""
        super().add_headers(request, **kwargs)
        if getattr(request, CONNECT_TO, None) is not None and "Host" not in request.headers:
            request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]


def connect_failed(exc: requests.exceptions.RequestException) -> bool:
    """Whether ``exc`` failed before a connection was made (another address may still work)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(exc, requests.exceptions.ProxyError):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
