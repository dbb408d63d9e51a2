"""Who is calling: SPIFFE ids, the peer identity of a gRPC call, and TLS credentials.

Every party in the federation is named by a SPIFFE id carried as the single
URI SAN of its X.509 certificate from the federation CA:
``spiffe://<trust-domain>/node/<node-id>`` for an exchange node and
``spiffe://<trust-domain>/admin/<name>`` for an administrator.

Authorization is decided from :func:`peer_identity` (or :func:`require_peer`),
which reads the client certificate that the TLS handshake verified against
the federation CA, parses it with ``cryptography`` and extracts the URI SAN
itself; it never trusts a field the caller fills in. The certificate chain is
checked by the TLS stack (servers that need client identities are built with
``require_client_auth=True``); this module checks the SPIFFE id's form and
trust domain.

The credential helpers build ``grpc.ServerCredentials`` and
``grpc.ChannelCredentials`` from PEM bytes (or files via :class:`TlsFiles`)
and check the PEM up front, so a wrong file fails with a clear
:class:`~provex.errors.InvalidArgument` instead of a failed handshake later.
Server certificates are issued with the DNS SAN ``localhost`` and the IP SAN
``127.0.0.1`` (see :mod:`provex.pki`), so dialing by either needs no
``grpc.ssl_target_name_override``; :func:`tls_channel_options` is there for
the remaining cases.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from provex.errors import InvalidArgument, Unauthenticated
from provex.ids import validate_node_id

SPIFFE_SCHEME = "spiffe://"
MAX_TRUST_DOMAIN_LENGTH = 255
"""SPIFFE caps the trust domain name at 255 bytes."""

_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
AUTH_CONTEXT_PEM_CERT = "x509_pem_cert"
"""The gRPC auth-context key holding the peer's verified leaf certificate (PEM)."""


class PeerKind(enum.Enum):
    """The kinds of parties that hold federation certificates."""

    NODE = "node"
    ADMIN = "admin"
    # The national registry's own servers (``spiffe://<td>/registry/national``).
    REGISTRY = "registry"


def check_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain name, else raise.

    Lowercase letters, digits, ``.``, ``-`` and ``_``; 1..255 characters.
    """
    if not _TRUST_DOMAIN_RE.fullmatch(trust_domain):
        raise InvalidArgument(
            f"trust domain {trust_domain!r}: use lowercase letters, digits, '.', '-', '_'"
        )
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise InvalidArgument(
            f"trust domain is {len(trust_domain)} characters, at most "
            f"{MAX_TRUST_DOMAIN_LENGTH} allowed"
        )
    return trust_domain


def _check_name(kind: PeerKind, name: str) -> str:
    """Node and admin names follow the node-id rules of :func:`provex.ids.validate_node_id`."""
    try:
        return validate_node_id(name)
    except InvalidArgument as error:
        raise InvalidArgument(str(error).replace("node id", f"{kind.value} name")) from None


@dataclass(frozen=True)
class SpiffeId:
    """A parsed SPIFFE id of a node or an admin; construction validates every part."""

    trust_domain: str
    kind: PeerKind
    name: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        if not isinstance(self.kind, PeerKind):
            raise InvalidArgument(f"SPIFFE id kind {self.kind!r} is not a PeerKind")
        _check_name(self.kind, self.name)

    @classmethod
    def node(cls, trust_domain: str, node_id: str) -> SpiffeId:
        """``spiffe://<trust_domain>/node/<node_id>``."""
        return cls(trust_domain, PeerKind.NODE, node_id)

    @classmethod
    def admin(cls, trust_domain: str, name: str) -> SpiffeId:
        """``spiffe://<trust_domain>/admin/<name>``."""
        return cls(trust_domain, PeerKind.ADMIN, name)

    @classmethod
    def registry(cls, trust_domain: str, name: str = "national") -> SpiffeId:
        """``spiffe://<trust_domain>/registry/<name>``: the registry's server identity."""
        return cls(trust_domain, PeerKind.REGISTRY, name)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse a SPIFFE id strictly; raise InvalidArgument on any deviation.

        The scheme must be exactly ``spiffe`` (lowercase), the trust domain
        valid (no port, user info, percent-encoding or upper case), and the
        path exactly ``/node/<node-id>`` or ``/admin/<name>`` (no trailing
        slash, query or fragment).
        """
        if not uri.startswith(SPIFFE_SCHEME):
            raise InvalidArgument(f"SPIFFE id {uri!r} must start with {SPIFFE_SCHEME!r}")
        trust_domain, slash, path = uri[len(SPIFFE_SCHEME) :].partition("/")
        if not slash:
            raise InvalidArgument(
                f"SPIFFE id {uri!r} has no path; expected /node/<node-id> or /admin/<name>"
            )
        check_trust_domain(trust_domain)
        segments = path.split("/")
        if len(segments) != 2:
            raise InvalidArgument(
                f"SPIFFE id {uri!r}: path must be exactly /node/<node-id> or /admin/<name>"
            )
        kind_text, name = segments
        try:
            kind = PeerKind(kind_text)
        except ValueError:
            raise InvalidArgument(
                f"SPIFFE id {uri!r}: path must start with /node/, /admin/ or /registry/"
            ) from None
        return cls(trust_domain, kind, name)

    def __str__(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}/{self.kind.value}/{self.name}"


def node_server_name(trust_domain: str, node_id: str) -> str:
    """The DNS name in a node's certificate: ``<node-id>.node.<trust-domain>``.

    Nodes serve their peer port with the certificate the registry issued.
    Peers dial any address and verify the server against this name (gRPC's
    ``ssl_target_name_override``, see :func:`tls_channel_options`), so the
    TLS handshake itself proves they reached the node they meant.
    """
    return f"{node_id}.node.{check_trust_domain(trust_domain)}"


def spiffe_id_of_certificate(cert: x509.Certificate, trust_domain: str) -> SpiffeId:
    """The SPIFFE id of a peer certificate, checked against ``trust_domain``.

    Raises Unauthenticated unless the certificate has exactly one URI SAN,
    it is a well-formed node or admin SPIFFE id, and its trust domain is
    ``trust_domain``.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Unauthenticated("peer certificate has no subject alternative names") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise Unauthenticated(
            f"peer certificate must have exactly one URI SAN (a SPIFFE id), it has {len(uris)}"
        )
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidArgument as error:
        raise Unauthenticated(f"peer certificate: {error}") from None
    if spiffe_id.trust_domain != trust_domain:
        raise Unauthenticated(
            f"peer certificate is for trust domain {spiffe_id.trust_domain!r}, not {trust_domain!r}"
        )
    return spiffe_id


