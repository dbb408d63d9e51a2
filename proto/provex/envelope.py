"""DSSE envelopes: sign bytes, ship bytes.

A signed document is serialized once; the envelope carries those exact bytes
(``payload``), a ``payload_type`` saying how to read them, and Ed25519
signatures over the DSSE pre-authentication encoding (PAE) of the two.
Verifiers check signatures over the bytes they received and never
re-serialize anything. A key id is the hex SHA-256 of the raw 32-byte public
key.

The envelope itself travels (and is logged) as DSSE's JSON form with sorted
keys and no insignificant white space, see :meth:`Envelope.to_json`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from binascii import a2b_base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provex.errors import VerificationError

MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of a payload type and payload."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | bytes) -> str:
    """Hex SHA-256 of the raw public key: the id under which signatures name their key."""
    raw = key if isinstance(key, bytes) else raw_public_key(key)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its 32 raw bytes; VerificationError if malformed."""
    if len(raw) != 32:
        raise VerificationError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class Signature:
    """One signature of an envelope: the signing key's id and the 64-byte Ed25519 signature."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: payload bytes, their type, and signatures over PAE(type, payload)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        """DSSE JSON form, sorted keys and compact: the bytes that are shipped and logged."""
        document = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """Parse DSSE JSON strictly; VerificationError on anything malformed.

        The canonical form :meth:`to_json` writes (what the log holds) is read
        by a fast path; anything else goes through :func:`json.loads`. Both
        accept and refuse exactly the same inputs and give the same envelope.
        """
        if len(data) > MAX_ENVELOPE_BYTES:
            raise VerificationError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
        # Fast path: the canonical form (see _CANONICAL_TAIL), strict base64. Strict
        # base64 (binascii's strict_mode) accepts a subset of what _b64decode accepts
        # and decodes it alike, so whatever this path accepts, the general one accepts
        # too, with the same result; anything it does not accept goes that way.
        end = data.find(b'"', len(_PAYLOAD_START)) if data.startswith(_PAYLOAD_START) else -1
        tail = _CANONICAL_TAIL.fullmatch(data, end) if end > 0 else None
        if tail is not None:
            try:
                payload = a2b_base64(memoryview(data)[len(_PAYLOAD_START) : end], strict_mode=True)
                first = Signature(tail[2].decode(), a2b_base64(tail[3], strict_mode=True))
                if not tail[4]:  # The usual single signature.
                    return cls(tail[1].decode(), payload, (first,))
                signatures, more, position = [first], tail[4], 0
                while position < len(more):
                    item = _FURTHER_SIGNATURE.match(more, position)
                    if item is None:
                        break
                    signatures.append(
                        Signature(item[1].decode(), a2b_base64(item[2], strict_mode=True))
                    )
                    position = item.end()
                else:
                    return cls(tail[1].decode(), payload, tuple(signatures))
            except binascii.Error:
                pass
        return _from_any_json(data)


# The canonical JSON form of to_json, with at least one signature. Strings without a
# backslash, a quote or a control character read the same as JSON strings and as bytes;
# payloadType and keyid are printable ASCII here (anything else takes the general path).
_PAYLOAD_START = b'{"payload":"'
_CANONICAL_TAIL = re.compile(
    rb'","payloadType":"([ !#-\[\]-~]+)","signatures":\['
    rb'\{"keyid":"([ !#-\[\]-~]*)","sig":"([A-Za-z0-9+/=]*)"\}(.*)\]\}',
    re.DOTALL,
)
_FURTHER_SIGNATURE = re.compile(rb',\{"keyid":"([ !#-\[\]-~]*)","sig":"([A-Za-z0-9+/=]*)"\}')


def _from_any_json(data: bytes) -> Envelope:
    """Parse DSSE JSON in any form through :func:`json.loads` (see :meth:`Envelope.from_json`)."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VerificationError(f"envelope is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise VerificationError("envelope is not a JSON object")
    payload_type = document.get("payloadType")
    payload_b64 = document.get("payload")
    signatures = document.get("signatures")
    if not isinstance(payload_type, str) or not payload_type:
        raise VerificationError("envelope has no payloadType")
    if not isinstance(payload_b64, str):
        raise VerificationError("envelope has no payload")
    if not isinstance(signatures, list):
        raise VerificationError("envelope has no signatures list")
    parsed: list[Signature] = []
    for item in signatures:
        if not isinstance(item, dict):
            raise VerificationError("envelope signature is not an object")
        keyid, sig = item.get("keyid"), item.get("sig")
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise VerificationError("envelope signature lacks keyid or sig")
        parsed.append(Signature(keyid, _b64decode(sig, "sig")))
    return Envelope(payload_type, _b64decode(payload_b64, "payload"), tuple(parsed))


