"""The node's members: organisations onboarded to this exchange, reported to the registry.

Adding or updating a member validates it exactly as the registry will
(:func:`provex.members.normalize_member`), stores it and queues its report
to the registry in the same transaction (outbox kind ``report_member``), so a
member the operator was told about is never left unreported.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from datetime import datetime
from typing import Any

from node import outbox
from provex import ids
from provex.errors import AlreadyExists, InvalidArgument, NotFound
from provex.members import check_credit_code, normalize_member
from provex.v1 import common_pb2, node_pb2, registry_pb2

SCHEMA = """
-- Members of this node; ``member`` is the serialized provex.v1.Member as reported.
CREATE TABLE members (
    credit_code TEXT PRIMARY KEY,
    member      BLOB NOT NULL,
    revision    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

REPORT_KIND = "report_member"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


def _report_key(node_id: str, credit_code: str, revision: int) -> str:
    return f"member:{node_id}:{credit_code}:{revision}"


def _row(conn: sqlite3.Connection, credit_code: str) -> tuple[registry_pb2.Member, int] | None:
    row = conn.execute(
        "SELECT member, revision FROM members WHERE credit_code = ?", (credit_code,)
    ).fetchone()
    if row is None:
        return None
    return registry_pb2.Member.FromString(bytes(row[0])), int(row[1])


def _store(
    conn: sqlite3.Connection,
    node_id: str,
    member: registry_pb2.Member,
    revision: int,
    now: datetime,
) -> tuple[registry_pb2.Member, node_pb2.OutboxItem]:
    conn.execute(
        "INSERT INTO members (credit_code, member, revision, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (credit_code) DO UPDATE SET member = excluded.member, "
        "revision = excluded.revision, updated_at = excluded.updated_at",
        (member.credit_code, member.SerializeToString(), revision, now.isoformat()),
    )
    request = registry_pb2.ReportMemberRequest(member=member)
    item = outbox.enqueue(
        conn,
        REPORT_KIND,
        _report_key(node_id, member.credit_code, revision),
        request.SerializeToString(),
        now,
    )
    return member, item


def _prepared(node_id: str, member: registry_pb2.Member) -> registry_pb2.Member:
    if member.node_id and member.node_id != node_id:
        raise InvalidArgument(
            f"member.node_id: this node is {node_id}; it cannot add members of {member.node_id}"
        )
    normalized = normalize_member(member)
    normalized.node_id = node_id
    normalized.status = common_pb2.STATUS_ACTIVE
    return normalized


def add_member(
    conn: sqlite3.Connection, node_id: str, member: registry_pb2.Member, now: datetime
) -> tuple[registry_pb2.Member, node_pb2.OutboxItem]:
    """Store a new member and queue its report (in the caller's transaction)."""
    normalized = _prepared(node_id, member)
    if _row(conn, normalized.credit_code) is not None:
        raise AlreadyExists(
            f"member {normalized.credit_code} exists already; use UpdateMember to change it"
        )
    return _store(conn, node_id, normalized, 1, now)


def update_member(
    conn: sqlite3.Connection, node_id: str, member: registry_pb2.Member, now: datetime
) -> tuple[registry_pb2.Member, node_pb2.OutboxItem]:
    """Replace an existing member and queue the new report (in the caller's transaction)."""
    normalized = _prepared(node_id, member)
    found = _row(conn, normalized.credit_code)
    if found is None:
        raise NotFound(f"member {normalized.credit_code} is not a member of this node")
    return _store(conn, node_id, normalized, found[1] + 1, now)


def report_acknowledged(conn: sqlite3.Connection, node_id: str, credit_code: str) -> bool:
    """Whether the registry acknowledged a report of this member (an outbox item done)."""
    prefix = _report_key(node_id, check_credit_code(credit_code), 0)[:-1]
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE kind = ? AND state = 'done' "
        "AND substr(idempotency_key, 1, ?) = ? LIMIT 1",
        (REPORT_KIND, len(prefix), prefix),
    ).fetchone()
    return row is not None


def get_member(conn: sqlite3.Connection, credit_code: str) -> registry_pb2.Member | None:
    """The member with this credit code, or None."""
    found = _row(conn, check_credit_code(credit_code))
    return None if found is None else found[0]


