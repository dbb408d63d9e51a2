"""What every registry servicer shares: the context type, caller identification, UNIMPLEMENTED."""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc

from provex.errors import PermissionDenied
from registry.authz import Caller, Role, identify, peer_certificate_fingerprint
from registry.db import Database

Context = grpc.aio.ServicerContext[Any, Any]


async def not_offered(context: Context, rpc: str) -> Any:
    """Answer UNIMPLEMENTED for an RPC of the contract this registry does not offer yet."""
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is part of the v1 contract but not offered yet"
    )


class Authorizer:
    """Identifies callers from their TLS certificate, the admins table and the nodes table.

    A node caller must be enrolled and active, and present its current
    certificate (the one it last enrolled or renewed with): a revoked node, or
    a node using a certificate it has since replaced, is refused on every RPC.
    """

    def __init__(self, reader_db: Database, trust_domain: str) -> None:
        self._db = reader_db
        self._trust_domain = trust_domain

    async def _admin_role(self, name: str) -> Role | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT role FROM admins WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        role = await self._db.run(read)
        return None if role is None else Role(role)

    async def _node_state(self, node_id: str) -> tuple[str, str] | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT status, certificate_fingerprint FROM nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        return await self._db.run(read)

    async def caller(self, context: Context) -> Caller:
        """The caller of this RPC (anonymous, a node, an auditor or an admin)."""
        caller = await identify(context, self._trust_domain, self._admin_role)
        if caller.role is Role.NODE:
            state = await self._node_state(caller.name)
            if state is None:
                raise PermissionDenied(f"node {caller.name} is not enrolled")
            status, fingerprint = state
            if status != "active":
                raise PermissionDenied(f"node {caller.name} is {status}")
            if peer_certificate_fingerprint(context) != fingerprint:
                raise PermissionDenied(
                    f"node {caller.name} presented a certificate that is no longer current "
                    "(it was renewed); use the latest certificate"
                )
        return caller