class AuthContextSource(Protocol):
    """Anything with gRPC's ``auth_context()``: a ``grpc.aio.ServicerContext``, or a test fake."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        """The auth-context properties of the call."""
        ...


def peer_identity(context: AuthContextSource, trust_domain: str) -> SpiffeId | None:
    """The SPIFFE id of the caller, or None if it presented no client certificate.

    None means the connection is not mutually authenticated (the public
    port, or an insecure one). A presented certificate that does not carry
    exactly one SPIFFE id of ``trust_domain`` raises Unauthenticated.
    """
    pems = list(context.auth_context().get(AUTH_CONTEXT_PEM_CERT, ()))
    if not pems:
        return None
    if len(pems) != 1:
        raise Unauthenticated(f"auth context holds {len(pems)} peer certificates, expected one")
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        raise Unauthenticated("peer certificate in the auth context is not valid PEM") from None
    return spiffe_id_of_certificate(cert, trust_domain)


def require_peer(context: AuthContextSource, trust_domain: str) -> SpiffeId:
    """Like :func:`peer_identity`, but a caller without a client certificate is Unauthenticated."""
    spiffe_id = peer_identity(context, trust_domain)
    if spiffe_id is None:
        raise Unauthenticated("this call needs a client certificate issued by the federation CA")
    return spiffe_id


# --- credentials -------------------------------------------------------------------------------


def _check_certs_pem(what: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidArgument(f"{what}: not a PEM certificate") from None
    return certs


def _check_key_pair_pem(cert_pem: bytes, key_pem: bytes) -> None:
    leaf = _check_certs_pem("certificate", cert_pem)[0]
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidArgument("private key: not an unencrypted PEM private key") from None
    if key.public_key() != leaf.public_key():
        raise InvalidArgument("private key does not match the certificate")


def server_credentials(
    cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None, require_client_auth: bool
) -> grpc.ServerCredentials:
    """TLS server credentials; with ``require_client_auth`` a mutual-TLS port.

    ``require_client_auth=True`` needs ``client_ca_pem`` (the federation CA):
    clients must then present a certificate that chains to it, or the
    handshake fails. With ``require_client_auth=False`` (the public port)
    gRPC does not request a client certificate at all, so
    :func:`peer_identity` returns None there; ``client_ca_pem`` is ignored.
    """
    _check_key_pair_pem(cert_pem, key_pem)
    if require_client_auth:
        if client_ca_pem is None:
            raise InvalidArgument("require_client_auth needs client_ca_pem (the federation CA)")
        _check_certs_pem("client CA", client_ca_pem)
        return grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=client_ca_pem, require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)


def channel_credentials(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials trusting ``ca_pem``; with cert and key, a mutual-TLS client."""
    _check_certs_pem("CA", ca_pem)
    if (cert_pem is None) != (key_pem is None):
        raise InvalidArgument("give both cert_pem and key_pem for a client certificate, or neither")
    if cert_pem is not None and key_pem is not None:
        _check_key_pair_pem(cert_pem, key_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def tls_channel_options(server_name: str | None = None) -> list[tuple[str, str]]:
    """Channel options to verify the server certificate against ``server_name``.

    Only needed when the dialed address is not in the server certificate's
    SANs; returns an empty list for None.
    """
    if server_name is None:
        return []
    return [("grpc.ssl_target_name_override", server_name)]


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of a party's TLS setup: the federation CA, and its own certificate and key."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        """Server credentials from this material (needs cert and key)."""
        if self.cert_pem is None or self.key_pem is None:
            raise InvalidArgument("a server needs its certificate and key")
        return server_credentials(self.cert_pem, self.key_pem, self.ca_pem, require_client_auth)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials; mutual TLS if this material has a certificate and key."""
        return channel_credentials(self.ca_pem, self.cert_pem, self.key_pem)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files: the federation CA, and optionally own certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def load(self) -> TlsMaterial:
        """Read the files; an unreadable file raises InvalidArgument naming it."""
        return TlsMaterial(
            ca_pem=_read(self.ca),
            cert_pem=None if self.cert is None else _read(self.cert),
            key_pem=None if self.key is None else _read(self.key),
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}") from None
