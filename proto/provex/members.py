"""Members (organisations) as every party validates them: credit code, name, region, officer.

A node checks a member before it stores and reports it; the registry checks
the report again with the same function, so both refuse the same things with
the same messages. :func:`normalize_member` returns the canonical form
(upper-case credit code, trimmed name, country defaulting to CN) or raises
:class:`~provex.errors.InvalidArgument` naming the field (``member.name``...).
"""

from __future__ import annotations

import re

from provex import ids
from provex.errors import InvalidArgument
from provex.v1 import registry_pb2

MAX_NAME = 200
MAX_OFFICER_FIELD = 200
_COUNTRY = re.compile(r"[A-Z]{2}")

__all__ = ("check_credit_code", "check_mainland_region", "check_name", "normalize_member")


def check_credit_code(text: str, field: str = "credit_code") -> str:
    """The canonical form of a credit code; InvalidArgument naming ``field``."""
    if not text.strip():
        raise InvalidArgument(f"{field} is required (18-character Unified Social Credit Code)")
    try:
        return ids.CreditCode.parse(text).code
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def check_name(name: str, field: str = "display_name") -> str:
    """A display name: non-empty after trimming, at most 200 characters."""
    name = name.strip()
    if not name:
        raise InvalidArgument(f"{field} is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"{field} is {len(name)} characters, at most {MAX_NAME}")
    return name


def check_mainland_region(code: str, field: str = "region_code") -> str:
    """A known mainland GB/T 2260 region code; InvalidArgument naming ``field``."""
    if not code:
        raise InvalidArgument(f"{field} is required (GB/T 2260, e.g. 440100)")
    try:
        found = ids.region(code)
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None
    if not found.mainland:
        raise InvalidArgument(f"{field}: {code} ({found.name_en}) is not a mainland region")
    return code


def _check_officer(officer: registry_pb2.SecurityOfficer) -> None:
    if officer == registry_pb2.SecurityOfficer():
        return
    for name in ("name", "title", "phone", "email"):
        value: str = getattr(officer, name)
        if len(value) > MAX_OFFICER_FIELD:
            raise InvalidArgument(
                f"member.security_officer.{name} is {len(value)} characters, "
                f"at most {MAX_OFFICER_FIELD}"
            )
    if not officer.name.strip():
        raise InvalidArgument("member.security_officer.name is required when an officer is given")
    if not officer.phone.strip() and not officer.email.strip():
        raise InvalidArgument(
            "member.security_officer needs a phone or an email so that supervisors can reach them"
        )
    if officer.email and "@" not in officer.email:
        raise InvalidArgument(f"member.security_officer.email {officer.email!r} is not an address")


def normalize_member(member: registry_pb2.Member) -> registry_pb2.Member:
    """A validated copy of ``member`` in canonical form (node_id and status untouched)."""
    normalized = registry_pb2.Member()
    normalized.CopyFrom(member)
    normalized.credit_code = check_credit_code(member.credit_code, "member.credit_code")
    normalized.name = check_name(member.name, "member.name")
    normalized.region_code = check_mainland_region(member.region_code, "member.region_code")
    normalized.country = member.country or "CN"
    if not _COUNTRY.fullmatch(normalized.country):
        raise InvalidArgument(
            f"member.country must be an ISO 3166-1 alpha-2 code such as CN, got {member.country!r}"
        )
    _check_officer(member.security_officer)
    return normalized
