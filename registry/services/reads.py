"""Servicers of the registry's public reads: trust roots, catalog releases, the log.

The log service also takes the nodes' witness cosignatures (``SubmitCosignature``,
for nodes only); the logic is :mod:`registry.witnesses`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from provex.errors import InvalidArgument, NotFound
from provex.v1 import registry_pb2, registry_pb2_grpc
from registry.authz import require_node
from registry.catalog import CatalogBook
from registry.db import Database
from registry.publication import checkpoint_size
from registry.services.common import Authorizer, Context, not_offered
from registry.transparency import LogReader
from registry.witnesses import WitnessBook


class TrustService(registry_pb2_grpc.TrustServiceServicer):
    """Serves the signed trust root versions (public)."""

    def __init__(self, reader_db: Database) -> None:
        self._db = reader_db

    async def GetTrustRoot(
        self, request: registry_pb2.GetTrustRootRequest, context: Context
    ) -> registry_pb2.GetTrustRootResponse:
        def read(conn: sqlite3.Connection) -> tuple[bytes | None, int]:
            latest = conn.execute("SELECT MAX(version) FROM trust_roots").fetchone()[0] or 0
            version = request.version or latest
            row = conn.execute(
                "SELECT envelope FROM trust_roots WHERE version = ?", (version,)
            ).fetchone()
            return (None if row is None else bytes(row[0])), int(latest)

        envelope, latest = await self._db.run(read)
        if envelope is None:
            raise NotFound(f"trust root version {request.version} does not exist (latest {latest})")
        return registry_pb2.GetTrustRootResponse(envelope=envelope, latest_version=latest)


class CatalogService(registry_pb2_grpc.CatalogServiceServicer):
    """Catalog releases and incremental sync (reads are public)."""

    def __init__(self, book: CatalogBook) -> None:
        self._book = book

    async def GetCatalog(
        self, request: registry_pb2.GetCatalogRequest, context: Context
    ) -> registry_pb2.GetCatalogResponse:
        return registry_pb2.GetCatalogResponse(
            release=await self._book.release_bundle(request.version)
        )

    async def ListCatalogChanges(
        self, request: registry_pb2.ListCatalogChangesRequest, context: Context
    ) -> registry_pb2.ListCatalogChangesResponse:
        latest, removed, bundle = await self._book.changes_since(request.since_version)
        return registry_pb2.ListCatalogChangesResponse(
            latest_version=latest.version,
            added_or_changed=latest.entries,
            removed_codes=removed,
            rules=latest.rules,
            release=bundle,
        )

    async def ProposeExtension(self, request: Any, context: Context) -> Any:
        return await not_offered(context, "ProposeExtension")

    async def ListProposals(self, request: Any, context: Context) -> Any:
        return await not_offered(context, "ListProposals")

    async def ReviewProposal(self, request: Any, context: Context) -> Any:
        return await not_offered(context, "ReviewProposal")

    async def PublishCatalog(self, request: Any, context: Context) -> Any:
        return await not_offered(context, "PublishCatalog")


class LogService(registry_pb2_grpc.LogServiceServicer):
    """Checkpoints, proofs and entries of the log (reads are public); nodes' cosignatures."""

    def __init__(self, reader: LogReader, witnesses: WitnessBook, authorizer: Authorizer) -> None:
        self._reader = reader
        self._witnesses = witnesses
        self._authorizer = authorizer

    async def GetCheckpoint(
        self, request: registry_pb2.GetCheckpointRequest, context: Context
    ) -> registry_pb2.GetCheckpointResponse:
        if request.with_cosignatures:
            note = await self._witnesses.cosigned_checkpoint()
        else:
            note = await self._reader.latest_checkpoint()
        return registry_pb2.GetCheckpointResponse(checkpoint=note)

    async def GetInclusionProof(
        self, request: registry_pb2.GetInclusionProofRequest, context: Context
    ) -> registry_pb2.GetInclusionProofResponse:
        note = ""
        tree_size = request.tree_size
        if tree_size == 0:
            note = await self._reader.latest_checkpoint()
            tree_size = checkpoint_size(note)
        proof = await self._reader.inclusion_proof(request.log_index, tree_size)
        return registry_pb2.GetInclusionProofResponse(
            log_index=request.log_index, tree_size=tree_size, proof=proof, checkpoint=note
        )

    async def GetConsistencyProof(
        self, request: registry_pb2.GetConsistencyProofRequest, context: Context
    ) -> registry_pb2.GetConsistencyProofResponse:
        note = ""
        second = request.second_size
        if second == 0:
            note = await self._reader.latest_checkpoint()
            second = checkpoint_size(note)
        if request.first_size == 0:
            raise InvalidArgument(
                "first_size must be at least 1: nothing to prove from an empty log"
            )
        proof = await self._reader.consistency_proof(request.first_size, second)
        return registry_pb2.GetConsistencyProofResponse(
            first_size=request.first_size, second_size=second, proof=proof, checkpoint=note
        )

    async def GetEntries(
        self, request: registry_pb2.GetEntriesRequest, context: Context
    ) -> registry_pb2.GetEntriesResponse:
        if request.end <= request.start:
            raise InvalidArgument(
                f"end ({request.end}) must be greater than start ({request.start})"
            )
        entries = await self._reader.entries(request.start, request.end)
        return registry_pb2.GetEntriesResponse(entries=entries, start=request.start)

    async def SubmitCosignature(
        self, request: registry_pb2.SubmitCosignatureRequest, context: Context
    ) -> registry_pb2.SubmitCosignatureResponse:
        caller = require_node(await self._authorizer.caller(context), "SubmitCosignature")
        witnesses = await self._witnesses.submit(caller.name, request.checkpoint)
        return registry_pb2.SubmitCosignatureResponse(witnesses=witnesses)
