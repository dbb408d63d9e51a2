"""The federation CA: TLS keys, CSRs and X.509 certificates (ECDSA P-256).

The registry runs a single-level CA per trust domain: a self-signed CA
certificate (:func:`create_ca`) issues leaf certificates whose only URI SAN
is the holder's SPIFFE id (:mod:`provex.identity`). Every leaf is good for
both ends of mutual TLS (EKU serverAuth and clientAuth). TLS keys are always
ECDSA P-256; document signatures use Ed25519 and live in
:mod:`provex.envelope`.

The issuer decides what goes into a certificate: from a CSR it takes only
the public key, after checking the CSR's signature and that the SPIFFE id the
CSR asks for (if any) is the one being issued. Time is always passed in
(timezone-aware ``now``); ``not_valid_before`` is backdated by
:data:`CLOCK_SKEW` so a peer whose clock runs a little behind accepts a
fresh certificate, and a leaf never outlives its CA.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    VerificationError,
)
from provex.identity import SPIFFE_SCHEME, SpiffeId, check_trust_domain

CLOCK_SKEW = timedelta(minutes=5)
"""How far ``not_valid_before`` is backdated from the issuing ``now``."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAX_DNS_NAME_LENGTH = 253


# --- keys and PEM ------------------------------------------------------------------------------


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key for TLS."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a private key (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PEM private key; it must be ECDSA P-256."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidArgument("TLS key: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidArgument("TLS key: must be ECDSA P-256")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert_pem(pem: bytes) -> x509.Certificate:
    """Load exactly one PEM certificate."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidArgument("certificate: not a PEM certificate") from None
    if len(certs) != 1:
        raise InvalidArgument(f"certificate: expected one PEM certificate, found {len(certs)}")
    return certs[0]


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """PEM of a certificate signing request."""
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr_pem(pem: bytes) -> x509.CertificateSigningRequest:
    """Load a PEM certificate signing request (its signature is checked at issuance)."""
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError:
        raise InvalidArgument("CSR: not a PEM certificate signing request") from None


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# --- the CA ------------------------------------------------------------------------------------


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidArgument("now must be a timezone-aware datetime")


def _require_positive(validity: timedelta) -> None:
    if validity <= timedelta(0):
        raise InvalidArgument(f"validity must be positive, got {validity}")


def _as_spiffe_id(spiffe_id: SpiffeId | str) -> SpiffeId:
    return spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)


def create_ca(
    trust_domain: str, now: datetime, validity: timedelta
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed federation CA for ``trust_domain``: its key and certificate.

    CA with path length 0 (it issues leaves only), key usage certSign and
    cRLSign, a subject key identifier, subject CN
    ``Provex federation CA (<trust domain>)`` and URI SAN ``spiffe://<td>``.
    """
    check_trust_domain(trust_domain)
    _require_aware(now)
    _require_positive(validity)
    key = generate_tls_key()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Provex federation CA ({trust_domain})")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"{SPIFFE_SCHEME}{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def ca_trust_domain(ca_cert: x509.Certificate) -> str:
    """The trust domain named by a federation CA certificate's ``spiffe://<td>`` URI SAN."""
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidArgument("CA certificate has no spiffe://<trust-domain> URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith(SPIFFE_SCHEME):
        raise InvalidArgument("CA certificate must have exactly one spiffe://<trust-domain> URI")
    return check_trust_domain(uris[0][len(SPIFFE_SCHEME) :])


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


# --- CSRs and leaves ---------------------------------------------------------------------------


def make_csr(
    key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId | str
) -> x509.CertificateSigningRequest:
    """A CSR for ``spiffe_id`` (its URI SAN), signed by ``key``."""
    sid = _as_spiffe_id(spiffe_id)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sid.name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(sid))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _check_csr(
    csr: x509.CertificateSigningRequest, spiffe_id: SpiffeId
) -> ec.EllipticCurvePublicKey:
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        signature_ok = False
    if not signature_ok:
        raise InvalidArgument("CSR signature does not verify")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris: list[str] = []
    else:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) > 1:
        raise InvalidArgument(f"CSR claims {len(uris)} URI SANs, at most one allowed")
    if uris and uris[0] != str(spiffe_id):
        raise PermissionDenied(
            f"CSR claims {uris[0]}, but the certificate is being issued for {spiffe_id}"
        )
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidArgument("CSR public key: unsupported algorithm") from None
    return _require_p256(public_key)


def _require_p256(public_key: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise InvalidArgument("TLS public key must be ECDSA P-256")
    return public_key


def _dns_name(name: str) -> str:
    labels = name.split(".")
    if len(name) > _MAX_DNS_NAME_LENGTH or not all(_DNS_LABEL_RE.fullmatch(x) for x in labels):
        raise InvalidArgument(f"DNS name {name!r}: lowercase host name expected")
    return name


def _ip_address(address: IPAddress | str) -> IPAddress:
    if isinstance(address, str):
        try:
            return ipaddress.ip_address(address)
        except ValueError:
            raise InvalidArgument(f"IP address {address!r} is malformed") from None
    return address


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    spiffe_id: SpiffeId | str,
    *,
    now: datetime,
    validity: timedelta,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddress | str] = (),
) -> x509.Certificate:
    """Issue a leaf for the key in ``csr`` with the SPIFFE id the issuer decided on.

    Refuses (InvalidArgument) a CSR whose signature does not verify, with
    more than one URI SAN, or with a key other than P-256; refuses
    (PermissionDenied) a CSR whose URI SAN names another SPIFFE id. Only the
    CSR's public key is used; names come from the arguments.
    """
    sid = _as_spiffe_id(spiffe_id)
    public_key = _check_csr(csr, sid)
    return issue_server_certificate(
        ca_key,
        ca_cert,
        public_key,
        sid,
        now=now,
        validity=validity,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    spiffe_id: SpiffeId | str,
    *,
    now: datetime,
    validity: timedelta,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddress | str] = (),
) -> x509.Certificate:
    """Issue a leaf for a public key without a CSR (e.g. the registry's own server cert).

    The leaf: not a CA, key usage digitalSignature, EKU serverAuth and
    clientAuth, subject CN = the SPIFFE id's name, SAN = the SPIFFE id URI
    plus ``dns_names`` and ``ip_addresses``, a random serial, validity
    ``now - CLOCK_SKEW`` to ``now + validity`` capped at the CA's expiry.
    Raises FailedPrecondition if the CA is not valid at ``now``,
    InvalidArgument for a mismatched CA key, a SPIFFE id of another trust
    domain, a non-P-256 key or a malformed name.
    """
    _require_aware(now)
    _require_positive(validity)
    sid = _as_spiffe_id(spiffe_id)
    key = _require_p256(public_key)
    if ca_key.public_key() != ca_cert.public_key():
        raise InvalidArgument("CA key does not match the CA certificate")
    if not _is_ca(ca_cert):
        raise InvalidArgument("CA certificate is not a CA (BasicConstraints ca=False)")
    trust_domain = ca_trust_domain(ca_cert)
    if sid.trust_domain != trust_domain:
        raise InvalidArgument(f"{sid} is not in the CA's trust domain {trust_domain!r}")
    if now >= ca_cert.not_valid_after_utc:
        raise FailedPrecondition(
            f"federation CA expired at {ca_cert.not_valid_after_utc.isoformat()}"
        )
    if now < ca_cert.not_valid_before_utc:
        raise FailedPrecondition(
            f"federation CA is not valid before {ca_cert.not_valid_before_utc.isoformat()}"
        )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(sid))]
    names.extend(x509.DNSName(_dns_name(name)) for name in dns_names)
    names.extend(x509.IPAddress(_ip_address(address)) for address in ip_addresses)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sid.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def verify_chain(cert: x509.Certificate, ca_cert: x509.Certificate, now: datetime) -> None:
    """Check that ``cert`` is a leaf issued by ``ca_cert`` and both are valid at ``now``.

    Raises VerificationError if the CA certificate is not a CA, the leaf is
    a CA, the issuer name or signature does not match, or either
    certificate is outside its validity window.
    """
    _require_aware(now)
    if not _is_ca(ca_cert):
        raise VerificationError("the trusted certificate is not a CA certificate")
    if _is_ca(cert):
        raise VerificationError("certificate is a CA certificate, not a leaf")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError("certificate is not signed by the federation CA") from None
    for what, c in (("CA certificate", ca_cert), ("certificate", cert)):
        if now < c.not_valid_before_utc:
            raise VerificationError(
                f"{what} is not valid before {c.not_valid_before_utc.isoformat()}"
            )
        if now > c.not_valid_after_utc:
            raise VerificationError(f"{what} expired at {c.not_valid_after_utc.isoformat()}")
