"""The fetcher's network guard: DNS rebinding, IPv6 forms that embed IPv4, encoded bodies.

Every server here is a loopback server the test starts itself. A "public" address is
played by 127.0.0.2 (allow-listed), the "internal" victim by 127.0.0.1 on the same port,
so a connection that resolves the name again (instead of using the checked address)
lands on the victim, which counts its requests.
"""
from __future__ import annotations

import datetime as dt
import gzip
import io
import ipaddress
import math
import ssl
import struct
import tracemalloc
import wave
import zlib
from collections import Counter

import pytest

from hitpredict.body_decoding import BoundedDecoder, DecodeFailed
from hitpredict.config import FetchConfig
from hitpredict.fetch import AddressPolicy, FetchError, Fetcher, FetchItem
from hitpredict.preview_server import Fault, PreviewServer, gzip_bomb


def config(**overrides):
    base = dict(allow_hosts=["127.0.0.1"], max_retries=0, backoff_base_s=0.01, backoff_max_s=0.1,
                connect_timeout_s=2, read_timeout_s=2, total_timeout_s=5)
    return FetchConfig(**{**base, **overrides})


class Resolver:
    """A DNS stand-in: each name answers its next list of addresses (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: Counter[str] = Counter()

    def __call__(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        seq = self.answers[host]
        answer = seq[min(self.calls[host], len(seq) - 1)]
        self.calls[host] += 1
        return answer


def fetcher_with(resolver: Resolver, allow: list[str], **overrides) -> Fetcher:
    fetcher = Fetcher(config(allow_hosts=allow, **overrides))
    fetcher.policy = AddressPolicy(allow, resolver=resolver)
    return fetcher


@pytest.fixture()
def victim_and_public(mp3):
    """An "internal" server on 127.0.0.1 and a "public" one on 127.0.0.2, same port."""
    with PreviewServer(files={"a.mp3": mp3}) as victim:
        port = int(victim.base_url.rsplit(":", 1)[1])
        with PreviewServer(files={"a.mp3": mp3}, host="127.0.0.2", port=port) as public:
            yield victim, public, port


# --------------------------------------------------------------------------- DNS rebinding


def test_dns_rebinding_connects_to_the_checked_address(victim_and_public, mp3):
    victim, public, port = victim_and_public
    # "localhost" answers a (allow-listed) "public" address first, loopback after: a client
    # that resolves again when it connects (urllib3 does, via the system) reaches the victim.
    resolver = Resolver({"localhost": [["127.0.0.2"], ["127.0.0.1"]]})
    with fetcher_with(resolver, ["127.0.0.2/32"]) as fetcher:
        result = fetcher.fetch(FetchItem("t", preview_url=f"http://localhost:{port}/a.mp3"))
    assert victim.hits["a.mp3"] == 0, "the fetch reached the address the policy never checked"
    assert result.ok and result.audio == mp3
    assert public.hits["a.mp3"] == 1
    assert public.host_headers == [f"localhost:{port}"]  # the name, not the pinned address


def test_a_redirect_is_checked_and_pinned_too(victim_and_public, mp3):
    victim, public, port = victim_and_public
    public.set_fault("away.mp3", Fault("redirect", location=f"http://localhost:{port}/a.mp3"))
    resolver = Resolver({"localhost": [["127.0.0.2"], ["127.0.0.1"]]})
    with fetcher_with(resolver, ["127.0.0.2/32"]) as fetcher:
        result = fetcher.fetch(FetchItem("t", preview_url=f"http://127.0.0.2:{port}/away.mp3"))
    assert victim.hits["a.mp3"] == 0
    assert result.ok and result.url == f"http://localhost:{port}/a.mp3"
    assert public.hits["a.mp3"] == 1 and resolver.calls["localhost"] == 1


def test_a_name_whose_check_answer_is_loopback_is_refused_before_connecting(victim_and_public):
    victim, public, port = victim_and_public
    resolver = Resolver({"localhost": [["127.0.0.1"]]})
    with fetcher_with(resolver, ["127.0.0.2/32"]) as fetcher:
        result = fetcher.fetch(FetchItem("t", preview_url=f"http://localhost:{port}/a.mp3"))
    assert (result.error_kind, result.transient) == ("blocked_address", False)
    assert victim.hits["a.mp3"] == public.hits["a.mp3"] == 0


def test_the_next_checked_address_is_tried_when_one_refuses_connections(victim_and_public, mp3):
    victim, public, port = victim_and_public
    resolver = Resolver({"cdn.test": [["127.0.0.3", "127.0.0.2"]]})  # nothing listens on .3
    with fetcher_with(resolver, ["127.0.0.2/32", "127.0.0.3/32"]) as fetcher:
        result = fetcher.fetch(FetchItem("t", preview_url=f"http://cdn.test:{port}/a.mp3"))
    assert result.ok and result.audio == mp3 and result.attempts == 1
    assert public.hits["a.mp3"] == 1 and victim.hits["a.mp3"] == 0


def test_through_a_proxy_the_proxy_connects(mp3):
    # A plain HTTP proxy gets "GET http://cdn.test:1/a.mp3"; the preview server serves the path.
    with PreviewServer(files={"a.mp3": mp3}) as proxy:
        resolver = Resolver({"cdn.test": [["127.0.0.2"]]})
        with fetcher_with(resolver, ["127.0.0.2/32"], proxy=proxy.base_url) as fetcher:
            result = fetcher.fetch(FetchItem("t", preview_url="http://cdn.test:1/a.mp3"))
        assert result.ok and result.audio == mp3
        assert proxy.hits["a.mp3"] == 1 and proxy.host_headers == ["cdn.test:1"]
        with fetcher_with(Resolver({"cdn.test": [["10.1.2.3"]]}), [], proxy=proxy.base_url) as fetcher:
            refused = fetcher.fetch(FetchItem("t", preview_url="http://cdn.test:1/a.mp3"))
        assert refused.error_kind == "blocked_address" and proxy.hits["a.mp3"] == 1  # still checked first


# --------------------------------------------------------------------------- https: SNI and the certificate


def _certificates(tmp_path, name: str):
    """A CA and a server certificate for ``name`` signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def build(subject: str, key, issuer: str, issuer_key, ca: bool, san: str | None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False,
                decipher_only=False), critical=True)
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                            critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("hitpredict test CA", ca_key, "hitpredict test CA", ca_key, True, None)
    cert = build(name, key, "hitpredict test CA", ca_key, False, name)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.mark.parametrize("cert_name, ok", [("preview.test", True), ("other.test", False)])
