"""Members: the organisations each node reports, identified by their credit code (USCC).

A node reports (creates or updates) only its own members; a credit code
belongs to one node, and a report for a code another node owns is refused.
Nodes read only their own members; auditors and admins read all. Reports are
validated field by field, and every refusal names the field
(``member.credit_code``, ``member.region_code``, ...).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from provex import ids
from provex.errors import InvalidArgument, NotFound, PermissionDenied
from provex.members import check_credit_code, normalize_member
from provex.v1 import common_pb2, registry_pb2
from registry.authz import Caller, Role, require_in_scope, scope_prefix
from registry.db import Database
from registry.enrollment import check_region_prefix

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
_STATUS = {"active": common_pb2.STATUS_ACTIVE, "frozen": common_pb2.STATUS_SUSPENDED}


@dataclass(frozen=True)
class MemberRecord:
    """One row of the ``members`` table."""

    credit_code: str
    node_id: str
    name: str
    region_code: str
    country: str
    security_officer: bytes
    status: str

    def to_proto(self) -> registry_pb2.Member:
        """The wire form of this member."""
        member = registry_pb2.Member(
            credit_code=self.credit_code,
            name=self.name,
            region_code=self.region_code,
            node_id=self.node_id,
            status=_STATUS[self.status],
            country=self.country,
        )
        if self.security_officer:
            member.security_officer.ParseFromString(self.security_officer)
        return member


_COLUMNS = "credit_code, node_id, name, region_code, country, security_officer, status"


def _member(row: Any) -> MemberRecord:
    return MemberRecord(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), bytes(row[5]), str(row[6])
    )


def _read(conn: sqlite3.Connection, credit_code: str) -> MemberRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM members WHERE credit_code = ?", (credit_code,)
    ).fetchone()
    return None if row is None else _member(row)


def _encode_token(credit_code: str) -> str:
    return base64.urlsafe_b64encode(credit_code.encode("ascii")).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        code = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidArgument("page_token is not a token this registry gave out") from None
    if not ids.CreditCode.is_valid(code):
        raise InvalidArgument("page_token is not a token this registry gave out")
    return code


class MemberBook:
    """Members reported by nodes: report, get, list."""

    def __init__(self, writer: Database, reader: Database) -> None:
        self._writer = writer
        self._reader = reader

    async def report(
        self, node_id: str, member: registry_pb2.Member, now: datetime
    ) -> MemberRecord:
        """Create or update a member of ``node_id`` (the calling node)."""
        if member.node_id and member.node_id != node_id:
            raise PermissionDenied(
                f"node {node_id} may report only its own members, not members of node "
                f"{member.node_id}"
            )
        normalized = normalize_member(member)
        credit_code, name = normalized.credit_code, normalized.name
        region_code, country = normalized.region_code, normalized.country
        officer = (
            normalized.security_officer.SerializeToString()
            if normalized.HasField("security_officer")
            and normalized.security_officer != registry_pb2.SecurityOfficer()
            else b""
        )

        def upsert(conn: sqlite3.Connection) -> MemberRecord:
            existing = _read(conn, credit_code)
            if existing is not None and existing.node_id != node_id:
                raise PermissionDenied(
                    f"member {credit_code} belongs to node {existing.node_id}, not {node_id}"
                )
            conn.execute(
                "INSERT INTO members (credit_code, node_id, name, region_code, country, "
                "security_officer, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?) "
                "ON CONFLICT (credit_code) DO UPDATE SET name = excluded.name, "
                "region_code = excluded.region_code, country = excluded.country, "
                "security_officer = excluded.security_officer, updated_at = excluded.updated_at",
                (credit_code, node_id, name, region_code, country, officer, now.isoformat()),
            )
            stored = _read(conn, credit_code)
            assert stored is not None
            return stored

        return await self._writer.transaction(upsert)

    async def get(self, caller: Caller, credit_code: str) -> MemberRecord:
        """One member; a node sees only its own."""
        code = check_credit_code(credit_code)
        member = await self._reader.run(lambda conn: _read(conn, code))
        if member is None:
            raise NotFound(f"member {code} is not registered")
        if caller.role is Role.NODE and member.node_id != caller.name:
            raise PermissionDenied(
                f"member {code} belongs to another node; node {caller.name} sees only its own"
            )
        require_in_scope(caller, member.region_code, f"member {code}")
        return member

    async def list(
        self, caller: Caller, node_id: str, region_prefix: str, page_size: int, page_token: str
    ) -> tuple[list[MemberRecord], str]:
        """A page of members by credit code, and the token of the next page ("" at the end)."""
        if caller.role is Role.NODE:
            if node_id and node_id != caller.name:
                raise PermissionDenied(
                    f"node {caller.name} may list only its own members, not those of {node_id}"
                )
            node_id = caller.name
        check_region_prefix(region_prefix)
        region_prefix = scope_prefix(caller, region_prefix, "ListMembers")
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size {page_size} is above the maximum {MAX_PAGE_SIZE}")
        size = page_size or DEFAULT_PAGE_SIZE
        after = _decode_token(page_token) if page_token else ""
        sql = f"SELECT {_COLUMNS} FROM members WHERE credit_code > ? AND region_code LIKE ?"
        params: list[object] = [after, region_prefix + "%"]
        if node_id:
            sql += " AND node_id = ?"
            params.append(node_id)
        sql += " ORDER BY credit_code LIMIT ?"
        params.append(size + 1)

        def read(conn: sqlite3.Connection) -> list[MemberRecord]:
            return [_member(row) for row in conn.execute(sql, params)]

        rows = await self._reader.run(read)
        if len(rows) > size:
            rows = rows[:size]
            return rows, _encode_token(rows[-1].credit_code)
        return rows, ""