def _b64decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise VerificationError(f"envelope {field} is not valid base64") from None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its key id worked out once (for signers on a hot path)."""

    key: Ed25519PrivateKey
    keyid: str

    @classmethod
    def of(cls, key: Ed25519PrivateKey) -> SigningKey:
        """``key`` and its key id."""
        return cls(key, key_id(key.public_key()))


def _signing_key(key: Ed25519PrivateKey | SigningKey) -> SigningKey:
    return key if isinstance(key, SigningKey) else SigningKey.of(key)


def sign(
    payload_type: str, payload: bytes, keys: Sequence[Ed25519PrivateKey | SigningKey]
) -> Envelope:
    """Sign ``payload`` with every key in ``keys`` (at least one)."""
    if not keys:
        raise ValueError("sign needs at least one key")
    message = pae(payload_type, payload)
    signatures = tuple(
        Signature(signer.keyid, signer.key.sign(message)) for signer in map(_signing_key, keys)
    )
    return Envelope(payload_type, payload, signatures)


def add_signatures(envelope: Envelope, keys: Iterable[Ed25519PrivateKey]) -> Envelope:
    """The same envelope with further signatures (for example a second party's)."""
    message = pae(envelope.payload_type, envelope.payload)
    extra = tuple(Signature(key_id(k.public_key()), k.sign(message)) for k in keys)
    return Envelope(envelope.payload_type, envelope.payload, envelope.signatures + extra)


def verify(
    envelope: Envelope,
    payload_type: str,
    trusted_keys: Mapping[str, Ed25519PublicKey] | Iterable[Ed25519PublicKey],
    threshold: int = 1,
) -> bytes:
    """Check ``envelope`` and return its payload.

    ``trusted_keys`` maps key ids to keys (or is a plain collection of keys).
    At least ``threshold`` distinct trusted keys must have valid signatures;
    signatures by unknown keys are ignored. VerificationError otherwise, and
    when the payload type is not the expected one.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if envelope.payload_type != payload_type:
        raise VerificationError(
            f"payload type {envelope.payload_type!r} where {payload_type!r} was expected"
        )
    keys: Mapping[str, Ed25519PublicKey]
    # dict and MappingProxyType (what callers pass) come first: no abstract-class check.
    if isinstance(trusted_keys, (dict, MappingProxyType, Mapping)):
        keys = trusted_keys
    else:
        keys = {key_id(k): k for k in trusted_keys}
    message = pae(payload_type, envelope.payload)  # payload_type is the envelope's.
    valid: set[str] = set()
    for signature in envelope.signatures:
        key = keys.get(signature.keyid)
        if key is None or signature.keyid in valid:
            continue
        try:
            key.verify(signature.sig, message)
        except InvalidSignature:
            continue
        if threshold == 1:  # The usual case (one issuer key): no need to look further.
            return envelope.payload
        valid.add(signature.keyid)
    if len(valid) < threshold:
        raise VerificationError(
            f"envelope has {len(valid)} valid signature(s) by trusted keys, {threshold} required"
        )
    return envelope.payload
