"""Delivery of a finalized contract's data from the seller's node to the buyer's node.

**Seller** (:class:`Seller`, behind PeerService.Deliver): the caller's
certificate must name the contract's ``buyer_node`` (an active node of the
directory), this node must be the contract's seller, the contract
FINALIZED, and the data attached (the blob named by the terms'
``content_digest`` in :mod:`node.blobs`). The blob is streamed in chunks
from the requested offset. Refusals: NOT_FOUND (unknown contract),
PERMISSION_DENIED (any other node), FAILED_PRECONDITION (not finalized, not
the seller, data not attached), INVALID_ARGUMENT (an offset past the end).

**Buyer** (:class:`Deliveries`, behind OperatorService.StartDelivery and
GetDeliveryProgress): a background task per delivery dials the seller's
peer port (its endpoint from the node directory) with a deadline per chunk
and per stream, appends each chunk to ``blobs/partial/<contract_id>``
(fsynced), then records the length in ``deliveries`` (one transaction per
chunk). After any interruption (the seller restarts, the stream breaks, this
node restarts: unfinished deliveries resume when the node starts) it goes on
from the recorded length, never from 0. At the end the SHA-256 is checked
against the contract's ``content_digest`` (the certificate's, signed by
both nodes in the terms): a mismatch discards the partial file and fails the
delivery with the reason (StartDelivery starts it again from 0); a match
moves the file into the blob store and marks the delivery complete and
verified.

A delivery's ``state`` is ``running`` (resumed at start-up), ``complete`` or
``failed``. While running, ``error`` holds the last transient problem,
prefixed with :data:`RETRYING`; once failed, the reason.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Literal

import grpc

from node import trading
from node.blobs import BlobStore, DigestMismatch, write_durably
from node.registry_link import Peer, load_directory
from provex.contracts import normalize_contract_id
from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    ResourceExhausted,
    Unavailable,
)
from provex.rpc import error_for_rpc_error
from provex.storage import Database
from provex.v1 import market_pb2, node_pb2

if TYPE_CHECKING:
    from node.federation import PeerDialer

log = logging.getLogger(__name__)

SCHEMA = """
-- Deliveries this node receives as a buyer: how far each has come. The bytes themselves
-- are in blobs/partial/<contract_id> until verified, then in blobs/<sha256-hex>.
CREATE TABLE deliveries (
    contract_id     TEXT PRIMARY KEY REFERENCES contracts (contract_id),
    seller_node     TEXT NOT NULL,
    content_digest  BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    received_bytes  INTEGER NOT NULL DEFAULT 0,
    total_bytes     INTEGER NOT NULL DEFAULT 0,
    digest_verified INTEGER NOT NULL DEFAULT 0,
    error           TEXT NOT NULL DEFAULT '',
    started_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX deliveries_by_state ON deliveries (state);
"""

RETRYING = "retrying: "
"""Prefix of ``error`` while a running delivery waits to retry after a transient problem."""
FIRST_RETRY_SECONDS = 0.5
MAX_CHUNK_BYTES = 2 * 1024 * 1024
"""Chunks stay well below gRPC's default 4 MiB receive limit of the buyer's channel."""

State = Literal["running", "complete", "failed"]


# ---------------------------------------------------------------- both sides


def _contract(
    conn: sqlite3.Connection, contract_id: str
) -> tuple[trading.Role, market_pb2.Contract]:
    found = trading.load_contract(conn, contract_id)
    if found is None:
        raise NotFound(f"contract {contract_id} is not on this node")
    return found


def _require_finalized(contract: market_pb2.Contract) -> None:
    if contract.state != market_pb2.CONTRACT_STATE_FINALIZED:
        state = market_pb2.ContractState.Name(contract.state).removeprefix("CONTRACT_STATE_")
        raise FailedPrecondition(
            f"contract {contract.terms.contract_id} is {state.lower()}: only a finalized "
            "contract (signed by both nodes) is delivered"
        )


# ---------------------------------------------------------------- seller


@dataclass(frozen=True)
class Sending:
    """What the seller streams for one Deliver call."""

    contract_id: str
    digest: bytes
    offset: int
    total: int


def authorize(conn: sqlite3.Connection, caller: str, contract_id: str) -> market_pb2.ContractTerms:
    """The terms of the contract ``caller`` may fetch the data of; the refusal otherwise."""
    normalized = normalize_contract_id(contract_id)
    role, contract = _contract(conn, normalized)
    terms = contract.terms
    if caller != terms.buyer_node:
        raise PermissionDenied(
            f"node {caller} is not the buyer of contract {normalized}: only "
            f"{terms.buyer_node} may fetch its data"
        )
    known = {peer.node_id: peer for peer in load_directory(conn)}
    peer = known.get(caller)
    if peer is None or not peer.active:
        raise PermissionDenied(f"node {caller} is not an active node of the directory")
    if role != "seller":
        raise FailedPrecondition(
            f"this node is the buyer of contract {normalized}, not its seller ({terms.seller_node})"
        )
    _require_finalized(contract)
    return terms


class Seller:
    """PeerService.Deliver: the data of a finalized contract, in chunks, from an offset."""

    def __init__(
        self, reader: Database, blobs: BlobStore, chunk_bytes: int, rate_bytes_per_second: int
    ) -> None:
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(
                f"delivery_chunk_bytes must be within 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}"
            )
        self._reader = reader
        self._blobs = blobs
        self._chunk = chunk_bytes
        self._rate = rate_bytes_per_second

    async def prepare(self, caller: str, request: node_pb2.DeliverRequest) -> Sending:
        """Authorize ``caller`` and check the data and the offset; the refusal otherwise."""
        terms = await self._reader.run(lambda conn: authorize(conn, caller, request.contract_id))
        digest = terms.content_digest
        total = await asyncio.to_thread(self._blobs.size, digest)
        if total is None:
            raise FailedPrecondition(
                f"the data of contract {terms.contract_id} (dataset {terms.dataset_id}, SHA-256 "
                f"{digest.hex()}) is not attached on node {terms.seller_node}: its operator "
                "attaches it with `provex-node dataset attach`"
            )
        if request.offset > total:
            raise InvalidArgument(
                f"offset {request.offset} is past the end of the data of contract "
                f"{terms.contract_id} ({total} bytes)"
            )
        return Sending(terms.contract_id, digest, request.offset, total)

    async def stream(
        self, caller: str, request: node_pb2.DeliverRequest
    ) -> AsyncIterator[node_pb2.DeliverResponse]:
        """The chunks from ``request.offset`` to the end (one empty message if none are left)."""
        sending = await self.prepare(caller, request)
        log.info(
            "delivering contract %s to %s from offset %d of %d bytes",
            sending.contract_id,
            caller,
            sending.offset,
            sending.total,
        )
        position, total = sending.offset, sending.total
        if position == total:
            yield node_pb2.DeliverResponse(offset=position, total_bytes=total)
            return
        handle = await asyncio.to_thread(self._blobs.open, sending.digest)
        try:
            await asyncio.to_thread(handle.seek, position)
            while position < total:
                data = await asyncio.to_thread(handle.read, min(self._chunk, total - position))
                if not data:
                    raise FailedPrecondition(
                        f"the data of contract {sending.contract_id} shrank while it was sent"
                    )
                yield node_pb2.DeliverResponse(offset=position, data=data, total_bytes=total)
                position += len(data)
                if self._rate > 0:
                    await asyncio.sleep(len(data) / self._rate)
        finally:
            await asyncio.to_thread(handle.close)


# ---------------------------------------------------------------- buyer

Source = Callable[[str, node_pb2.DeliverRequest], AsyncIterator[node_pb2.DeliverResponse]]
"""``source(seller_node, request)``: the seller's Deliver stream (over the network or not)."""


def peer_source(
    dialer: PeerDialer,
    peers: Callable[[], Awaitable[list[Peer]]],
    chunk_deadline: float,
    stream_deadline: float,
) -> Source:
    """The seller's Deliver over mutual TLS: endpoint from the directory, deadlines per chunk."""

    async def fetch(
        seller_node: str, request: node_pb2.DeliverRequest
    ) -> AsyncIterator[node_pb2.DeliverResponse]:
        peer = next((p for p in await peers() if p.node_id == seller_node), None)
        if peer is None or not peer.active:
            raise Unavailable(f"seller node {seller_node} is not an active node of the directory")
        if peer.endpoint.endswith(":0"):
            raise Unavailable(f"seller node {seller_node} has not announced its peer endpoint")
        call = dialer.stub(peer).Deliver(request, timeout=stream_deadline)
        messages = call.__aiter__()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages), chunk_deadline)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise Unavailable(
                        f"seller node {seller_node} sent nothing for {chunk_deadline:g} s"
                    ) from None
                except grpc.aio.AioRpcError as error:
                    raise error_for_rpc_error(error, f"seller node {seller_node}") from None
                yield message
        finally:
            call.cancel()

    return fetch


