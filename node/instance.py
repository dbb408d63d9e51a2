"""The node's logic behind its two gRPC services, with storage and the registry link.

:class:`NodeInstance` is what the thin servicers call (BuildGrid's
"instance"): members, datasets, listings, search, federated search, the
outbox and the node's status, and the application of the registry's status
statements. Writes go through the writer database in one transaction each,
together with their outbox items; reads go to the read-only database so a
search never waits behind a write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from node import datasets, delivery, listings, members, outbox, search, trading
from node.federation import PeerDialer, fan_out, merge_hits
from node.registry_link import Peer, RegistryLink, load_directory
from node.state import Identity
from node.sync import CheckpointKeeper, StatusFollower
from provex.errors import InvalidArgument, PermissionDenied, ProvexError, Unavailable
from provex.storage import Database
from provex.trust import TrustRoot
from provex.v1 import common_pb2, dataset_pb2, market_pb2, node_pb2, registry_pb2

log = logging.getLogger(__name__)

ANSWER_WAIT_SECONDS = 3.0
"""How long an RPC that queued a registry call waits for its answer before replying pending."""
MAX_FEDERATED_HITS = 100


@dataclass
class NodeInstance:
    """Everything a running node's services need."""

    identity: Identity
    trust_root: TrustRoot
    writer: Database
    reader: Database
    link: RegistryLink
    worker: outbox.OutboxWorker
    keeper: CheckpointKeeper
    dialer: PeerDialer
    clock: Callable[[], datetime]
    peer_deadline: float
    follower: StatusFollower | None = None
    seller: delivery.Seller | None = None
    deliveries: delivery.Deliveries | None = None
    trades: trading.Trading | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    # ------------------------------------------------------------ members

    async def _queued(self, item: node_pb2.OutboxItem) -> node_pb2.OutboxItem:
        """Send a freshly queued item now and wait a little for its answer."""
        self.worker.wake()
        return await self.worker.wait_done(item.idempotency_key, ANSWER_WAIT_SECONDS)

    async def add_member(
        self, member: registry_pb2.Member
    ) -> tuple[registry_pb2.Member, node_pb2.OutboxItem]:
        now = self.clock()
        stored, item = await self.writer.transaction(
            lambda conn: members.add_member(conn, self.node_id, member, now)
        )
        return stored, await self._queued(item)

    async def update_member(
        self, member: registry_pb2.Member
    ) -> tuple[registry_pb2.Member, node_pb2.OutboxItem]:
        now = self.clock()
        stored, item = await self.writer.transaction(
            lambda conn: members.update_member(conn, self.node_id, member, now)
        )
        return stored, await self._queued(item)

    async def list_members(
        self, page_size: int, page_token: str
    ) -> tuple[list[registry_pb2.Member], str]:
        return await self.reader.run(lambda conn: members.list_members(conn, page_size, page_token))

    # ------------------------------------------------------------ datasets

    async def submit_dataset(
        self, request: node_pb2.SubmitDatasetRequest
    ) -> node_pb2.DatasetRecord:
        now = self.clock()
        record = await self.writer.transaction(
            lambda conn: datasets.submit_dataset(conn, request, now)
        )
        if record.registration.state == node_pb2.OUTBOX_STATE_PENDING:
            await self._queued(record.registration)
            key = record.idempotency_key
            record = await self.writer.run(
                lambda conn: datasets.get_dataset(conn, idempotency_key=key)
            )
        return record

    async def get_dataset(self, dataset_id: str, idempotency_key: str) -> node_pb2.DatasetRecord:
        return await self.reader.run(
            lambda conn: datasets.get_dataset(
                conn, dataset_id=dataset_id, idempotency_key=idempotency_key
            )
        )

    async def list_datasets(
        self, holder: str, page_size: int, page_token: str
    ) -> tuple[list[node_pb2.DatasetRecord], str]:
        return await self.reader.run(
            lambda conn: datasets.list_datasets(conn, holder, page_size, page_token)
        )

    # ------------------------------------------------------------ listings

    def _certified(self, conn: sqlite3.Connection, dataset_id: str) -> listings.CertifiedDataset:
        if not dataset_id:
            raise InvalidArgument("listing.dataset_id is required")
        return datasets.certified_dataset(conn, dataset_id)

    async def create_listing(self, listing: market_pb2.Listing) -> market_pb2.Listing:
        now = self.clock()

        def create(conn: sqlite3.Connection) -> market_pb2.Listing:
            dataset = self._certified(conn, listing.dataset_id)
            return listings.create_listing(conn, listing, dataset, self.node_id, now)

        return await self.writer.transaction(create)

    async def update_listing(self, listing: market_pb2.Listing) -> market_pb2.Listing:
        now = self.clock()
        return await self.writer.transaction(
            lambda conn: listings.update_listing(conn, listing, now)
        )

    async def set_listing_state(
        self, listing_id: str, state: market_pb2.ListingState.ValueType, reason: str
    ) -> market_pb2.Listing:
        now = self.clock()

        def change(conn: sqlite3.Connection) -> market_pb2.Listing:
            current = listings.get_listing(conn, listing_id)
            dataset = self._certified(conn, current.dataset_id)
            return listings.set_state(conn, listing_id, state, reason, dataset=dataset, now=now)

        return await self.writer.transaction(change)

    async def get_listing(self, listing_id: str) -> market_pb2.Listing:
        return await self.reader.run(lambda conn: listings.get_listing(conn, listing_id))

    async def import_listings(
        self, lines: AsyncIterable[node_pb2.ImportListingsRequest]
    ) -> AsyncIterator[node_pb2.ImportListingsResponse]:
        """Create each listing of an import; a refusal answers its own line only."""
        async for item in lines:
            try:
                listing = await self.create_listing(item.listing)
            except ProvexError as error:
                yield node_pb2.ImportListingsResponse(
                    line=item.line,
                    error=registry_pb2.RegistrationError(
                        code=error.code.value[0], message=f"line {item.line}: {error}"
                    ),
                )
            else:
                yield node_pb2.ImportListingsResponse(line=item.line, listing=listing)

    # ------------------------------------------------------------ search

    async def search(
        self, query: market_pb2.SearchQuery, *, count: bool = True
    ) -> search.SearchResult:
        return await self.reader.run(lambda conn: search.search(conn, query, count=count))

    async def peers(self) -> list[Peer]:
        return await self.reader.run(load_directory)

    async def federated_search(
        self, query: market_pb2.SearchQuery, peer_deadline_ms: int
    ) -> node_pb2.FederatedSearchResponse:
        # The local search runs while the peers answer (its own reader thread); no totals
        # are counted, since a federated answer has none.
        local = asyncio.ensure_future(self.search(query, count=False))
        deadline = peer_deadline_ms / 1000 if peer_deadline_ms else self.peer_deadline
        limit = min(query.page_size or search.DEFAULT_PAGE_SIZE, MAX_FEDERATED_HITS)
        try:
            result = await fan_out(
                query,
                [],
                self.node_id,
                await self.peers(),
                self.dialer,
                deadline=deadline,
                checkpoint=self.keeper.latest or "",
                compare=self.keeper.compare_with_peer,
                limit=limit,
            )
        finally:
            local_hits = (await local).hits
        result.hits = merge_hits([local_hits, result.hits], limit)
        return result.to_proto()

    async def peer_search(
        self, caller: str, request: node_pb2.PeerSearchRequest
    ) -> node_pb2.PeerSearchResponse:
        """A peer's search of this node; its checkpoint is compared on the way."""
        known = {peer.node_id: peer for peer in await self.peers()}
        peer = known.get(caller)
        if peer is None or not peer.active:
            raise PermissionDenied(f"node {caller} is not an active node of the directory")
        await self._compare(caller, request.checkpoint)
        found = await self.search(request.query, count=False)
        return node_pb2.PeerSearchResponse(
            hits=found.hits,
            next_page_token=found.next_page_token,
            checkpoint=self.keeper.latest or "",
        )

    # ------------------------------------------------------------ sync

    async def apply_statement(self, statement: dataset_pb2.StatusStatement, log_index: int) -> None:
        """Apply a status statement from the registry (idempotent)."""
        subject = statement.WhichOneof("subject")
        if subject == "member":
            await self._apply_member_statement(statement, log_index)
            return
        if subject != "dataset_id":
            return
        dataset_id, status = statement.dataset_id, statement.status
        now = self.clock()

        def apply(conn: sqlite3.Connection) -> list[str]:
            datasets.apply_status(conn, dataset_id, status, now)
            if status in (common_pb2.STATUS_SUSPENDED, common_pb2.STATUS_REVOKED):
                reason = f"certificate {common_pb2.Status.Name(status)} (log index {log_index})"
                return listings.suspend_listings_of_dataset(conn, dataset_id, reason, now)
            return []

        suspended = await self.writer.transaction(apply)
        if suspended:
            log.warning("dataset %s: listings %s suspended", dataset_id, ", ".join(suspended))

    async def _apply_member_statement(
        self, statement: dataset_pb2.StatusStatement, log_index: int
    ) -> None:
        """A member frozen (suspended) or unfrozen federation-wide: record it, and
        suspend its listings on this node, or list again those the freeze suspended."""
        code, status = statement.member, statement.status
        frozen = status in (common_pb2.STATUS_SUSPENDED, common_pb2.STATUS_REVOKED)
        reason = statement.reason or common_pb2.Status.Name(status)
        now = self.clock()

        def apply(conn: sqlite3.Connection) -> list[str]:
            if not members.record_freeze(
                conn, code, frozen=frozen, reason=reason, log_index=log_index, now=now
            ):
                return []
            if frozen:
                why = f"member {code} frozen: {reason} (log index {log_index})"
                changed = listings.suspend_listings_of_holder(conn, code, why[:1000], now)
                members.remember_frozen_listings(conn, code, changed)
                return changed
            active = [
                listing_id
                for listing_id in members.take_frozen_listings(conn, code)
                if datasets.get_dataset(
                    conn, dataset_id=listings.get_listing(conn, listing_id).dataset_id
                ).status
                == common_pb2.STATUS_ACTIVE
            ]
            why = f"member {code} unfrozen (log index {log_index})"
            return listings.relist(conn, active, why, now)

        changed = await self.writer.transaction(apply)
        if changed:
            log.warning(
                "member %s %s: listings %s %s",
                code,
                "frozen" if frozen else "unfrozen",
                ", ".join(changed),
                "suspended" if frozen else "listed again",
            )

    # ------------------------------------------------------------ contracts

    def contracts(self) -> trading.Trading:
        """Both sides of contract negotiation (built by the server)."""
        if self.trades is None:
            raise Unavailable("trading is not running on this node yet; retry shortly")
        return self.trades

    # ------------------------------------------------------------ delivery

    def _buyer_side(self) -> delivery.Deliveries:
        if self.deliveries is None:
            raise Unavailable("deliveries are not running on this node yet; retry shortly")
        return self.deliveries

    async def start_delivery(self, contract_id: str) -> node_pb2.DeliveryProgress:
        """Start (or resume, or restart after a failure) receiving a bought contract's data."""
        return await self._buyer_side().start(contract_id)

    async def delivery_progress(self, contract_id: str) -> node_pb2.DeliveryProgress:
        return await self._buyer_side().progress(contract_id)

    def deliver(
        self, caller: str, request: node_pb2.DeliverRequest
    ) -> AsyncIterator[node_pb2.DeliverResponse]:
        """A buyer's node fetching a sold contract's data (PeerService.Deliver)."""
        if self.seller is None:
            raise Unavailable("deliveries are not running on this node yet; retry shortly")
        return self.seller.stream(caller, request)

    # ------------------------------------------------------------ the node itself

    async def list_outbox(self, state: int) -> list[node_pb2.OutboxItem]:
        return await self.reader.run(lambda conn: outbox.list_items(conn, state or None, 1000))

    async def node_status(self) -> node_pb2.GetNodeStatusResponse:
        pending = await self.reader.run(outbox.pending_count)
        follower = self.follower
        return node_pb2.GetNodeStatusResponse(
            node_id=self.node_id,
            region_code=self.identity.region_code,
            checkpoint=self.keeper.latest or "",
            catalog_version=follower.catalog_version if follower is not None else 0,
            status_log_index=follower.position if follower is not None else 0,
            outbox_pending=pending,
            registry_reachable=self.link.reachable,
        )

    async def _compare(self, caller: str, checkpoint: str) -> None:
        """Compare a peer's checkpoint with ours; a split view is recorded, never fatal here."""
        if not checkpoint:
            return
        try:
            verdict = await self.keeper.compare_with_peer(caller, checkpoint)
        except ProvexError as error:
            log.warning("checkpoint from %s not compared: %s", caller, error)
            return
        if verdict == "split_view":
            log.error("SPLIT VIEW: node %s holds a checkpoint inconsistent with ours", caller)

    async def exchange_checkpoint(
        self, caller: str, checkpoint: str
    ) -> node_pb2.ExchangeCheckpointResponse:
        """Compare a peer's checkpoint with ours (a split view is recorded); answer ours."""
        await self._compare(caller, checkpoint)
        return node_pb2.ExchangeCheckpointResponse(checkpoint=self.keeper.latest or "")