def test_https_to_a_pinned_address_sends_sni_and_verifies_the_name(tmp_path, mp3, cert_name, ok):
    ca, cert, key = _certificates(tmp_path, cert_name)
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    with PreviewServer(files={"a.mp3": mp3}) as server:
        server._httpd.socket = context.wrap_socket(server._httpd.socket, server_side=True)
        port = int(server.base_url.rsplit(":", 1)[1])
        with fetcher_with(Resolver({"preview.test": [["127.0.0.1"]]}), ["127.0.0.0/8"]) as fetcher:
            fetcher._session.verify = str(ca)
            result = fetcher.fetch(FetchItem("t", preview_url=f"https://preview.test:{port}/a.mp3"))
    assert server_names[:1] == ["preview.test"]  # SNI carries the name, not 127.0.0.1
    if ok:
        assert result.ok and result.audio == mp3
        assert server.host_headers == [f"preview.test:{port}"]
    else:  # a certificate for another name is refused: verification still checks the URL's name
        assert not result.ok and "certificate" in result.error_detail.lower()
        assert server.hits["a.mp3"] == 0


# --------------------------------------------------------------------------- IPv6 forms that embed IPv4

BLOCKED_EMBEDDED = [
    "64:ff9b::7f00:1",            # NAT64 well-known prefix -> 127.0.0.1
    "64:ff9b::a9fe:a9fe",         # NAT64 -> 169.254.169.254 (cloud metadata)
    "64:ff9b::a00:1",             # NAT64 -> 10.0.0.1
    "64:ff9b:1::7f00:1",          # NAT64 local-use prefix (/96 layout) -> 127.0.0.1
    "64:ff9b:1:ab::c0a8:101",     # NAT64 local-use, other prefix bits -> 192.168.1.1
    "64:ff9b:1:7f00:0:100::",     # NAT64 local-use, /48 layout (RFC 6052) -> 127.0.0.1
    "2002:7f00:1::",              # 6to4 -> 127.0.0.1
    "2002:a9fe:a9fe::1",          # 6to4 -> 169.254.169.254
    "2002:c0a8:101:1::1",         # 6to4 -> 192.168.1.1
    "::127.0.0.1",                # IPv4-compatible -> 127.0.0.1
    "::10.0.0.1",                 # IPv4-compatible -> 10.0.0.1
    "::ffff:0:127.0.0.1",         # IPv4-translated -> 127.0.0.1
    "::ffff:0:a9fe:a9fe",         # IPv4-translated -> 169.254.169.254
    "::ffff:127.0.0.1",           # IPv4-mapped -> 127.0.0.1
    "::ffff:100.100.100.200",     # IPv4-mapped -> Alibaba metadata
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45 (TEST-NET)
    "2001:0:7f00:1:0:ffff:80ff:fffe",        # Teredo server 127.0.0.1, client 127.0.0.1
]
ALLOWED_EMBEDDED = [
    "64:ff9b::808:808",           # NAT64 -> 8.8.8.8
    "64:ff9b:1::5db8:d822",       # NAT64 local-use -> 93.184.216.34
    "2002:5db8:d822::1",          # 6to4 -> 93.184.216.34
    "::ffff:8.8.8.8",             # IPv4-mapped -> 8.8.8.8
    "::ffff:0:8.8.8.8",           # IPv4-translated -> 8.8.8.8
    "::93.184.216.34",            # IPv4-compatible -> 93.184.216.34
    "2001:0:4136:e378:8000:63bf:a247:27dd",  # Teredo, server 65.54.227.120, client 93.184.216.34
    "2606:4700::6810:84e5",       # plain public IPv6, no IPv4 inside
]


