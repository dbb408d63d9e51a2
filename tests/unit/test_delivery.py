"""Tests of node.delivery without the network: a real seller and a real buyer, in one process.

Each side has its own real node database (all of node.schema's migrations)
and blob store. The buyer's :class:`Deliveries` reads from the seller's
real :class:`Seller` stream (what PeerService.Deliver serves); interruptions
are made by ending that stream early, as a broken connection does.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.blobs import BlobStore
from node.delivery import (
    RETRYING,
    Deliveries,
    Seller,
    Source,
    load_delivery,
)
from node.schema import MIGRATIONS
from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    Unavailable,
)
from provex.storage import Database
from provex.timestamps import utc_now
from provex.v1 import market_pb2, node_pb2

SELLER, BUYER, OTHER = "gd-gzde", "sh-sde", "gd-szde"
CHUNK = 1024
DATA = bytes(range(256)) * 40  # 10 KiB: ten chunks
DIGEST = hashlib.sha256(DATA).digest()
FINALIZED = market_pb2.CONTRACT_STATE_FINALIZED
AGREED = market_pb2.CONTRACT_STATE_AGREED
WAIT = 5.0


def contract_id(n: int) -> str:
    return f"C{n:032x}"


def contract(n: int, state: int = FINALIZED, digest: bytes = DIGEST) -> market_pb2.Contract:
    return market_pb2.Contract(
        terms=market_pb2.ContractTerms(
            contract_id=contract_id(n),
            dataset_id="440100-2026-0000123-8",
            certificate_version=1,
            content_digest=digest,
            seller_node=SELLER,
            buyer_node=BUYER,
        ),
        state=state,  # type: ignore[arg-type]
    )


def put_contract(conn: sqlite3.Connection, role: str, kept: market_pb2.Contract) -> None:
    conn.execute(
        "INSERT INTO contracts (contract_id, role, state, contract, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (kept.terms.contract_id, role, kept.state, kept.SerializeToString(), "2026-11-26"),
    )


def put_peer(conn: sqlite3.Connection, node_id: str, status: str = "active") -> None:
    conn.execute(
        "INSERT INTO peers (node_id, region_code, display_name, endpoint, status, seen_at) "
        "VALUES (?, '440100', ?, '127.0.0.1:1', ?, '2026-11-26')",
        (node_id, node_id, status),
    )


@dataclass
class Side:
    db: Database
    blobs: BlobStore
    path: Path

    async def write(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        await self.db.transaction(fn)


async def open_side(path: Path) -> Side:
    path.mkdir(parents=True, exist_ok=True)
    db = await Database.open(path / "node.db", migrations=MIGRATIONS)
    return Side(db, BlobStore.of_state(path), path)


@pytest.fixture
async def seller(tmp_path: Path) -> AsyncIterator[Side]:
    side = await open_side(tmp_path / "seller")

    def setup(conn: sqlite3.Connection) -> None:
        put_peer(conn, BUYER)
        put_peer(conn, OTHER)
        put_peer(conn, "gd-revoked", status="revoked")

    await side.write(setup)
    data = tmp_path / "data.bin"
    data.write_bytes(DATA)
    side.blobs.import_file(data, DIGEST)
    yield side
    await side.db.close()


@pytest.fixture
async def buyer(tmp_path: Path) -> AsyncIterator[Side]:
    side = await open_side(tmp_path / "buyer")
    yield side
    await side.db.close()


async def both_hold(seller: Side, buyer: Side, kept: market_pb2.Contract) -> None:
    await seller.write(lambda conn: put_contract(conn, "seller", kept))
    await buyer.write(lambda conn: put_contract(conn, "buyer", kept))


def seller_of(side: Side) -> Seller:
    return Seller(side.db, side.blobs, CHUNK, 0)


async def collect(
    seller: Seller, caller: str, request: node_pb2.DeliverRequest
) -> list[node_pb2.DeliverResponse]:
    return [message async for message in seller.stream(caller, request)]


# ---------------------------------------------------------------- the seller


async def test_the_buyer_receives_every_chunk_from_its_offset(seller: Side) -> None:
    await seller.write(lambda conn: put_contract(conn, "seller", contract(1)))
    stream = seller_of(seller)
    messages = await collect(stream, BUYER, node_pb2.DeliverRequest(contract_id=contract_id(1)))
    assert [m.offset for m in messages] == list(range(0, len(DATA), CHUNK))
    assert {m.total_bytes for m in messages} == {len(DATA)}
    assert b"".join(m.data for m in messages) == DATA
    tail = await collect(
        stream, BUYER, node_pb2.DeliverRequest(contract_id=contract_id(1), offset=9000)
    )
    assert [m.offset for m in tail] == [9000, 10024]
    assert b"".join(m.data for m in tail) == DATA[9000:]
    end = await collect(
        stream, BUYER, node_pb2.DeliverRequest(contract_id=contract_id(1), offset=len(DATA))
    )
    assert [(m.offset, m.data, m.total_bytes) for m in end] == [(len(DATA), b"", len(DATA))]


REFUSALS = [
    # (case, caller, contract id asked, offset, error, words of the message)
    ("malformed id", BUYER, "C123", 0, InvalidArgument, "contract_id must be C"),
    ("unknown contract", BUYER, contract_id(99), 0, NotFound, "is not on this node"),
    ("another node", OTHER, contract_id(1), 0, PermissionDenied, f"only {BUYER} may fetch"),
    ("the seller itself", SELLER, contract_id(1), 0, PermissionDenied, "is not the buyer"),
    ("a revoked buyer", "gd-revoked", contract_id(5), 0, PermissionDenied, "not an active node"),
    ("this node bought it", BUYER, contract_id(2), 0, FailedPrecondition, "not its seller"),
    ("not finalized", BUYER, contract_id(3), 0, FailedPrecondition, "is agreed: only a finalized"),
    ("data not attached", BUYER, contract_id(4), 0, FailedPrecondition, "dataset attach"),
    ("offset past the end", BUYER, contract_id(1), len(DATA) + 1, InvalidArgument, "past the end"),
]


Refusal = tuple[str, str, str, int, type[ProvexError], str]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[row[0] for row in REFUSALS])
async def test_deliver_refuses(seller: Side, refusal: Refusal) -> None:
    _, caller, asked, offset, error, words = refusal
    revoked_buyer = contract(5)
    revoked_buyer.terms.buyer_node = "gd-revoked"

    def setup(conn: sqlite3.Connection) -> None:
        put_contract(conn, "seller", contract(1))
        put_contract(conn, "buyer", contract(2))
        put_contract(conn, "seller", contract(3, state=AGREED))
        put_contract(conn, "seller", contract(4, digest=hashlib.sha256(b"absent").digest()))
        put_contract(conn, "seller", revoked_buyer)

    await seller.write(setup)
    request = node_pb2.DeliverRequest(contract_id=asked, offset=offset)
    with pytest.raises(error, match=words) as refused:
        await collect(seller_of(seller), caller, request)
    assert type(refused.value) is error


# ---------------------------------------------------------------- the buyer


@dataclass
class Wire:
    """The seller's real stream as the buyer's source; it can break after some chunks."""

    seller: Seller
    break_after: list[int] = field(default_factory=list)  # one entry per stream to break
    hold: asyncio.Event | None = None  # when set (cleared), the stream pauses after a break
    offsets: list[int] = field(default_factory=list)

    def source(self) -> Source:
        async def fetch(
            seller_node: str, request: node_pb2.DeliverRequest
        ) -> AsyncIterator[node_pb2.DeliverResponse]:
            assert seller_node == SELLER
            self.offsets.append(request.offset)
            limit = self.break_after.pop(0) if self.break_after else None
            sent = 0
            async for message in self.seller.stream(BUYER, request):
                if limit is not None and sent == limit:
                    if self.hold is not None:
                        await self.hold.wait()
                    raise Unavailable("seller node gd-gzde is unreachable (connection reset)")
                yield message
                sent += 1

        return fetch


def deliveries(buyer: Side, wire: Wire) -> Deliveries:
    return Deliveries(
        buyer.db, buyer.db, buyer.blobs, wire.source(), utc_now, retry_max_seconds=0.05
    )


async def settled(book: Deliveries, cid: str) -> node_pb2.DeliveryProgress:
    """The progress once complete or failed (an error that is not being retried)."""
    deadline = time.monotonic() + WAIT
    while True:
        progress = await book.progress(cid)
        if progress.complete or (progress.error and not progress.error.startswith(RETRYING)):
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.01)


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_full_delivery_is_verified_and_stored(seller: Side, buyer: Side) -> None:
    await both_hold(seller, buyer, contract(1))
    book = deliveries(buyer, Wire(seller_of(seller)))
    started = await book.start(contract_id(1))
    assert started.contract_id == contract_id(1) and not started.complete
    progress = await settled(book, contract_id(1))
    assert (progress.complete, progress.digest_verified, progress.error) == (True, True, "")
    assert progress.received_bytes == progress.total_bytes == len(DATA)
    assert buyer.blobs.path(DIGEST).read_bytes() == DATA
    assert not buyer.blobs.partial_path(contract_id(1)).exists()
    again = await book.start(contract_id(1))  # idempotent: complete stays complete
    assert again == progress
    await book.close()


async def test_an_interrupted_delivery_resumes_from_its_offset(seller: Side, buyer: Side) -> None:
    await both_hold(seller, buyer, contract(1))
    wire = Wire(seller_of(seller), break_after=[3, 0, 4])
    book = deliveries(buyer, wire)
    await book.start(contract_id(1))
    progress = await settled(book, contract_id(1))
    assert progress.complete and progress.digest_verified
    # Each stream went on where the last stopped; no byte was asked for twice.
    assert wire.offsets == [0, 3 * CHUNK, 3 * CHUNK, 7 * CHUNK]
    assert buyer.blobs.path(DIGEST).read_bytes() == DATA
    await book.close()


async def test_a_delivery_resumes_when_the_buyer_node_starts_again(
    seller: Side, buyer: Side
) -> None:
    await both_hold(seller, buyer, contract(1))
    wire = Wire(seller_of(seller), break_after=[5], hold=asyncio.Event())
    book = deliveries(buyer, wire)
    await book.start(contract_id(1))

    async def five_chunks_in() -> bool:
        return (await book.progress(contract_id(1))).received_bytes == 5 * CHUNK

    await until(five_chunks_in)
    await book.close()  # the node stops mid-delivery
    row = await buyer.db.run(lambda conn: load_delivery(conn, contract_id(1)))
    assert row is not None and row.state == "running" and row.received_bytes == 5 * CHUNK
    # Bytes written after the last recorded length (a crash between the two) are cut off.
    with buyer.blobs.partial_path(contract_id(1)).open("ab") as handle:
        handle.write(b"garbage not recorded")
    restarted = deliveries(buyer, wire)
    assert await restarted.resume_all() == [contract_id(1)]
    progress = await settled(restarted, contract_id(1))
    assert progress.complete and progress.digest_verified
    assert wire.offsets == [0, 5 * CHUNK]
    await restarted.close()


async def test_a_tampered_delivery_is_refused_and_can_be_restarted(
    seller: Side, buyer: Side
) -> None:
    await both_hold(seller, buyer, contract(1))
    blob = seller.blobs.path(DIGEST)
    original = blob.read_bytes()
    blob.write_bytes(original[:CHUNK] + b"\xff" * CHUNK + original[2 * CHUNK :])
    book = deliveries(buyer, Wire(seller_of(seller)))
    await book.start(contract_id(1))
    failed = await settled(book, contract_id(1))
    assert not failed.complete and not failed.digest_verified
    assert f"does not match the expected content digest {DIGEST.hex()}" in failed.error
    assert failed.received_bytes == 0  # what was received is discarded
    assert not buyer.blobs.partial_path(contract_id(1)).exists()
    assert buyer.blobs.size(DIGEST) is None
    blob.write_bytes(original)  # the seller's operator attaches the right data again
    await book.start(contract_id(1))
    progress = await settled(book, contract_id(1))
    assert progress.complete and progress.digest_verified and progress.error == ""
    await book.close()


async def test_a_refusal_by_the_seller_fails_the_delivery_with_its_reason(
    seller: Side, buyer: Side
) -> None:
    absent = hashlib.sha256(b"not attached").digest()
    await both_hold(seller, buyer, contract(4, digest=absent))
    book = deliveries(buyer, Wire(seller_of(seller)))
    await book.start(contract_id(4))
    failed = await settled(book, contract_id(4))
    assert "is not attached on node gd-gzde" in failed.error
    assert not failed.complete
    await book.close()


START_REFUSALS = [
    ("unknown contract", contract_id(99), NotFound, "is not on this node"),
    ("this node sold it", contract_id(2), FailedPrecondition, "this node is the seller"),
    ("not finalized", contract_id(3), FailedPrecondition, "only a finalized contract"),
    ("malformed id", "nonsense", InvalidArgument, "contract_id must be C"),
]


@pytest.mark.parametrize(
    ("asked", "error", "words"),
    [row[1:] for row in START_REFUSALS],
    ids=[row[0] for row in START_REFUSALS],
)
async def test_start_delivery_refuses(
    seller: Side, buyer: Side, asked: str, error: type[ProvexError], words: str
) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        put_contract(conn, "seller", contract(2))
        put_contract(conn, "buyer", contract(3, state=AGREED))

    await buyer.write(setup)
    book = deliveries(buyer, Wire(seller_of(seller)))
    with pytest.raises(error, match=words):
        await book.start(asked)
    await book.close()


async def test_progress_names_what_is_missing(seller: Side, buyer: Side) -> None:
    await buyer.write(lambda conn: put_contract(conn, "buyer", contract(1)))
    await buyer.write(lambda conn: put_contract(conn, "seller", contract(2)))
    book = deliveries(buyer, Wire(seller_of(seller)))
    with pytest.raises(NotFound, match="delivery start"):
        await book.progress(contract_id(1))
    with pytest.raises(NotFound, match="buyer's node keeps the progress"):
        await book.progress(contract_id(2))
    with pytest.raises(NotFound, match="is not on this node"):
        await book.progress(contract_id(7))