@dataclass(frozen=True)
class DeliveryRow:
    """One row of ``deliveries``."""

    contract_id: str
    seller_node: str
    content_digest: bytes
    state: State
    received_bytes: int
    total_bytes: int
    digest_verified: bool
    error: str

    def to_proto(self) -> node_pb2.DeliveryProgress:
        return node_pb2.DeliveryProgress(
            contract_id=self.contract_id,
            received_bytes=self.received_bytes,
            total_bytes=self.total_bytes,
            complete=self.state == "complete",
            digest_verified=self.digest_verified,
            error=self.error,
        )


_COLUMNS = (
    "contract_id, seller_node, content_digest, state, received_bytes, total_bytes, "
    "digest_verified, error"
)


def load_delivery(conn: sqlite3.Connection, contract_id: str) -> DeliveryRow | None:
    """The delivery of ``contract_id``, or None if none has started."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries WHERE contract_id = ?", (contract_id,)
    ).fetchone()
    if row is None:
        return None
    state: State = (
        "complete" if row[3] == "complete" else "failed" if row[3] == "failed" else "running"
    )
    return DeliveryRow(
        str(row[0]), str(row[1]), bytes(row[2]), state, int(row[4]), int(row[5]), bool(row[6]),
        str(row[7]),
    )  # fmt: skip


def running_deliveries(conn: sqlite3.Connection) -> list[str]:
    """Contract ids of the deliveries still running (to resume at start-up)."""
    rows = conn.execute(
        "SELECT contract_id FROM deliveries WHERE state = 'running' ORDER BY started_at"
    )
    return [str(row[0]) for row in rows]


def begin_delivery(conn: sqlite3.Connection, contract_id: str, now: datetime) -> DeliveryRow:
    """Start (or restart after a failure) the delivery of a contract this node bought.

    Idempotent: a running or complete delivery is returned as it is. NotFound
    for an unknown contract, FailedPrecondition if this node is its seller or
    it is not finalized.
    """
    normalized = normalize_contract_id(contract_id)
    role, contract = _contract(conn, normalized)
    terms = contract.terms
    if role != "buyer":
        raise FailedPrecondition(
            f"this node is the seller of contract {normalized}: the buyer's node "
            f"({terms.buyer_node}) starts its delivery"
        )
    _require_finalized(contract)
    existing = load_delivery(conn, normalized)
    at = now.isoformat()
    if existing is None:
        conn.execute(
            "INSERT INTO deliveries (contract_id, seller_node, content_digest, state, "
            "started_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?)",
            (normalized, terms.seller_node, terms.content_digest, at, at),
        )
    elif existing.state == "failed":
        conn.execute(
            "UPDATE deliveries SET state = 'running', error = '', updated_at = ? "
            "WHERE contract_id = ?",
            (at, normalized),
        )
    found = load_delivery(conn, normalized)
    assert found is not None
    return found


def delivery_progress(conn: sqlite3.Connection, contract_id: str) -> DeliveryRow:
    """The delivery of ``contract_id``; NotFound naming what is missing."""
    normalized = normalize_contract_id(contract_id)
    found = load_delivery(conn, normalized)
    if found is not None:
        return found
    role, _ = _contract(conn, normalized)
    if role == "seller":
        raise NotFound(
            f"this node is the seller of contract {normalized}: "
            "the buyer's node keeps the progress of its delivery"
        )
    raise NotFound(
        f"no delivery of contract {normalized} has started: run `provex-node delivery start`"
    )


def _record(
    conn: sqlite3.Connection,
    contract_id: str,
    now: datetime,
    **changes: str | int,
) -> None:
    assignments = ", ".join(f"{name} = ?" for name in changes)
    conn.execute(
        f"UPDATE deliveries SET {assignments}, updated_at = ? WHERE contract_id = ?",
        (*changes.values(), now.isoformat(), contract_id),
    )


class _Permanent(ProvexError):
    """A failure that retrying does not cure; ``discard`` drops the bytes received so far."""

    def __init__(self, cause: ProvexError, *, discard: bool) -> None:
        super().__init__(str(cause))
        self.code = cause.code
        self.discard = discard


def _transient(error: ProvexError) -> bool:
    return isinstance(error, Unavailable | ResourceExhausted) or type(error) is ProvexError


class Deliveries:
    """The buyer's deliveries: one background task each, resumable, verified at the end."""

    def __init__(
        self,
        writer: Database,
        reader: Database,
        blobs: BlobStore,
        source: Source,
        clock: Callable[[], datetime],
        *,
        retry_max_seconds: float = 5.0,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._blobs = blobs
        self._source = source
        self._clock = clock
        self._retry_first = min(FIRST_RETRY_SECONDS, retry_max_seconds)
        self._retry_max = retry_max_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, contract_id: str) -> node_pb2.DeliveryProgress:
        """Start or resume the delivery of ``contract_id``; its progress now."""
        now = self._clock()
        row = await self._writer.transaction(lambda conn: begin_delivery(conn, contract_id, now))
        if row.state == "running":
            self._spawn(row.contract_id)
        return row.to_proto()

    async def progress(self, contract_id: str) -> node_pb2.DeliveryProgress:
        """How far the delivery of ``contract_id`` has come."""
        row = await self._reader.run(lambda conn: delivery_progress(conn, contract_id))
        return row.to_proto()

    async def resume_all(self) -> list[str]:
        """Resume every delivery left running (at start-up); their contract ids."""
        running = await self._writer.run(running_deliveries)
        for contract_id in running:
            self._spawn(contract_id)
        if running:
            log.info("resuming deliveries: %s", ", ".join(running))
        return running

    async def close(self) -> None:
        """Stop every task (their deliveries resume at the next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, contract_id: str) -> None:
        task = self._tasks.get(contract_id)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._run(contract_id), name=f"provex-delivery-{contract_id}")
        self._tasks[contract_id] = task
        task.add_done_callback(lambda done: self._forget(contract_id, done))

    def _forget(self, contract_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(contract_id) is task:
            del self._tasks[contract_id]

    async def _run(self, contract_id: str) -> None:
        backoff = self._retry_first
        while True:
            attempt = _Attempt()
            try:
                await self._attempt(contract_id, attempt)
            except _Permanent as error:
                await self._fail(contract_id, error)
                return
            except ProvexError as error:
                if not _transient(error):
                    await self._fail(contract_id, _Permanent(error, discard=False))
                    return
                problem = str(error)
            except Exception as error:  # A bug or a local I/O error: logged, then retried.
                log.exception("delivery of %s: unexpected error", contract_id)
                problem = f"{type(error).__name__}: {error}"
            else:
                return
            if attempt.received:
                backoff = self._retry_first
            log.info(
                "delivery of %s interrupted (%s); retry in %.1f s", contract_id, problem, backoff
            )
            now = self._clock()
            await self._writer.transaction(
                partial(_record, contract_id=contract_id, now=now, error=RETRYING + problem)
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._retry_max)

    async def _attempt(self, contract_id: str, attempt: _Attempt) -> None:
        """One stream from the recorded offset; verify and complete once all bytes are in."""
        row = await self._writer.run(lambda conn: load_delivery(conn, contract_id))
        if row is None or row.state != "running":
            return
        offset = await asyncio.to_thread(
            self._blobs.resume_partial, contract_id, row.received_bytes
        )
        total = row.total_bytes or None
        if offset != row.received_bytes:
            await self._progress(contract_id, offset, row.total_bytes)
        if total is None or offset < total:
            total = await self._receive(row, offset, total, attempt)
        await self._verify(row, total)

    async def _receive(
        self, row: DeliveryRow, offset: int, total: int | None, attempt: _Attempt
    ) -> int:
        """Append what the seller sends from ``offset``; the total once every byte is in."""
        contract_id = row.contract_id
        request = node_pb2.DeliverRequest(contract_id=contract_id, offset=offset)
        handle = await asyncio.to_thread(self._blobs.open_partial, contract_id, offset)
        try:
            async for message in self._source(row.seller_node, request):
                total = _check_chunk(contract_id, message, offset, total)
                if not message.data:
                    continue
                await asyncio.to_thread(write_durably, handle, message.data)
                offset += len(message.data)
                attempt.received += len(message.data)
                await self._progress(contract_id, offset, total)
        finally:
            await asyncio.to_thread(handle.close)
        if total is None or offset < total:
            raise Unavailable(
                f"the seller's stream ended at byte {offset} of "
                f"{'an unknown total' if total is None else total}"
            )
        return total

    async def _progress(self, contract_id: str, received: int, total: int | None) -> None:
        now = self._clock()
        await self._writer.transaction(
            lambda conn: _record(
                conn, contract_id, now, received_bytes=received, total_bytes=total or 0, error=""
            )
        )

    async def _verify(self, row: DeliveryRow, total: int) -> None:
        try:
            await asyncio.to_thread(self._blobs.commit_partial, row.contract_id, row.content_digest)
        except DigestMismatch as error:
            raise _Permanent(error, discard=True) from None
        now = self._clock()
        await self._writer.transaction(
            lambda conn: _record(
                conn,
                row.contract_id,
                now,
                state="complete",
                received_bytes=total,
                total_bytes=total,
                digest_verified=1,
                error="",
            )
        )
        log.info("delivery of %s complete: %d bytes, digest verified", row.contract_id, total)

    async def _fail(self, contract_id: str, error: _Permanent) -> None:
        log.warning("delivery of %s failed: %s", contract_id, error)
        if error.discard:
            await asyncio.to_thread(self._blobs.discard_partial, contract_id)
        now = self._clock()

        def fail(conn: sqlite3.Connection) -> None:
            if error.discard:
                _record(conn, contract_id, now, received_bytes=0, total_bytes=0)
            _record(conn, contract_id, now, state="failed", error=str(error))

        await self._writer.transaction(fail)


@dataclass
class _Attempt:
    """What one attempt achieved (a retry after progress starts its backoff over)."""

    received: int = 0


def _check_chunk(
    contract_id: str, message: node_pb2.DeliverResponse, offset: int, total: int | None
) -> int:
    """The total the seller announces, checked against what came before; _Permanent if wrong."""
    if total is not None and message.total_bytes != total:
        raise _Permanent(
            FailedPrecondition(
                f"the seller's data of contract {contract_id} changed size ({total} bytes, now "
                f"{message.total_bytes}): the bytes received are discarded; start the delivery "
                "again"
            ),
            discard=True,
        )
    if message.offset != offset or offset + len(message.data) > message.total_bytes:
        raise _Permanent(
            FailedPrecondition(
                f"the seller sent bytes {message.offset}..{message.offset + len(message.data)} "
                f"of {message.total_bytes} where byte {offset} was due"
            ),
            discard=False,
        )
    return message.total_bytes