def _policy_for(address: str, allow: list[str] | None = None) -> AddressPolicy:
    return AddressPolicy(allow or [], resolver=lambda host: [address])


@pytest.mark.parametrize("address", BLOCKED_EMBEDDED)
def test_ipv6_forms_embedding_non_public_ipv4_are_blocked(address):
    with pytest.raises(FetchError) as err:
        _policy_for(address).check("https://cdn.example/a.mp3")
    assert err.value.kind == "blocked_address"


@pytest.mark.parametrize("address", ALLOWED_EMBEDDED)
def test_ipv6_forms_embedding_public_ipv4_are_allowed(address):
    assert _policy_for(address).check("https://cdn.example/a.mp3") == [address]


def test_an_allow_listed_ipv4_network_covers_its_ipv6_forms():
    assert _policy_for("64:ff9b::a14:1", ["10.20.0.0/16"]).check("http://cdn.example/a.mp3")
    with pytest.raises(FetchError):
        _policy_for("64:ff9b::a15:1", ["10.20.0.0/16"]).check("http://cdn.example/a.mp3")


def test_ipv6_literals_in_urls_are_judged_by_their_embedded_ipv4():
    with Fetcher(config(allow_hosts=[])) as fetcher:
        for url in ("http://[64:ff9b::7f00:1]:8080/a.mp3", "http://[2002:a9fe:a9fe::]/latest/meta-data/",
                    "http://[::ffff:0:7f00:1]/a.mp3"):
            result = fetcher.fetch(FetchItem("t", preview_url=url))
            assert (result.error_kind, result.attempts) == ("blocked_address", 1), url


