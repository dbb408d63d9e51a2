"""Enrollment invitations: the one opaque text an admin hands to a node's operator.

An invitation is ``provex-invite-v1:<base64url(JSON)>`` (no padding). The JSON
object holds the invitation id, a 32-byte random secret (base64url), the node
id and region code it is for, the trust domain, the registry's public address
(empty when it was not known; the operator is then told separately), the hex
SHA-256 of the trust root the node must pin (``provex.trust.digest_of``) and
the expiry (RFC 3339, UTC).

The registry stores only :func:`secret_digest` of the secret. A node parses
the text with :func:`parse_invitation`, dials ``registry_address``, checks
that the trust root it receives has ``trust_root_digest``, and enrolls with the
whole text. Every malformation raises :class:`provex.errors.InvalidArgument`
naming the field ``invitation``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from provex.errors import InvalidArgument
from provex.identity import check_trust_domain
from provex.ids import validate_node_id

PREFIX = "provex-invite-v1:"
SECRET_BYTES = 32
MAX_TEXT_LENGTH = 4096

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_INVITATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REGION_CODE = re.compile(r"[0-9]{6}")
_FIELDS = (
    "invitation_id",
    "secret",
    "node_id",
    "region_code",
    "trust_domain",
    "registry_address",
    "trust_root_digest",
    "expires_at",
)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def secret_digest(secret: bytes) -> bytes:
    """SHA-256 of an invitation secret: all the registry keeps of it."""
    return hashlib.sha256(secret).digest()


def new_secret() -> bytes:
    """A fresh random invitation secret."""
    return secrets.token_bytes(SECRET_BYTES)


def new_invitation_id() -> str:
    """A fresh random invitation id."""
    return "inv-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Invitation:
    """The content of an invitation text."""

    invitation_id: str
    secret: bytes
    node_id: str
    region_code: str
    trust_domain: str
    registry_address: str
    trust_root_digest: str
    expires_at: datetime

    def __post_init__(self) -> None:
        if not _INVITATION_ID.fullmatch(self.invitation_id):
            _bad(f"invitation id {self.invitation_id!r} is malformed")
        if len(self.secret) != SECRET_BYTES:
            _bad(f"secret must be {SECRET_BYTES} bytes, got {len(self.secret)}")
        try:
            validate_node_id(self.node_id)
            check_trust_domain(self.trust_domain)
        except InvalidArgument as error:
            _bad(str(error))
        if not _REGION_CODE.fullmatch(self.region_code):
            _bad(f"region code {self.region_code!r} must be 6 digits")
        if not _HEX_DIGEST.fullmatch(self.trust_root_digest):
            _bad("trust_root_digest must be 64 lower-case hex characters")
        if self.expires_at.tzinfo is None:
            _bad("expires_at must be timezone-aware")

    @property
    def secret_sha256(self) -> bytes:
        """What the registry stores for this invitation's secret."""
        return secret_digest(self.secret)

    def to_text(self) -> str:
        """The opaque text handed to the node's operator."""
        document: dict[str, str] = {
            "invitation_id": self.invitation_id,
            "secret": _b64encode(self.secret),
            "node_id": self.node_id,
            "region_code": self.region_code,
            "trust_domain": self.trust_domain,
            "registry_address": self.registry_address,
            "trust_root_digest": self.trust_root_digest,
            "expires_at": self.expires_at.astimezone(UTC).isoformat(),
        }
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return PREFIX + _b64encode(body)


def _bad(reason: str) -> None:
    raise InvalidArgument(f"invitation: {reason}")


def _string(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(f"invitation: field {name!r} is missing or not a string")
    return value


def parse_invitation(text: str) -> Invitation:
    """Read an invitation text; InvalidArgument (naming ``invitation``) if malformed.

    Surrounding white space is ignored (operators paste it). Parsing does not
    prove the invitation is genuine: only the registry can check its secret.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("invitation: empty; paste the text the registry admin gave you")
    text = text.strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidArgument(f"invitation: longer than {MAX_TEXT_LENGTH} characters")
    if not text.startswith(PREFIX):
        raise InvalidArgument(f"invitation: must start with {PREFIX!r}")
    try:
        document = json.loads(_b64decode(text[len(PREFIX) :]).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise InvalidArgument("invitation: not valid base64url-encoded JSON (truncated?)") from None
    if not isinstance(document, dict):
        raise InvalidArgument("invitation: the encoded JSON is not an object")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise InvalidArgument(f"invitation: unknown field(s) {', '.join(unknown)}")
    values = {name: _string(document, name) for name in _FIELDS}
    try:
        secret = _b64decode(values["secret"])
    except (binascii.Error, ValueError):
        raise InvalidArgument("invitation: secret is not base64url") from None
    try:
        expires_at = datetime.fromisoformat(values["expires_at"])
    except ValueError:
        raise InvalidArgument("invitation: expires_at is not an RFC 3339 time") from None
    if expires_at.tzinfo is None:
        raise InvalidArgument("invitation: expires_at has no time zone")
    return Invitation(
        invitation_id=values["invitation_id"],
        secret=secret,
        node_id=values["node_id"],
        region_code=values["region_code"],
        trust_domain=values["trust_domain"],
        registry_address=values["registry_address"],
        trust_root_digest=values["trust_root_digest"],
        expires_at=expires_at.astimezone(UTC),
    )
