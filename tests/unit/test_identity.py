"""SPIFFE ids, peer identities read from real mutual-TLS gRPC calls, and credential helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from provex.errors import InvalidArgument, ProvexError, Unauthenticated
from provex.identity import (
    PeerKind,
    SpiffeId,
    TlsFiles,
    TlsMaterial,
    channel_credentials,
    peer_identity,
    require_peer,
    server_credentials,
    spiffe_id_of_certificate,
    tls_channel_options,
)
from provex.pki import (
    cert_to_pem,
    create_ca,
    generate_tls_key,
    issue_certificate,
    issue_server_certificate,
    key_to_pem,
    make_csr,
)

TD = "provex.test"
CALL_TIMEOUT = 5.0
METHOD = "/provex.test.Who/Get"

# --- SPIFFE id parsing -------------------------------------------------------------------------

VALID: dict[str, tuple[str, PeerKind, str]] = {
    "spiffe://provex.test/node/gd-gzde": ("provex.test", PeerKind.NODE, "gd-gzde"),
    "spiffe://provex.test/node/sh-sde": ("provex.test", PeerKind.NODE, "sh-sde"),
    "spiffe://provex.test/admin/alice": ("provex.test", PeerKind.ADMIN, "alice"),
    "spiffe://a/node/abc": ("a", PeerKind.NODE, "abc"),
    "spiffe://my_td-1.example/node/n01": ("my_td-1.example", PeerKind.NODE, "n01"),
    "spiffe://provex.test/node/" + "a" * 63: ("provex.test", PeerKind.NODE, "a" * 63),
}


@pytest.mark.parametrize("uri", VALID)
def test_parse_valid(uri: str) -> None:
    spiffe_id = SpiffeId.parse(uri)
    assert (spiffe_id.trust_domain, spiffe_id.kind, spiffe_id.name) == VALID[uri]
    assert str(spiffe_id) == uri


MALFORMED: dict[str, str] = {
    "empty": "",
    "no scheme": "provex.test/node/gd-gzde",
    "https scheme": "https://provex.test/node/gd-gzde",
    "upper-case scheme": "SPIFFE://provex.test/node/gd-gzde",
    "single slash": "spiffe:/provex.test/node/gd-gzde",
    "no path": "spiffe://provex.test",
    "root path": "spiffe://provex.test/",
    "empty trust domain": "spiffe:///node/gd-gzde",
    "upper-case trust domain": "spiffe://Provex.test/node/gd-gzde",
    "port": "spiffe://provex.test:443/node/gd-gzde",
    "user info": "spiffe://user@provex.test/node/gd-gzde",
    "percent-encoded trust domain": "spiffe://provex%2Etest/node/gd-gzde",
    "trust domain too long": "spiffe://" + "a" * 256 + "/node/gd-gzde",
    "unknown kind": "spiffe://provex.test/member/gd-gzde",
    "upper-case kind": "spiffe://provex.test/NODE/gd-gzde",
    "kind only": "spiffe://provex.test/node",
    "kind with slash only": "spiffe://provex.test/node/",
    "trailing slash": "spiffe://provex.test/node/gd-gzde/",
    "extra segment": "spiffe://provex.test/node/gd-gzde/extra",
    "double slash": "spiffe://provex.test//node/gd-gzde",
    "dot segment": "spiffe://provex.test/node/../admin/root",
    "query": "spiffe://provex.test/node/gd-gzde?x=1",
    "fragment": "spiffe://provex.test/node/gd-gzde#x",
    "upper-case node id": "spiffe://provex.test/node/GD-GZDE",
    "node id starts with digit": "spiffe://provex.test/node/1gd",
    "node id starts with hyphen": "spiffe://provex.test/node/-gd",
    "node id too short": "spiffe://provex.test/node/gd",
    "node id too long": "spiffe://provex.test/node/" + "a" * 64,
    "node id with underscore": "spiffe://provex.test/node/gd_gzde",
    "node id with dot": "spiffe://provex.test/node/gd.gzde",
    "node id percent-encoded": "spiffe://provex.test/node/gd%2Dgzde",
    "non-ascii node id": "spiffe://provex.test/node/gdé",
    "admin name with space": "spiffe://provex.test/admin/al ice",
    "admin name too short": "spiffe://provex.test/admin/al",
    "whitespace around": " spiffe://provex.test/node/gd-gzde",
    "trailing newline": "spiffe://provex.test/node/gd-gzde\n",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_parse_malformed(case: str) -> None:
    with pytest.raises(InvalidArgument):
        SpiffeId.parse(MALFORMED[case])


def test_constructors() -> None:
    assert str(SpiffeId.node(TD, "gd-gzde")) == "spiffe://provex.test/node/gd-gzde"
    assert str(SpiffeId.admin(TD, "alice")) == "spiffe://provex.test/admin/alice"
    assert SpiffeId.node(TD, "gd-gzde") == SpiffeId.parse("spiffe://provex.test/node/gd-gzde")
    assert SpiffeId.node(TD, "alice") != SpiffeId.admin(TD, "alice")
    with pytest.raises(InvalidArgument, match="node name"):
        SpiffeId.node(TD, "GD")
    with pytest.raises(InvalidArgument, match="trust domain"):
        SpiffeId.admin("bad domain", "alice")


# --- certificates for the tests ----------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Federation:
    ca_pem: bytes
    server: Party
    node: Party
    admin: Party


def _federation(td: str = TD) -> Federation:
    now = datetime.now(UTC)
    ca_key, ca_cert = create_ca(td, now, timedelta(days=1))

    def client(spiffe_id: SpiffeId) -> Party:
        key = generate_tls_key()
        cert = issue_certificate(
            ca_key,
            ca_cert,
            make_csr(key, spiffe_id),
            spiffe_id,
            now=now,
            validity=timedelta(hours=1),
        )
        return Party(cert_to_pem(cert), key_to_pem(key))

    server_key = generate_tls_key()
    server_cert = issue_server_certificate(
        ca_key,
        ca_cert,
        server_key.public_key(),
        SpiffeId.node(td, "registry"),
        now=now,
        validity=timedelta(hours=1),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    return Federation(
        ca_pem=cert_to_pem(ca_cert),
        server=Party(cert_to_pem(server_cert), key_to_pem(server_key)),
        node=client(SpiffeId.node(td, "gd-gzde")),
        admin=client(SpiffeId.admin(td, "alice")),
    )


@pytest.fixture(scope="module")
def fed() -> Federation:
    return _federation()


@pytest.fixture(scope="module")
def foreign() -> Federation:
    """Another CA of the same trust domain: its certificates must not be accepted."""
    return _federation()


# --- peer_identity on fake contexts (certificates the CA would never issue) --------------------


@dataclass(frozen=True)
class FakeContext:
    properties: Mapping[str, Iterable[bytes]]

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self.properties


def _cert_with(names: list[x509.GeneralName] | None) -> x509.Certificate:
    key = generate_tls_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


def _uri(value: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(value)


NODE_URI = "spiffe://provex.test/node/gd-gzde"

BAD_PEER_CERTS: dict[str, tuple[list[x509.GeneralName] | None, str]] = {
    "no SAN extension": (None, "no subject alternative names"),
    "DNS SAN only": ([x509.DNSName("gd-gzde.example")], "exactly one URI SAN"),
    "two SPIFFE ids": (
        [_uri(NODE_URI), _uri("spiffe://provex.test/node/sh-sde")],
        "exactly one URI SAN (a SPIFFE id), it has 2",
    ),
    "SPIFFE id plus another URI": (
        [_uri(NODE_URI), _uri("https://gd-gzde.example")],
        "it has 2",
    ),
    "https URI": ([_uri("https://gd-gzde.example/node/gd-gzde")], "must start with 'spiffe://'"),
    "trust domain only": ([_uri("spiffe://provex.test")], "has no path"),
    "malformed node id": ([_uri("spiffe://provex.test/node/GD")], "node name 'GD'"),
    "foreign trust domain": (
        [_uri("spiffe://other.test/node/gd-gzde")],
        "trust domain 'other.test', not 'provex.test'",
    ),
}


@pytest.mark.parametrize("case", BAD_PEER_CERTS)
def test_peer_identity_refuses_bad_certificates(case: str) -> None:
    names, message = BAD_PEER_CERTS[case]
    context = FakeContext({"x509_pem_cert": [cert_to_pem(_cert_with(names))]})
    with pytest.raises(Unauthenticated) as raised:
        peer_identity(context, TD)
    assert message in str(raised.value)


def test_peer_identity_without_certificate() -> None:
    cases: list[dict[str, list[bytes]]] = [
        {},
        {"transport_security_type": [b"ssl"]},
        {"x509_pem_cert": []},
    ]
    for properties in cases:
        context = FakeContext(properties)
        assert peer_identity(context, TD) is None
        with pytest.raises(Unauthenticated, match="needs a client certificate"):
            require_peer(context, TD)


def test_peer_identity_refuses_garbage_and_duplicates() -> None:
    with pytest.raises(Unauthenticated, match="not valid PEM"):
        peer_identity(FakeContext({"x509_pem_cert": [b"junk"]}), TD)
    pem = cert_to_pem(_cert_with([_uri(NODE_URI)]))
    with pytest.raises(Unauthenticated, match="2 peer certificates"):
        peer_identity(FakeContext({"x509_pem_cert": [pem, pem]}), TD)


def test_spiffe_id_of_certificate() -> None:
    cert = _cert_with([_uri(NODE_URI), x509.DNSName("localhost")])
    assert spiffe_id_of_certificate(cert, TD) == SpiffeId.node(TD, "gd-gzde")
    assert require_peer(FakeContext({"x509_pem_cert": [cert_to_pem(cert)]}), TD) == SpiffeId.node(
        TD, "gd-gzde"
    )


# --- credential helpers ------------------------------------------------------------------------


def test_credential_helpers_refuse_bad_input(fed: Federation) -> None:
    server, node = fed.server, fed.node
    with pytest.raises(InvalidArgument, match="does not match the certificate"):
        server_credentials(server.cert_pem, node.key_pem, fed.ca_pem, True)
    with pytest.raises(InvalidArgument, match="not a PEM certificate"):
        server_credentials(b"junk", server.key_pem, fed.ca_pem, True)
    with pytest.raises(InvalidArgument, match="not an unencrypted PEM private key"):
        server_credentials(server.cert_pem, b"junk", fed.ca_pem, True)
    with pytest.raises(InvalidArgument, match="needs client_ca_pem"):
        server_credentials(server.cert_pem, server.key_pem, None, True)
    with pytest.raises(InvalidArgument, match="client CA: not a PEM certificate"):
        server_credentials(server.cert_pem, server.key_pem, b"junk", True)
    with pytest.raises(InvalidArgument, match="CA: not a PEM certificate"):
        channel_credentials(b"junk")
    with pytest.raises(InvalidArgument, match="both cert_pem and key_pem"):
        channel_credentials(fed.ca_pem, node.cert_pem)
    with pytest.raises(InvalidArgument, match="both cert_pem and key_pem"):
        channel_credentials(fed.ca_pem, None, node.key_pem)
    with pytest.raises(InvalidArgument, match="needs its certificate and key"):
        TlsMaterial(fed.ca_pem).server_credentials(require_client_auth=True)


def test_tls_files(fed: Federation, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(fed.ca_pem)
    (tmp_path / "node.pem").write_bytes(fed.node.cert_pem)
    (tmp_path / "node.key").write_bytes(fed.node.key_pem)
    files = TlsFiles(tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key")
    material = files.load()
    assert material == TlsMaterial(fed.ca_pem, fed.node.cert_pem, fed.node.key_pem)
    assert isinstance(material.channel_credentials(), grpc.ChannelCredentials)
    assert isinstance(material.server_credentials(require_client_auth=True), grpc.ServerCredentials)
    assert TlsFiles(tmp_path / "ca.pem").load() == TlsMaterial(fed.ca_pem)
    with pytest.raises(InvalidArgument, match=r"cannot read .*missing\.pem"):
        TlsFiles(tmp_path / "missing.pem").load()


def test_tls_channel_options() -> None:
    assert tls_channel_options() == []
    assert tls_channel_options("localhost") == [("grpc.ssl_target_name_override", "localhost")]


# --- real gRPC servers -------------------------------------------------------------------------


def _who_handler(trust_domain: str) -> grpc.GenericRpcHandler[bytes, bytes]:
    """A generic unary handler answering the caller's identity as text (or the error)."""

    async def who(_request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return str(peer_identity(context, trust_domain)).encode()
        except ProvexError as error:
            return f"{type(error).__name__}: {error}".encode()

    handler = grpc.unary_unary_rpc_method_handler(cast(Any, who))
    return grpc.method_handlers_generic_handler("provex.test.Who", {"Get": handler})


@asynccontextmanager
async def serving(
    credentials: grpc.ServerCredentials, trust_domain: str = TD
) -> AsyncIterator[int]:
    """A started grpc.aio server on 127.0.0.1 (port 0); yields the bound port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_who_handler(trust_domain)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def call_who(target: str, credentials: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(target, credentials) as channel:
        method = channel.unary_unary(METHOD, None, None)
        response = await method(b"", timeout=CALL_TIMEOUT)
        assert isinstance(response, bytes)
        return response.decode()


def _mtls(fed: Federation) -> grpc.ServerCredentials:
    return server_credentials(fed.server.cert_pem, fed.server.key_pem, fed.ca_pem, True)


def _public(fed: Federation) -> grpc.ServerCredentials:
    return server_credentials(fed.server.cert_pem, fed.server.key_pem, None, False)


async def test_mutual_tls_peer_identities(fed: Federation) -> None:
    node = channel_credentials(fed.ca_pem, fed.node.cert_pem, fed.node.key_pem)
    admin = channel_credentials(fed.ca_pem, fed.admin.cert_pem, fed.admin.key_pem)
    async with serving(_mtls(fed)) as port:
        assert await call_who(f"127.0.0.1:{port}", node) == "spiffe://provex.test/node/gd-gzde"
        assert await call_who(f"127.0.0.1:{port}", admin) == "spiffe://provex.test/admin/alice"
        assert await call_who(f"localhost:{port}", node) == "spiffe://provex.test/node/gd-gzde"


async def test_mutual_tls_foreign_trust_domain_is_unauthenticated(fed: Federation) -> None:
    node = channel_credentials(fed.ca_pem, fed.node.cert_pem, fed.node.key_pem)
    async with serving(_mtls(fed), trust_domain="other.test") as port:
        answer = await call_who(f"127.0.0.1:{port}", node)
    assert answer == (
        "Unauthenticated: peer certificate is for trust domain 'provex.test', not 'other.test'"
    )


async def test_public_port_has_no_peer_identity(fed: Federation) -> None:
    anonymous = channel_credentials(fed.ca_pem)
    node = channel_credentials(fed.ca_pem, fed.node.cert_pem, fed.node.key_pem)
    async with serving(_public(fed)) as port:
        assert await call_who(f"127.0.0.1:{port}", anonymous) == "None"
        # The public port does not request a client certificate, so even a valid one is unseen.
        assert await call_who(f"127.0.0.1:{port}", node) == "None"


HANDSHAKE_FAILURES: dict[str, tuple[str, str]] = {
    "client certificate from another CA": ("foreign-client", "mtls"),
    "no client certificate on the mutual-TLS port": ("anonymous", "mtls"),
    "server certificate from another CA": ("trusts-foreign-ca", "public"),
}


async def test_handshake_failures(fed: Federation, foreign: Federation) -> None:
    clients = {
        "foreign-client": channel_credentials(
            fed.ca_pem, foreign.node.cert_pem, foreign.node.key_pem
        ),
        "anonymous": channel_credentials(fed.ca_pem),
        "trusts-foreign-ca": channel_credentials(foreign.ca_pem),
    }
    async with serving(_mtls(fed)) as mtls_port, serving(_public(fed)) as public_port:
        ports = {"mtls": mtls_port, "public": public_port}
        for case, (client, server) in HANDSHAKE_FAILURES.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call_who(f"127.0.0.1:{ports[server]}", clients[client])
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, case
