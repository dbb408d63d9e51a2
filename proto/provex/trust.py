"""The trust root: the federation's versioned, signed root of trust (like TUF's root).

A trust root lists the root keys and their threshold, the online issuer key
(certificates, statements, permits), the log key and origin (checkpoints), the
federation CA certificate, and an expiry. It travels as a DSSE envelope whose
payload is a serialized ``provex.v1.TrustRoot``, signed by root keys.

- Version 1 is trusted because its digest was pinned (the invitation carries
  it) and it is signed by a threshold of its own root keys.
- Version N+1 is trusted only if signed by a threshold of version N's root
  keys *and* a threshold of its own, has the same trust domain and a version
  exactly one higher. Versions are never rolled back.
- Only the newest root of a chain has to be unexpired (as in TUF), so an old
  pin can still be walked forward to the current root.

The digest of a trust root (what nodes pin) is the hex SHA-256 of its payload
bytes. Every failure raises :class:`provex.errors.VerificationError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provex import documents
from provex import envelope as dsse
from provex.checkpoint import NoteVerifier
from provex.errors import VerificationError
from provex.timestamps import from_timestamp, to_timestamp
from provex.v1 import trust_pb2

PAYLOAD_TYPE = documents.payload_type_of(trust_pb2.TrustRoot)


@dataclass(frozen=True)
class TrustRoot:
    """The content of one trust root version."""

    version: int
    trust_domain: str
    root_keys: tuple[bytes, ...]
    root_threshold: int
    issuer_key: bytes
    log_key: bytes
    log_origin: str
    ca_certificate_pem: str
    issued_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        _check(self.version >= 1, "trust root version must be at least 1")
        _check(bool(self.trust_domain), "trust root has no trust domain")
        _check(bool(self.log_origin), "trust root has no log origin")
        _check(bool(self.ca_certificate_pem), "trust root has no CA certificate")
        _check(bool(self.root_keys), "trust root lists no root keys")
        _check(len(set(self.root_keys)) == len(self.root_keys), "trust root repeats a root key")
        _check(
            1 <= self.root_threshold <= len(self.root_keys),
            f"root threshold {self.root_threshold} must be between 1 and "
            f"the {len(self.root_keys)} root key(s)",
        )
        for key in (*self.root_keys, self.issuer_key, self.log_key):
            dsse.load_public_key(key)  # VerificationError if not 32 bytes
        _check(self.issued_at < self.expires_at, "trust root expires before it is issued")

    # Derived keys are computed once per instance (cached_property writes the instance
    # dict directly, which a frozen dataclass allows); they take no part in eq or hash.

    @cached_property
    def root_public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """Root keys by key id (read-only)."""
        return MappingProxyType(
            {dsse.key_id(raw): dsse.load_public_key(raw) for raw in self.root_keys}
        )

    @cached_property
    def issuer_public_key(self) -> Ed25519PublicKey:
        """The key that signs certificates, statements and permits."""
        return dsse.load_public_key(self.issuer_key)

    @cached_property
    def issuer_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The issuer key by its key id (read-only): what DSSE verification looks up."""
        return MappingProxyType({dsse.key_id(self.issuer_key): self.issuer_public_key})

    @cached_property
    def log_public_key(self) -> Ed25519PublicKey:
        """The key that signs log checkpoints."""
        return dsse.load_public_key(self.log_key)

    @cached_property
    def log_verifier(self) -> NoteVerifier:
        """The note key that verifies checkpoints: named after the log origin, as is usual."""
        return NoteVerifier.from_public_key(self.log_origin, self.log_public_key)

    def to_proto(self) -> trust_pb2.TrustRoot:
        """The wire form of this trust root."""
        return trust_pb2.TrustRoot(
            version=self.version,
            trust_domain=self.trust_domain,
            root_keys=list(self.root_keys),
            root_threshold=self.root_threshold,
            issuer_key=self.issuer_key,
            log_key=self.log_key,
            log_origin=self.log_origin,
            ca_certificate_pem=self.ca_certificate_pem,
            issued_at=to_timestamp(self.issued_at),
            expires_at=to_timestamp(self.expires_at),
        )

    @classmethod
    def from_proto(cls, message: trust_pb2.TrustRoot) -> TrustRoot:
        """Validate a wire trust root; VerificationError when a field is missing or bad."""
        _check(message.HasField("issued_at"), "trust root has no issued_at")
        _check(message.HasField("expires_at"), "trust root has no expires_at")
        return cls(
            version=message.version,
            trust_domain=message.trust_domain,
            root_keys=tuple(message.root_keys),
            root_threshold=message.root_threshold,
            issuer_key=message.issuer_key,
            log_key=message.log_key,
            log_origin=message.log_origin,
            ca_certificate_pem=message.ca_certificate_pem,
            issued_at=from_timestamp(message.issued_at),
            expires_at=from_timestamp(message.expires_at),
        )


