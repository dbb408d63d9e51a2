"""The federation CA: issuance, its refusals, and chain verification, all with real keys."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ProvexError,
    VerificationError,
)
from provex.identity import SpiffeId
from provex.pki import (
    CLOCK_SKEW,
    ca_trust_domain,
    cert_to_pem,
    certificate_fingerprint,
    create_ca,
    csr_to_pem,
    generate_tls_key,
    issue_certificate,
    issue_server_certificate,
    key_to_pem,
    load_cert_pem,
    load_csr_pem,
    load_key_pem,
    make_csr,
    verify_chain,
)

TD = "provex.test"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
YEAR = timedelta(days=365)
NODE = SpiffeId.node(TD, "gd-gzde")


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _ca(td: str = TD, now: datetime = NOW, validity: timedelta = YEAR) -> Ca:
    key, cert = create_ca(td, now, validity)
    return Ca(key, cert)


@pytest.fixture(scope="module")
def ca() -> Ca:
    return _ca()


@pytest.fixture(scope="module")
def other_ca() -> Ca:
    """A second CA of the same trust domain: same subject name, different key."""
    return _ca()


def _issue(
    ca: Ca,
    spiffe_id: SpiffeId = NODE,
    *,
    now: datetime = NOW,
    validity: timedelta = DAY,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> x509.Certificate:
    csr = make_csr(generate_tls_key(), spiffe_id)
    return issue_certificate(
        ca.key,
        ca.cert,
        csr,
        spiffe_id,
        now=now,
        validity=validity,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )


def _leaf_for_ca_key(ca: Ca) -> x509.Certificate:
    """A leaf certifying the CA's own public key: matches the key but is no CA."""
    return issue_server_certificate(
        ca.key, ca.cert, ca.key.public_key(), NODE, now=NOW, validity=DAY
    )


