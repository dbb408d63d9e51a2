"""Invitation texts: they round-trip, and every malformation is refused naming the invitation."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from provex.errors import InvalidArgument
from provex.invitation import (
    PREFIX,
    Invitation,
    new_invitation_id,
    new_secret,
    parse_invitation,
    secret_digest,
)

INVITATION = Invitation(
    invitation_id="inv-0123456789abcdef",
    secret=bytes(range(32)),
    node_id="gd-gzde",
    region_code="440100",
    trust_domain="provex.test",
    registry_address="registry.example:7400",
    trust_root_digest="ab" * 32,
    expires_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
)


def encode(document: object) -> str:
    body = json.dumps(document).encode()
    return PREFIX + base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def fields() -> dict[str, str]:
    text = INVITATION.to_text()
    body = text[len(PREFIX) :]
    document: dict[str, str] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return document


def test_round_trip() -> None:
    text = INVITATION.to_text()
    assert text.startswith(PREFIX)
    assert parse_invitation(text) == INVITATION
    assert parse_invitation(f"  {text}\n") == INVITATION


def test_unknown_address_round_trips_empty() -> None:
    invitation = replace(INVITATION, registry_address="")
    assert parse_invitation(invitation.to_text()).registry_address == ""


def test_secrets_and_ids_are_fresh_and_only_their_digest_is_kept() -> None:
    assert len(new_secret()) == 32
    assert new_secret() != new_secret()
    assert new_invitation_id() != new_invitation_id()
    assert INVITATION.secret_sha256 == secret_digest(INVITATION.secret)
    assert len(INVITATION.secret_sha256) == 32


def with_field(name: str, value: object) -> str:
    document: dict[str, object] = dict(fields())
    document[name] = value
    return encode(document)


def without_field(name: str) -> str:
    document = fields()
    del document[name]
    return encode(document)


BAD = {
    "empty": ("", "empty"),
    "wrong prefix": ("provex-invite-v9:abc", "must start with"),
    "not base64": (PREFIX + "!!!", "base64url"),
    "not json": (PREFIX + base64.urlsafe_b64encode(b"nope").decode(), "base64url-encoded JSON"),
    "json list": (encode([1, 2]), "not an object"),
    "unknown field": (with_field("role", "admin"), "unknown field"),
    "missing secret": (without_field("secret"), "'secret' is missing"),
    "number node id": (with_field("node_id", 7), "'node_id' is missing or not a string"),
    "short secret": (with_field("secret", "AAAA"), "secret must be 32 bytes"),
    "bad node id": (with_field("node_id", "GD"), "node id"),
    "bad region": (with_field("region_code", "44"), "region code"),
    "bad trust domain": (with_field("trust_domain", "Bad Domain"), "trust domain"),
    "bad digest": (with_field("trust_root_digest", "xyz"), "trust_root_digest"),
    "bad expiry": (with_field("expires_at", "tomorrow"), "expires_at"),
    "naive expiry": (with_field("expires_at", "2026-11-25T12:00:00"), "time zone"),
    "too long": (PREFIX + "A" * 5000, "longer than"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_malformed_invitations_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        parse_invitation(text)
    assert str(raised.value).startswith("invitation")