# --------------------------------------------------------------------------- gzip-encoded bodies


def _wav(seconds: float = 1.0, rate: int = 22050) -> bytes:
    """A 16-bit mono sine WAV (compresses well, as a preview CDN might gzip it)."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                      for i in range(int(seconds * rate)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


@pytest.mark.parametrize("declare_length", [True, False])
def test_a_gzip_encoded_wav_arrives_whole(declare_length):
    wav = _wav()
    with PreviewServer(files={"a.wav": wav}) as server:
        server.set_fault("a.wav", Fault("gzip", declare_length=declare_length))
        with Fetcher(config()) as fetcher:
            result = fetcher.fetch(FetchItem("t", preview_url=server.url("a.wav")))
    assert result.error_kind is None and result.ok
    assert result.audio == wav and result.content_type == "audio/wav" and result.size_bytes == len(wav)


def test_a_gzip_body_cut_short_is_truncated_and_retried():
    wav = _wav()
    encoded = gzip.compress(wav)
    with PreviewServer(files={"a.wav": wav}) as server:
        server.set_fault("a.wav", Fault("truncate", times=1))  # plain body cut in half, then whole
        with Fetcher(config(max_retries=1)) as fetcher:
            result = fetcher.fetch(FetchItem("t", preview_url=server.url("a.wav")))
    assert result.ok and result.attempts == 2
    decoder = BoundedDecoder("gzip")
    decoder.decode(encoded[: len(encoded) // 2], 10 ** 9)
    with pytest.raises(DecodeFailed, match="end marker"):
        decoder.finish()


@pytest.mark.parametrize("declare_length", [True, False])
def test_a_gzip_bomb_is_too_large_without_being_inflated(declare_length):
    limit, inflated = 1024 * 1024, 128 * 1024 * 1024
    assert len(gzip_bomb(inflated)) < limit // 4  # built (and cached) before memory is traced
    with PreviewServer(files={"bomb.mp3": b""}) as server:
        server.set_fault("bomb.mp3", Fault("gzip_bomb", size=inflated, declare_length=declare_length))
        with Fetcher(config(max_body_bytes=limit)) as fetcher:
            tracemalloc.start()
            try:
                result = fetcher.fetch(FetchItem("t", preview_url=server.url("bomb.mp3")))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert (result.error_kind, result.transient) == ("too_large", False)
    assert "gzip-decoded" in result.error_detail
    assert peak < 16 * limit, f"peak {peak / 2 ** 20:.0f} MiB while refusing a {inflated >> 20} MiB bomb"


def test_bounded_decoder_undoes_gzip_and_deflate_and_stops_at_the_cap():
    payload = bytes(range(256)) * 400
    raw = zlib.compressobj(wbits=-15)
    cases = {
        "gzip": gzip.compress(payload),
        "x-gzip": gzip.compress(payload[:5000]) + gzip.compress(payload[5000:]),  # two members
        "deflate": zlib.compress(payload),
        "Deflate": raw.compress(payload) + raw.flush(),  # raw deflate, as some servers send
        "identity": payload,
        "": payload,
    }
    for encoding, wire in cases.items():
        for step in (1, 777, len(wire)):
            decoder = BoundedDecoder(encoding)
            out = b"".join(decoder.decode(wire[i:i + step], 10 ** 9) for i in range(0, len(wire), step))
            decoder.finish()
            assert out == payload, (encoding, step)
    assert BoundedDecoder("gzip").decode(gzip.compress(payload) + b"trailing junk", 10 ** 9) == payload
    bomb = gzip.compress(bytes(64 * 1024 * 1024))
    assert len(BoundedDecoder("gzip").decode(bomb, 1000)) == 1000
    with pytest.raises(DecodeFailed):
        BoundedDecoder("gzip").decode(b"not gzip at all, just text", 10 ** 9)