@dataclass(frozen=True)
class SignedTrustRoot:
    """A trust root together with the exact envelope bytes it came in."""

    root: TrustRoot
    envelope: bytes
    payload: bytes

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the payload: what an invitation carries and a node pins."""
        return hashlib.sha256(self.payload).hexdigest()


def sign_trust_root(root: TrustRoot, keys: Sequence[Ed25519PrivateKey]) -> bytes:
    """Envelope bytes (DSSE JSON) of ``root`` signed by ``keys``.

    For version N+1 pass a threshold of version N's root keys and of its own.
    """
    return documents.sign_document(root.to_proto(), keys).to_json()


def digest_of(envelope_bytes: bytes) -> str:
    """The pin digest of a trust-root envelope, without verifying it."""
    return hashlib.sha256(dsse.Envelope.from_json(envelope_bytes).payload).hexdigest()


def _open(envelope_bytes: bytes) -> tuple[dsse.Envelope, SignedTrustRoot]:
    envelope = dsse.Envelope.from_json(envelope_bytes)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"payload type {envelope.payload_type!r} is not a trust root")
    message = documents.decode_payload(envelope.payload, trust_pb2.TrustRoot)
    return envelope, SignedTrustRoot(
        TrustRoot.from_proto(message), envelope_bytes, envelope.payload
    )


def decode_trust_root(envelope_bytes: bytes) -> TrustRoot:
    """The content of a trust-root envelope WITHOUT checking its signatures.

    Only for a party's own files (the registry reading its state directory);
    everyone else uses :func:`load_trust_root` or :func:`verify_chain`.
    """
    return _open(envelope_bytes)[1].root


def _require_threshold(envelope: dsse.Envelope, signer: TrustRoot, what: str) -> None:
    try:
        dsse.verify(envelope, PAYLOAD_TYPE, signer.root_public_keys, signer.root_threshold)
    except VerificationError as error:
        raise VerificationError(
            f"{what}: not signed by {signer.root_threshold} of version {signer.version}'s "
            f"root keys ({error})"
        ) from None


def _require_unexpired(root: TrustRoot, now: datetime) -> None:
    if now >= root.expires_at:
        raise VerificationError(
            f"trust root version {root.version} expired at {root.expires_at.isoformat()}"
        )


def _pinned(envelope_bytes: bytes, pinned_digest: str) -> SignedTrustRoot:
    envelope, signed = _open(envelope_bytes)
    if signed.digest != pinned_digest.lower():
        raise VerificationError(
            f"trust root digest {signed.digest} does not match the pinned {pinned_digest}"
        )
    _require_threshold(envelope, signed.root, f"trust root version {signed.root.version}")
    return signed


def load_trust_root(envelope_bytes: bytes, pinned_digest: str, now: datetime) -> SignedTrustRoot:
    """Trust a root because its digest is pinned and it is signed by its own threshold."""
    signed = _pinned(envelope_bytes, pinned_digest)
    _require_unexpired(signed.root, now)
    return signed


def load_pinned_chain(
    pinned_envelope: bytes, pinned_digest: str, newer: Iterable[bytes], now: datetime
) -> SignedTrustRoot:
    """The pinned version and every newer one in order, verified; the newest must be unexpired.

    The pinned version may have expired when newer ones follow it: a node
    pinned to version 1 walks forward to the current version after version
    1's year is over (a rotation, ``provex-registry trust rotate``).
    """
    return verify_chain(_pinned(pinned_envelope, pinned_digest), newer, now)


def verify_update(trusted: SignedTrustRoot, envelope_bytes: bytes) -> SignedTrustRoot:
    """Verify the next version against the trusted one (expiry is checked by the caller)."""
    envelope, signed = _open(envelope_bytes)
    new, old = signed.root, trusted.root
    if new.version <= old.version:
        raise VerificationError(
            f"trust root version {new.version} would roll back from version {old.version}"
        )
    if new.version != old.version + 1:
        raise VerificationError(
            f"trust root version {new.version} skips versions after {old.version}"
        )
    if new.trust_domain != old.trust_domain:
        raise VerificationError(
            f"trust root version {new.version} changes the trust domain "
            f"from {old.trust_domain!r} to {new.trust_domain!r}"
        )
    _require_threshold(envelope, old, f"trust root version {new.version}")
    _require_threshold(envelope, new, f"trust root version {new.version}")
    return signed


def verify_chain(
    trusted: SignedTrustRoot, newer: Iterable[bytes], now: datetime
) -> SignedTrustRoot:
    """Walk from ``trusted`` through each newer version in order; the last must be unexpired."""
    current = trusted
    for envelope_bytes in newer:
        current = verify_update(current, envelope_bytes)
    _require_unexpired(current.root, now)
    return current


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise VerificationError(message)
