"""The trust root: pinning, chains of versions, thresholds, rollback and expiry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import documents, trust
from provex import envelope as dsse
from provex.errors import VerificationError
from provex.v1 import dataset_pb2

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OLD_ROOT_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([10 + i]) * 32) for i in range(3)]
NEW_ROOT_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([20 + i]) * 32) for i in range(3)]
ISSUER = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
LOG = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)


def raw(key: Ed25519PrivateKey) -> bytes:
    return dsse.raw_public_key(key.public_key())


def make_root(
    version: int, root_keys: list[Ed25519PrivateKey], threshold: int = 2
) -> trust.TrustRoot:
    return trust.TrustRoot(
        version=version,
        trust_domain="provex.example",
        root_keys=tuple(raw(k) for k in root_keys),
        root_threshold=threshold,
        issuer_key=raw(ISSUER),
        log_key=raw(LOG),
        log_origin="provex.example/log",
        ca_certificate_pem="-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
        issued_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=365),
    )


V1 = make_root(1, OLD_ROOT_KEYS)
V1_BYTES = trust.sign_trust_root(V1, OLD_ROOT_KEYS[:2])
V2 = make_root(2, NEW_ROOT_KEYS)  # key rotation: every root key replaced
V2_BYTES = trust.sign_trust_root(V2, OLD_ROOT_KEYS[1:] + NEW_ROOT_KEYS[:2])


def pinned_v1() -> trust.SignedTrustRoot:
    return trust.load_trust_root(V1_BYTES, trust.digest_of(V1_BYTES), NOW)


def test_round_trip_through_proto() -> None:
    assert trust.TrustRoot.from_proto(V1.to_proto()) == V1


def test_pinned_root_loads_and_its_digest_is_over_the_payload() -> None:
    signed = pinned_v1()
    assert signed.root == V1
    assert signed.digest == trust.digest_of(V1_BYTES)
    assert signed.root.issuer_public_key.public_bytes_raw() == raw(ISSUER)
    assert signed.root.log_public_key.public_bytes_raw() == raw(LOG)
    assert set(signed.root.root_public_keys) == {dsse.key_id(raw(k)) for k in OLD_ROOT_KEYS}


def test_chain_with_full_key_rotation_verifies() -> None:
    newest = trust.verify_chain(pinned_v1(), [V2_BYTES], NOW)
    assert newest.root == V2
    v3 = make_root(3, NEW_ROOT_KEYS, threshold=3)
    v3_bytes = trust.sign_trust_root(v3, NEW_ROOT_KEYS)
    assert trust.verify_chain(pinned_v1(), [V2_BYTES, v3_bytes], NOW).root == v3


def test_only_the_newest_root_must_be_unexpired() -> None:
    expired_v1 = replace(
        V1, issued_at=NOW - timedelta(days=400), expires_at=NOW - timedelta(days=1)
    )
    expired_bytes = trust.sign_trust_root(expired_v1, OLD_ROOT_KEYS[:2])
    with pytest.raises(VerificationError, match="expired"):
        trust.load_trust_root(expired_bytes, trust.digest_of(expired_bytes), NOW)
    old = trust.load_trust_root(
        expired_bytes, trust.digest_of(expired_bytes), NOW - timedelta(days=2)
    )
    assert trust.verify_chain(old, [V2_BYTES], NOW).root.version == 2


def sign_v2(root: trust.TrustRoot, keys: list[Ed25519PrivateKey]) -> bytes:
    return trust.sign_trust_root(root, keys)


CHAIN_FAILURES: dict[str, Callable[[], list[bytes]]] = {
    "only one old root key signed": lambda: [sign_v2(V2, OLD_ROOT_KEYS[:1] + NEW_ROOT_KEYS[:2])],
    "no new root key signed": lambda: [sign_v2(V2, OLD_ROOT_KEYS[:2])],
    "only one new root key signed": lambda: [sign_v2(V2, OLD_ROOT_KEYS[:2] + NEW_ROOT_KEYS[:1])],
    "signed by the issuer key instead": lambda: [sign_v2(V2, [ISSUER, LOG])],
    "rollback to version 1": lambda: [V1_BYTES],
    "version skipped": lambda: [
        sign_v2(make_root(3, NEW_ROOT_KEYS), OLD_ROOT_KEYS + NEW_ROOT_KEYS)
    ],
    "trust domain changed": lambda: [
        sign_v2(replace(V2, trust_domain="evil.example"), OLD_ROOT_KEYS + NEW_ROOT_KEYS)
    ],
    "newest expired": lambda: [
        sign_v2(
            replace(V2, issued_at=NOW - timedelta(days=9), expires_at=NOW - timedelta(days=1)),
            OLD_ROOT_KEYS + NEW_ROOT_KEYS,
        )
    ],
    "not a trust root payload": lambda: [
        documents.sign_document(dataset_pb2.DatasetCertificate(), OLD_ROOT_KEYS).to_json()
    ],
    "payload bytes are garbage": lambda: [
        dsse.sign(trust.PAYLOAD_TYPE, b"\xff\xff\xff", OLD_ROOT_KEYS + NEW_ROOT_KEYS).to_json()
    ],
    "envelope is not JSON": lambda: [b"not json"],
    "second update of a valid chain is a replay": lambda: [V2_BYTES, V2_BYTES],
}


@pytest.mark.parametrize("newer", CHAIN_FAILURES.values(), ids=CHAIN_FAILURES.keys())
def test_chain_failures_are_rejected(newer: Callable[[], list[bytes]]) -> None:
    with pytest.raises(VerificationError):
        trust.verify_chain(pinned_v1(), newer(), NOW)


def test_pin_mismatch_and_insufficient_self_signatures_are_rejected() -> None:
    with pytest.raises(VerificationError, match="does not match the pinned"):
        trust.load_trust_root(V1_BYTES, "00" * 32, NOW)
    weak = trust.sign_trust_root(V1, OLD_ROOT_KEYS[:1])
    with pytest.raises(VerificationError, match="not signed by 2"):
        trust.load_trust_root(weak, trust.digest_of(weak), NOW)


INVALID_ROOTS: dict[str, dict[str, object]] = {
    "version 0": {"version": 0},
    "no trust domain": {"trust_domain": ""},
    "no log origin": {"log_origin": ""},
    "no CA": {"ca_certificate_pem": ""},
    "no root keys": {"root_keys": ()},
    "repeated root key": {"root_keys": (raw(ISSUER), raw(ISSUER))},
    "threshold 0": {"root_threshold": 0},
    "threshold above key count": {"root_threshold": 4},
    "short issuer key": {"issuer_key": b"\x00" * 31},
    "short log key": {"log_key": b""},
    "expires before issued": {"expires_at": NOW - timedelta(days=2)},
}


@pytest.mark.parametrize("changes", INVALID_ROOTS.values(), ids=INVALID_ROOTS.keys())
def test_invalid_roots_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(VerificationError):
        replace(V1, **changes)  # type: ignore[arg-type]


def test_missing_timestamps_in_proto_are_refused() -> None:
    message = V1.to_proto()
    message.ClearField("expires_at")
    with pytest.raises(VerificationError, match="expires_at"):
        trust.TrustRoot.from_proto(message)


def test_derived_keys_are_worked_out_once_and_leave_equality_alone() -> None:
    root = make_root(1, OLD_ROOT_KEYS)
    assert root.log_verifier is root.log_verifier
    assert root.issuer_keys is root.issuer_keys
    assert root.root_public_keys is root.root_public_keys
    assert dict(root.issuer_keys) == {dsse.key_id(raw(ISSUER)): root.issuer_public_key}
    assert set(root.root_public_keys) == {dsse.key_id(raw(k)) for k in OLD_ROOT_KEYS}
    assert root.log_verifier.public_key == raw(LOG)
    assert root.log_verifier.name == root.log_origin
    fresh = make_root(1, OLD_ROOT_KEYS)
    assert root == fresh and hash(root) == hash(fresh)  # cached keys take no part
    with pytest.raises(TypeError):
        root.issuer_keys["another"] = root.issuer_public_key  # type: ignore[index]
    moved = replace(root, log_key=raw(ISSUER), log_origin="provex.example/other")
    assert moved.log_verifier.public_key == raw(ISSUER)
    assert moved.log_verifier.name == "provex.example/other"