def _csr_with(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    uris: list[str],
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _tampered_csr() -> x509.CertificateSigningRequest:
    der = bytearray(make_csr(generate_tls_key(), NODE).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte is inside the ECDSA signature
    return x509.load_der_x509_csr(bytes(der))


# --- issuance refusals -------------------------------------------------------------------------

Refusal = tuple[Callable[[Ca], object], type[ProvexError], str]

REFUSALS: dict[str, Refusal] = {
    "CSR for another node id": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            make_csr(generate_tls_key(), SpiffeId.node(TD, "sh-sde")),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        PermissionDenied,
        "CSR claims spiffe://provex.test/node/sh-sde, but the certificate is being issued "
        "for spiffe://provex.test/node/gd-gzde",
    ),
    "CSR for an admin id": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            make_csr(generate_tls_key(), SpiffeId.admin(TD, "gd-gzde")),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        PermissionDenied,
        "CSR claims spiffe://provex.test/admin/gd-gzde",
    ),
    "CSR with two URI SANs": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            _csr_with(generate_tls_key(), [str(NODE), "spiffe://provex.test/node/sh-sde"]),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "CSR claims 2 URI SANs",
    ),
    "bad CSR signature": (
        lambda ca: issue_certificate(ca.key, ca.cert, _tampered_csr(), NODE, now=NOW, validity=DAY),
        InvalidArgument,
        "CSR signature does not verify",
    ),
    "P-384 key": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            _csr_with(ec.generate_private_key(ec.SECP384R1()), [str(NODE)]),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "must be ECDSA P-256",
    ),
    "RSA key": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            _csr_with(rsa.generate_private_key(65537, 2048), [str(NODE)]),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "must be ECDSA P-256",
    ),
    "Ed25519 key": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            _csr_with(ed25519.Ed25519PrivateKey.generate(), [str(NODE)]),
            NODE,
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "must be ECDSA P-256",
    ),
    "expired CA": (
        lambda _: _issue(_ca(now=NOW - 3 * DAY, validity=DAY)),
        FailedPrecondition,
        "federation CA expired at",
    ),
    "CA not yet valid": (
        lambda _: _issue(_ca(now=NOW + 3 * DAY, validity=YEAR)),
        FailedPrecondition,
        "federation CA is not valid before",
    ),
    "CA key does not match CA certificate": (
        lambda ca: _issue(Ca(generate_tls_key(), ca.cert)),
        InvalidArgument,
        "CA key does not match",
    ),
    "leaf certificate used as CA": (
        lambda ca: _issue(Ca(ca.key, _leaf_for_ca_key(ca))),
        InvalidArgument,
        "CA certificate is not a CA",
    ),
    "SPIFFE id of a foreign trust domain": (
        lambda ca: _issue(ca, SpiffeId.node("other.test", "gd-gzde")),
        InvalidArgument,
        "not in the CA's trust domain 'provex.test'",
    ),
    "malformed SPIFFE id string": (
        lambda ca: issue_certificate(
            ca.key,
            ca.cert,
            make_csr(generate_tls_key(), NODE),
            "spiffe://provex.test/node/GD",
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "node name 'GD'",
    ),
    "malformed DNS name": (
        lambda ca: _issue(ca, dns_names=("bad_name.example",)),
        InvalidArgument,
        "DNS name 'bad_name.example'",
    ),
    "malformed IP address": (
        lambda ca: _issue(ca, ip_addresses=("127.0.0.300",)),
        InvalidArgument,
        "IP address '127.0.0.300'",
    ),
    "naive datetime": (
        lambda ca: _issue(ca, now=NOW.replace(tzinfo=None)),
        InvalidArgument,
        "timezone-aware",
    ),
    "zero validity": (
        lambda ca: _issue(ca, validity=timedelta(0)),
        InvalidArgument,
        "validity must be positive",
    ),
    "server certificate for an RSA key": (
        lambda ca: issue_server_certificate(
            ca.key,
            ca.cert,
            rsa.generate_private_key(65537, 2048).public_key(),  # type: ignore[arg-type]
            NODE,
            now=NOW,
            validity=DAY,
        ),
        InvalidArgument,
        "must be ECDSA P-256",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_issuance_refusals(ca: Ca, case: str) -> None:
    attempt, error, message = REFUSALS[case]
    with pytest.raises(error) as raised:
        attempt(ca)
    assert message in str(raised.value)


# --- what an issued certificate contains -------------------------------------------------------


def test_issued_leaf_contents(ca: Ca) -> None:
    key = generate_tls_key()
    cert = issue_certificate(
        ca.key,
        ca.cert,
        make_csr(key, NODE),
        NODE,
        now=NOW,
        validity=DAY,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", ipaddress.IPv6Address("::1")],
    )
    assert cert.public_key() == key.public_key()
    assert cert.issuer == ca.cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gd-gzde"
    ext = cert.extensions
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_encipherment and not usage.value.key_cert_sign
    assert set(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(NODE)]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.IPv6Address("::1"),
    ]
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + DAY
    verify_chain(cert, ca.cert, NOW)


def test_ca_contents(ca: Ca) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "Provex federation CA (provex.test)"
    )
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca_trust_domain(cert) == TD
    cert.verify_directly_issued_by(cert)
    assert isinstance(ca.key.curve, ec.SECP256R1)


def test_create_ca_rejects_bad_trust_domain() -> None:
    with pytest.raises(InvalidArgument, match="trust domain"):
        create_ca("Provex.Test", NOW, YEAR)


def test_csr_without_san_is_accepted_and_named_by_the_issuer(ca: Ca) -> None:
    cert = issue_certificate(
        ca.key, ca.cert, _csr_with(generate_tls_key(), []), NODE, now=NOW, validity=DAY
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(NODE)]


def test_csr_accepts_spiffe_id_string(ca: Ca) -> None:
    csr = make_csr(generate_tls_key(), str(NODE))
    cert = issue_certificate(ca.key, ca.cert, csr, str(NODE), now=NOW, validity=DAY)
    verify_chain(cert, ca.cert, NOW)


def test_leaf_never_outlives_its_ca() -> None:
    short = _ca(validity=2 * DAY)
    cert = _issue(short, validity=YEAR)
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_server_certificate_without_csr(ca: Ca) -> None:
    key = generate_tls_key()
    registry = SpiffeId.registry(TD)
    cert = issue_server_certificate(
        ca.key,
        ca.cert,
        key.public_key(),
        registry,
        now=NOW,
        validity=DAY,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    verify_chain(cert, ca.cert, NOW)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(registry)]


def test_serials_are_random(ca: Ca) -> None:
    assert _issue(ca).serial_number != _issue(ca).serial_number


# --- verify_chain ------------------------------------------------------------------------------

