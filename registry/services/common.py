"""What every registry servicer shares: the context type, caller identification, UNIMPLEMENTED."""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc

from registry.authz import Caller, Role, identify
from registry.db import Database

Context = grpc.aio.ServicerContext[Any, Any]


async def not_offered(context: Context, rpc: str) -> Any:
    """Answer UNIMPLEMENTED for an RPC of the contract this registry does not offer yet."""
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is part of the v1 contract but not offered yet"
    )


class Authorizer:
    """Identifies callers from their TLS certificate and the admins table."""

    def __init__(self, reader_db: Database, trust_domain: str) -> None:
        self._db = reader_db
        self._trust_domain = trust_domain

    async def _admin_role(self, name: str) -> Role | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT role FROM admins WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        role = await self._db.run(read)
        return None if role is None else Role(role)

    async def caller(self, context: Context) -> Caller:
        """The caller of this RPC (anonymous, a node, an auditor or an admin)."""
        return await identify(context, self._trust_domain, self._admin_role)
