"""What every registry servicer shares: the context type, caller identification, UNIMPLEMENTED."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import grpc

from provex.errors import PermissionDenied, Unauthenticated
from provex.identity import AUTH_CONTEXT_PEM_CERT, AuthContextSource, SpiffeId, peer_identity
from registry.authz import Caller, Role, identify, peer_certificate_fingerprint
from registry.db import Database

Context = grpc.aio.ServicerContext[Any, Any]


async def not_offered(context: Context, rpc: str) -> Any:
    """Answer UNIMPLEMENTED for an RPC of the contract this registry does not offer yet."""
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is part of the v1 contract but not offered yet"
    )


_PEER_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class _Peer:
    """What one peer certificate says: its SPIFFE id (or why it has none) and its fingerprint."""

    spiffe_id: SpiffeId | None
    refusal: Unauthenticated | None
    fingerprint: str | None


class Authorizer:
    """Identifies callers from their TLS certificate, the admins table and the nodes table.

    A node caller must be enrolled and active, and present its current
    certificate (the one it last enrolled or renewed with): a revoked node, or
    a node using a certificate it has since replaced, is refused on every RPC.

    Two caches keep the hot path off the database: what each peer certificate
    says (it never changes), and each node's status and current fingerprint,
    which :meth:`node_changed` drops whenever enrollment, renewal or
    revocation commits a change (one registry process writes the nodes table).
    """

    def __init__(self, reader_db: Database, trust_domain: str) -> None:
        self._db = reader_db
        self._trust_domain = trust_domain
        self._peers: dict[bytes, _Peer] = {}
        self._nodes: dict[str, tuple[str, str]] = {}
        self._node_generation = 0

    def node_changed(self, node_id: str) -> None:
        """Forget the cached state of ``node_id`` (called after its row changed)."""
        self._node_generation += 1
        self._nodes.pop(node_id, None)

    async def _admin_role(self, name: str) -> tuple[Role, str] | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute("SELECT role, region FROM admins WHERE name = ?", (name,)).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        found = await self._db.run(read)
        return None if found is None else (Role(found[0]), found[1])

    async def _node_state(self, node_id: str) -> tuple[str, str] | None:
        cached = self._nodes.get(node_id)
        if cached is not None:
            return cached

        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT status, certificate_fingerprint FROM nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        generation = self._node_generation
        state = await self._db.run(read)
        # A change committed while we read may have been forgotten already: keep nothing then.
        if state is not None and generation == self._node_generation:
            if len(self._nodes) >= _PEER_CACHE_LIMIT:
                self._nodes.clear()
            self._nodes[node_id] = state
        return state

    def _peer(self, context: AuthContextSource) -> _Peer:
        pems = list(context.auth_context().get(AUTH_CONTEXT_PEM_CERT, ()))
        if len(pems) != 1:
            # None: anonymous; several: peer_identity explains the refusal.
            return _Peer(peer_identity(context, self._trust_domain), None, None)
        pem = pems[0]
        peer = self._peers.get(pem)
        if peer is None:
            try:
                spiffe_id, refusal = peer_identity(context, self._trust_domain), None
            except Unauthenticated as error:
                spiffe_id, refusal = None, error
            peer = _Peer(spiffe_id, refusal, peer_certificate_fingerprint(context))
            if len(self._peers) >= _PEER_CACHE_LIMIT:
                self._peers.clear()
            self._peers[pem] = peer
        return peer

    async def check(self, context: Context) -> None:
        """Refuse the call of a revoked node, a replaced certificate or an unknown admin."""
        await self.caller(context)

    async def caller(self, context: AuthContextSource) -> Caller:
        """The caller of this RPC (anonymous, a node, an auditor or an admin).

        ``context`` is a gRPC call's, or anything giving the TLS peer certificate
        the same way (the console's HTTPS requests, :mod:`registry.console`).
        """
        peer = self._peer(context)
        if peer.refusal is not None:
            raise Unauthenticated(str(peer.refusal))
        caller = await identify(peer.spiffe_id, self._admin_role)
        if caller.role is Role.NODE:
            state = await self._node_state(caller.name)
            if state is None:
                raise PermissionDenied(f"node {caller.name} is not enrolled")
            status, fingerprint = state
            if status != "active":
                raise PermissionDenied(f"node {caller.name} is {status}")
            if peer.fingerprint != fingerprint:
                raise PermissionDenied(
                    f"node {caller.name} presented a certificate that is no longer current "
                    "(it was renewed); use the latest certificate"
                )
        return caller