ChainCase = Callable[[Ca, Ca], tuple[x509.Certificate, x509.Certificate, datetime]]

CHAIN_FAILURES: dict[str, tuple[ChainCase, str]] = {
    "issued by another CA with the same name": (
        lambda ca, other: (_issue(other), ca.cert, NOW),
        "not signed by the federation CA",
    ),
    "expired": (
        lambda ca, _: (_issue(ca), ca.cert, NOW + DAY + timedelta(seconds=1)),
        "certificate expired at",
    ),
    "not yet valid": (
        lambda ca, _: (_issue(ca), ca.cert, NOW - CLOCK_SKEW - timedelta(seconds=1)),
        "not valid before",
    ),
    "CA certificate presented as leaf": (
        lambda ca, _: (ca.cert, ca.cert, NOW),
        "is a CA certificate, not a leaf",
    ),
    "another CA's certificate presented as leaf": (
        lambda ca, other: (other.cert, ca.cert, NOW),
        "is a CA certificate, not a leaf",
    ),
    "leaf trusted as CA": (
        lambda ca, _: (_issue(ca), _issue(ca), NOW),
        "not a CA certificate",
    ),
    "CA expired": (
        lambda _, __: (
            _issue(short := _ca(validity=DAY)),
            short.cert,
            NOW + DAY + timedelta(seconds=1),
        ),
        "expired at",
    ),
}


@pytest.mark.parametrize("case", CHAIN_FAILURES)
def test_verify_chain_failures(ca: Ca, other_ca: Ca, case: str) -> None:
    build, message = CHAIN_FAILURES[case]
    cert, trusted, at = build(ca, other_ca)
    with pytest.raises(VerificationError) as raised:
        verify_chain(cert, trusted, at)
    assert message in str(raised.value)


def test_verify_chain_window_edges(ca: Ca) -> None:
    cert = _issue(ca)
    verify_chain(cert, ca.cert, NOW - CLOCK_SKEW)
    verify_chain(cert, ca.cert, NOW + DAY)


# --- PEM and fingerprints ----------------------------------------------------------------------


def test_pem_round_trips(ca: Ca) -> None:
    key = generate_tls_key()
    csr = make_csr(key, NODE)
    assert load_key_pem(key_to_pem(key)).private_numbers() == key.private_numbers()
    assert load_cert_pem(cert_to_pem(ca.cert)) == ca.cert
    assert load_csr_pem(csr_to_pem(csr)) == csr


def _rsa_pem() -> bytes:
    return rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_pem() -> bytes:
    return generate_tls_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


MALFORMED_PEM: dict[str, tuple[Callable[[Ca], object], str]] = {
    "key: garbage": (lambda _: load_key_pem(b"not a key"), "not an unencrypted PEM private key"),
    "key: encrypted": (lambda _: load_key_pem(_encrypted_pem()), "not an unencrypted PEM"),
    "key: RSA": (lambda _: load_key_pem(_rsa_pem()), "must be ECDSA P-256"),
    "key: certificate instead": (
        lambda ca: load_key_pem(cert_to_pem(ca.cert)),
        "not an unencrypted PEM private key",
    ),
    "cert: garbage": (lambda _: load_cert_pem(b"junk"), "not a PEM certificate"),
    "cert: truncated": (
        lambda ca: load_cert_pem(cert_to_pem(ca.cert)[:200]),
        "not a PEM certificate",
    ),
    "cert: two certificates": (
        lambda ca: load_cert_pem(cert_to_pem(ca.cert) * 2),
        "expected one PEM certificate, found 2",
    ),
    "csr: garbage": (lambda _: load_csr_pem(b"junk"), "not a PEM certificate signing request"),
    "csr: certificate instead": (
        lambda ca: load_csr_pem(cert_to_pem(ca.cert)),
        "not a PEM certificate signing request",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_PEM)
def test_malformed_pem(ca: Ca, case: str) -> None:
    load, message = MALFORMED_PEM[case]
    with pytest.raises(InvalidArgument) as raised:
        load(ca)
    assert message in str(raised.value)


def test_fingerprint(ca: Ca) -> None:
    fingerprint = certificate_fingerprint(ca.cert)
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint == hashlib.sha256(der).hexdigest()
    assert len(fingerprint) == 64
    assert fingerprint != certificate_fingerprint(_ca().cert)