def _decode_token(token: str) -> str:
    try:
        code = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidArgument("page_token is not a token this node gave out") from None
    if not ids.CreditCode.is_valid(code):
        raise InvalidArgument("page_token is not a token this node gave out")
    return code


def list_members(
    conn: sqlite3.Connection, page_size: int, page_token: str
) -> tuple[list[registry_pb2.Member], str]:
    """A page of members by credit code, and the next page's token ("" at the end)."""
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {page_size} is above the maximum {MAX_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    after = _decode_token(page_token) if page_token else ""
    rows: list[Any] = conn.execute(
        "SELECT member FROM members WHERE credit_code > ? ORDER BY credit_code LIMIT ?",
        (after, size + 1),
    ).fetchall()
    members = [registry_pb2.Member.FromString(bytes(row[0])) for row in rows[:size]]
    if len(rows) > size:
        token = base64.urlsafe_b64encode(members[-1].credit_code.encode("ascii")).decode("ascii")
        return members, token
    return members, ""


# ---------------------------------------------------------------- federation-wide freezes

FREEZES_SCHEMA = """
-- Members the registry froze federation-wide (status statements on the member), latest
-- statement per member; ``frozen`` 1 while frozen. Any member, of this node or another.
CREATE TABLE member_freezes (
    credit_code TEXT PRIMARY KEY,
    frozen      INTEGER NOT NULL CHECK (frozen IN (0, 1)),
    reason      TEXT NOT NULL,
    log_index   INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Listings a freeze suspended, so that lifting it lists exactly those again.
CREATE TABLE member_freeze_listings (
    listing_id  TEXT PRIMARY KEY,
    credit_code TEXT NOT NULL
);
CREATE INDEX member_freeze_listings_by_member ON member_freeze_listings (credit_code);
"""
"""Tables of the freeze bookkeeping (migration 2)."""


def frozen_reason(conn: sqlite3.Connection, credit_code: str) -> str | None:
    """Why the member is frozen federation-wide (with the statement's log index), or None."""
    row = conn.execute(
        "SELECT reason, log_index FROM member_freezes WHERE credit_code = ? AND frozen = 1",
        (check_credit_code(credit_code),),
    ).fetchone()
    if row is None:
        return None
    return f"{row[0] or 'no reason given'} (status statement at log index {row[1]})"


def record_freeze(
    conn: sqlite3.Connection,
    credit_code: str,
    *,
    frozen: bool,
    reason: str,
    log_index: int,
    now: datetime,
) -> bool:
    """Record a member status statement; False when it is not newer than the one kept."""
    code = check_credit_code(credit_code)
    row = conn.execute(
        "SELECT log_index FROM member_freezes WHERE credit_code = ?", (code,)
    ).fetchone()
    if row is not None and int(row[0]) >= log_index:
        return False
    conn.execute(
        "INSERT INTO member_freezes (credit_code, frozen, reason, log_index, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (credit_code) DO UPDATE SET frozen = excluded.frozen, "
        "reason = excluded.reason, log_index = excluded.log_index, "
        "updated_at = excluded.updated_at",
        (code, int(frozen), reason, log_index, now.isoformat()),
    )
    return True


def remember_frozen_listings(
    conn: sqlite3.Connection, credit_code: str, listing_ids: list[str]
) -> None:
    """Note the listings a freeze of ``credit_code`` suspended."""
    conn.executemany(
        "INSERT OR IGNORE INTO member_freeze_listings (listing_id, credit_code) VALUES (?, ?)",
        [(listing_id, credit_code) for listing_id in listing_ids],
    )


def take_frozen_listings(conn: sqlite3.Connection, credit_code: str) -> list[str]:
    """The listings a freeze of ``credit_code`` suspended, forgetting them (an unfreeze)."""
    rows = conn.execute(
        "SELECT listing_id FROM member_freeze_listings WHERE credit_code = ? ORDER BY listing_id",
        (credit_code,),
    ).fetchall()
    conn.execute("DELETE FROM member_freeze_listings WHERE credit_code = ?", (credit_code,))
    return [str(row[0]) for row in rows]
