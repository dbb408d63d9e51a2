"""Tests of registry.issuance: registration certificates and status statements, without gRPC.

A full registry state (``initialize``: trust root 1, catalog 1) in a temporary
directory, with a real writer Database, Sequencer and Publisher as ``serve``
builds them; nodes and members are inserted directly. Every bundle is
verified with :mod:`provex.bundle` against the trust root alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provex import bundle as bundles
from provex import trust
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
)
from provex.ids import CreditCode, DatasetId
from provex.v1 import common_pb2, dataset_pb2, registry_pb2
from registry.config import RegistryConfig
from registry.db import Database
from registry.issuance import MAX_BULK_CHUNK, Issuance, StatusSubject, SubjectKind
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.setup import initialize
from registry.state import StateLayout, load_keys
from registry.transparency import LogReader, Sequencer

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NODE = "gd-gzde"
OTHER_NODE = "gd-szde"
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5D0001").code  # officer
PLAIN = CreditCode.from_parts("9", "1", "440100", "MA5D0002").code  # no officer
FROZEN = CreditCode.from_parts("9", "1", "440100", "MA5D0003").code
FOREIGN = CreditCode.from_parts("9", "1", "440300", "MA5D0004").code  # member of gd-szde
STRANGER = CreditCode.from_parts("9", "1", "440300", "MA5D0005").code  # member of no node
ADMIN = "spiffe://provex.local/admin/alice"


def officer() -> bytes:
    return registry_pb2.SecurityOfficer(
        name="王芳", title="CSO", phone="+86 20 0000 0000", email="cso@example.cn"
    ).SerializeToString()


def insert_directory(conn: sqlite3.Connection) -> None:
    """Nodes and members as enrollment and ReportMember would leave them."""
    for node_id, region in ((NODE, "440100"), (OTHER_NODE, "440300")):
        conn.execute(
            "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, status, "
            "signing_key, certificate_fingerprint, certificate_expires_at, enrolled_at, "
            "log_index) VALUES (?, ?, ?, '127.0.0.1:1', 'active', ?, 'ff', ?, ?, 0)",
            (node_id, region, node_id, bytes(32), NOW.isoformat(), NOW.isoformat()),
        )
    for code, node_id, status, security in (
        (HOLDER, NODE, "active", officer()),
        (PLAIN, NODE, "active", b""),
        (FROZEN, NODE, "frozen", b""),
        (FOREIGN, OTHER_NODE, "active", b""),
    ):
        conn.execute(
            "INSERT INTO members (credit_code, node_id, name, region_code, country, "
            "security_officer, status, updated_at) VALUES (?, ?, ?, ?, 'CN', ?, ?, ?)",
            (code, node_id, f"member {code}", code[2:8], security, status, NOW.isoformat()),
        )


@dataclass
class Env:
    issuance: Issuance
    writer: Database
    root: trust.TrustRoot
    clock: list[datetime]

    def verify(self, bundle: common_pb2.Bundle) -> dataset_pb2.DatasetCertificate:
        return bundles.verify_certificate(bundle, self.root)

    def verify_statement(self, bundle: common_pb2.Bundle) -> dataset_pb2.StatusStatement:
        return bundles.verify_bundle(bundle, self.root, dataset_pb2.StatusStatement).document


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    state = tmp_path / "registry"
    config = RegistryConfig()
    await initialize(state, config, NOW)
    layout = StateLayout(state)
    keys = load_keys(state)
    writer = await Database.open(layout.database, migrations=MIGRATIONS)
    reader = await Database.open(layout.database, readonly=True, migrations=MIGRATIONS)
    sequencer = Sequencer(writer, keys.log_signer(config.log_origin), config.log_origin)
    await sequencer.start()
    await writer.transaction(insert_directory)
    log_reader = LogReader(reader)
    clock = [NOW]
    issuance = Issuance(
        reader, Publisher(sequencer, log_reader, keys.issuer), log_reader, clock=lambda: clock[0]
    )
    envelope = layout.trust_root(1).read_bytes()
    root = trust.load_trust_root(envelope, trust.digest_of(envelope), NOW).root
    try:
        yield Env(issuance, writer, root, clock)
    finally:
        await sequencer.stop()
        await reader.close()
        await writer.close()


def description(number: int = 0, **changes: object) -> dataset_pb2.DatasetDescription:
    holder = str(changes.pop("holder", HOLDER))
    dataset = dataset_pb2.DatasetDescription(
        holder=holder,
        title=f"道路交通流量 {number}",
        description="Hourly counts at signalised intersections.",
        categories=["transport.road.traffic_flow"],
        content_digest=hashlib.sha256(f"data {number}".encode()).digest(),
        size_bytes=1_000 + number,
        record_count=10,
        lawful_source="own sensors of the municipal traffic authority",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )
    for name, value in changes.items():
        if isinstance(value, list):
            field = getattr(dataset, name)
            del field[:]
            field.extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(dataset, name).CopyFrom(value)
            if not value.ByteSize():  # An empty message: unset the field.
                dataset.ClearField(name)
        else:
            setattr(dataset, name, value)
    return dataset


def request(
    key: str, dataset: dataset_pb2.DatasetDescription | None = None, dataset_id: str = ""
) -> registry_pb2.RegisterDatasetRequest:
    return registry_pb2.RegisterDatasetRequest(
        idempotency_key=key, dataset=dataset or description(), dataset_id=dataset_id
    )


async def test_registration_answers_a_verifiable_bundle(env: Env) -> None:
    bundle = await env.issuance.register(NODE, request("k-1"))
    certificate = env.verify(bundle)
    dataset_id = DatasetId.parse(certificate.dataset_id)
    assert (dataset_id.region, dataset_id.year) == ("440100", 2026)
    assert certificate.version == 1
    assert certificate.node_id == NODE
    assert certificate.grade == common_pb2.GRADE_GENERAL
    assert certificate.catalog_version == 1
    assert certificate.grade_reasons[0].startswith("grade GENERAL")
    assert certificate.dataset.holder == HOLDER
    fetched, status = await env.issuance.certificate(certificate.dataset_id)
    assert fetched.envelope == bundle.envelope
    assert status == common_pb2.STATUS_ACTIVE
    env.verify(fetched)


async def test_lower_case_codes_are_normalized(env: Env) -> None:
    dataset = description(holder=HOLDER.lower())
    certificate = env.verify(await env.issuance.register(NODE, request("k-lower", dataset)))
    assert certificate.dataset.holder == HOLDER
    assert certificate.dataset.rights.processing_user == HOLDER


async def test_same_key_same_request_is_the_same_certificate(env: Env) -> None:
    first = await env.issuance.register(NODE, request("k-1"))
    again = await env.issuance.register(NODE, request("k-1"))
    assert again.envelope == first.envelope
    assert again.log_index == first.log_index
    env.verify(again)
    # The key is per node: another node may use it for its own member.
    other = await env.issuance.register(OTHER_NODE, request("k-1", description(holder=FOREIGN)))
    assert env.verify(other).dataset_id != env.verify(first).dataset_id


async def test_same_key_different_request_is_already_exists(env: Env) -> None:
    await env.issuance.register(NODE, request("k-1"))
    with pytest.raises(AlreadyExists, match="idempotency key k-1 was used for a different"):
        await env.issuance.register(NODE, request("k-1", description(title="changed")))


async def test_concurrent_duplicates_get_one_certificate(env: Env) -> None:
    results = await asyncio.gather(
        *(env.issuance.register(NODE, request("k-dup")) for _ in range(20))
    )
    assert len({r.envelope for r in results}) == 1
    # The next new registration takes the very next serial: nothing was burnt.
    first = DatasetId.parse(env.verify(results[0]).dataset_id).serial
    following = env.verify(await env.issuance.register(NODE, request("k-next", description(1))))
    assert DatasetId.parse(following.dataset_id).serial == first + 1


async def test_re_registration_is_a_new_version_of_the_same_id(env: Env) -> None:
    first = env.verify(await env.issuance.register(NODE, request("k-1")))
    changed = description(title="道路交通流量 v2", size_bytes=5_000)
    second = env.verify(
        await env.issuance.register(NODE, request("k-2", changed, first.dataset_id.lower()))
    )
    assert second.dataset_id == first.dataset_id
    assert second.version == 2
    latest, _ = await env.issuance.certificate(first.dataset_id)
    assert env.verify(latest).version == 2
    old, _ = await env.issuance.certificate(first.dataset_id, 1)
    assert env.verify(old).dataset.title == first.dataset.title
    with pytest.raises(NotFound, match="version 7"):
        await env.issuance.certificate(first.dataset_id, 7)


async def test_re_registration_refusals(env: Env) -> None:
    mine = env.verify(await env.issuance.register(NODE, request("k-1"))).dataset_id
    theirs = env.verify(
        await env.issuance.register(OTHER_NODE, request("k-1", description(holder=FOREIGN)))
    ).dataset_id
    unknown = str(DatasetId("440100", 2026, 9_999))
    with pytest.raises(NotFound, match=f"dataset {unknown} does not exist"):
        await env.issuance.register(NODE, request("k-2", dataset_id=unknown))
    with pytest.raises(PermissionDenied, match="another node"):
        await env.issuance.register(NODE, request("k-3", dataset_id=theirs))
    with pytest.raises(PermissionDenied, match=f"belongs to holder {HOLDER}"):
        await env.issuance.register(NODE, request("k-4", description(holder=PLAIN), mine))


def _mutate(**changes: object) -> Callable[[], registry_pb2.RegisterDatasetRequest]:
    return lambda: request("k-bad", description(**changes))


REFUSALS: dict[str, tuple[Callable[[], registry_pb2.RegisterDatasetRequest], type, str]] = {
    "empty key": (
        lambda: request(""),
        InvalidArgument,
        "idempotency_key must be 1..128",
    ),
    "long key": (lambda: request("k" * 129), InvalidArgument, "idempotency_key"),
    "no dataset": (
        lambda: registry_pb2.RegisterDatasetRequest(idempotency_key="k"),
        InvalidArgument,
        "dataset is required",
    ),
    "bad holder": (_mutate(holder="91440100MA5D00010X"), InvalidArgument, "dataset.holder"),
    "empty title": (_mutate(title=" "), InvalidArgument, "dataset.title"),
    "long title": (_mutate(title="x" * 201), InvalidArgument, "dataset.title"),
    "long description": (
        _mutate(description="x" * 10_001),
        InvalidArgument,
        "dataset.description",
    ),
    "no category": (_mutate(categories=[]), InvalidArgument, "dataset.categories"),
    "eleven categories": (
        _mutate(categories=[f"transport.c{i}" for i in range(11)]),
        InvalidArgument,
        "dataset.categories",
    ),
    "repeated category": (
        _mutate(categories=["transport.road", "transport.road"]),
        InvalidArgument,
        "listed twice",
    ),
    "short digest": (
        _mutate(content_digest=b"x" * 31),
        InvalidArgument,
        r"dataset.content_digest must be 32 bytes \(SHA-256\)",
    ),
    "empty dataset": (_mutate(size_bytes=0), InvalidArgument, "dataset.size_bytes"),
    "bad language": (_mutate(language="zh_CN!"), InvalidArgument, "dataset.language"),
    "more sensitive than individuals": (
        _mutate(
            personal_info=common_pb2.PersonalInfoProfile(individuals=1, sensitive_individuals=2)
        ),
        InvalidArgument,
        "sensitive_individuals",
    ),
    "no lawful source": (
        _mutate(lawful_source=""),
        FailedPrecondition,
        "missing evidence: lawful source statement",
    ),
    "no rights": (
        _mutate(rights=dataset_pb2.DataRights()),
        FailedPrecondition,
        "missing evidence: data rights",
    ),
    "bad right": (
        _mutate(
            rights=dataset_pb2.DataRights(
                resource_holder=HOLDER, processing_user="nope", product_operator=HOLDER
            )
        ),
        InvalidArgument,
        "dataset.rights.processing_user",
    ),
    "bad source id": (
        _mutate(derived_from=["440100-2026-0000001-0"]),
        InvalidArgument,
        "dataset.derived_from",
    ),
    "unknown source": (
        _mutate(derived_from=[str(DatasetId("440100", 2026, 4242))]),
        NotFound,
        "dataset.derived_from",
    ),
    "unknown category": (
        _mutate(categories=["transport.teleportation"]),
        NotFound,
        "transport.teleportation",
    ),
    "core data": (
        _mutate(categories=["energy.nuclear"]),
        FailedPrecondition,
        "rule tradable-categories-only",
    ),
    "non-tradable category": (
        _mutate(categories=["finance.banking.accounts"]),
        FailedPrecondition,
        "rule tradable-categories-only",
    ),
    "holder of another node": (
        _mutate(holder=FOREIGN),
        PermissionDenied,
        f"holder {FOREIGN} is not a member of node {NODE}",
    ),
    "holder of no node": (_mutate(holder=STRANGER), PermissionDenied, "not a member"),
    "frozen holder": (_mutate(holder=FROZEN), FailedPrecondition, f"holder {FROZEN} is frozen"),
    "important data without officer": (
        _mutate(holder=PLAIN, categories=["geo.mapping"]),
        FailedPrecondition,
        f"holder {PLAIN} has no security officer; important data needs one",
    ),
    "many individuals without officer": (
        _mutate(holder=PLAIN, personal_info=common_pb2.PersonalInfoProfile(individuals=10**7)),
        FailedPrecondition,
        "no security officer",
    ),
    "malformed dataset id": (
        lambda: request("k", dataset_id="440100-2026-1-1"),
        InvalidArgument,
        "dataset_id",
    ),
}


@pytest.mark.parametrize("make, error, message", REFUSALS.values(), ids=REFUSALS.keys())
async def test_refusals(
    env: Env,
    make: Callable[[], registry_pb2.RegisterDatasetRequest],
    error: type[ProvexError],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        await env.issuance.register(NODE, make())


async def test_unenrolled_node_is_refused(env: Env) -> None:
    with pytest.raises(PermissionDenied, match="not enrolled"):
        await env.issuance.register("gd-nowhere", request("k"))


async def test_important_data_with_officer_and_derived_grades(env: Env) -> None:
    important = env.verify(
        await env.issuance.register(NODE, request("k-map", description(categories=["geo.mapping"])))
    )
    assert important.grade == common_pb2.GRADE_IMPORTANT
    derived = env.verify(
        await env.issuance.register(
            NODE, request("k-derived", description(1, derived_from=[important.dataset_id]))
        )
    )
    assert derived.grade == common_pb2.GRADE_IMPORTANT
    assert any("derived-at-least-sources" in line for line in derived.grade_reasons)
    with pytest.raises(FailedPrecondition, match="no security officer"):
        await env.issuance.register(
            NODE,
            request("k-plain", description(2, holder=PLAIN, derived_from=[important.dataset_id])),
        )


async def test_concurrent_registrations_get_distinct_dense_serials(env: Env) -> None:
    results = await asyncio.gather(
        *(env.issuance.register(NODE, request(f"k-{n}", description(n))) for n in range(200))
    )
    serials = sorted(DatasetId.parse(env.verify(r).dataset_id).serial for r in results)
    assert serials == list(range(1, 201))
    env.clock[0] = datetime(2027, 1, 1, tzinfo=UTC)
    next_year = env.verify(await env.issuance.register(NODE, request("k-2027", description(999))))
    assert next_year.dataset_id.startswith("440100-2027-0000001-")


async def test_record_callback_rechecks_a_stale_member_cache(env: Env) -> None:
    first = env.verify(await env.issuance.register(NODE, request("k-1")))

    def move(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE members SET node_id = ? WHERE credit_code = ?", (OTHER_NODE, HOLDER))

    await env.writer.transaction(move)
    with pytest.raises(PermissionDenied, match="not a member of node gd-gzde"):
        await env.issuance.register(NODE, request("k-2", description(2)))

    def back(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE members SET node_id = ? WHERE credit_code = ?", (NODE, HOLDER))

    await env.writer.transaction(back)
    third = env.verify(await env.issuance.register(NODE, request("k-3", description(3))))
    # The refused registration gave its serial back.
    assert DatasetId.parse(third.dataset_id).serial == DatasetId.parse(first.dataset_id).serial + 1


async def test_bulk_answers_in_order_with_errors_per_item(env: Env) -> None:
    def item(n: int) -> registry_pb2.RegisterDatasetRequest:
        if n % 50 == 7:
            return request(f"bulk-{n}", description(n, holder=FOREIGN))
        if n % 50 == 9:
            return request(f"bulk-{n}", description(n, content_digest=b"short"))
        return request(f"bulk-{n}", description(n))

    async def chunks() -> AsyncIterator[list[registry_pb2.RegisterDatasetRequest]]:
        for start in range(0, 300, 70):  # Chunks of 70 and a last one of 20.
            yield [item(n) for n in range(start, min(start + 70, 300))]

    answered = [chunk async for chunk in env.issuance.register_many(NODE, chunks(), window=2)]
    assert [len(chunk) for chunk in answered] == [70, 70, 70, 70, 20]
    outcomes = [outcome for chunk in answered for outcome in chunk]
    assert [key for key, _ in outcomes] == [f"bulk-{n}" for n in range(300)]
    for n, (_, outcome) in enumerate(outcomes):
        if n % 50 == 7:
            assert isinstance(outcome, PermissionDenied)
        elif n % 50 == 9:
            assert isinstance(outcome, InvalidArgument)
        else:
            assert isinstance(outcome, common_pb2.Bundle)
            assert env.verify(outcome).dataset.size_bytes == 1_000 + n


@pytest.mark.parametrize("size", [0, MAX_BULK_CHUNK + 1])
async def test_a_bulk_chunk_of_a_bad_size_ends_the_stream(env: Env, size: int) -> None:
    async def chunks() -> AsyncIterator[list[registry_pb2.RegisterDatasetRequest]]:
        yield [request(f"size-{size}-{n}", description(n)) for n in range(size)]

    with pytest.raises(InvalidArgument, match=r"registrations: a chunk holds 1\.\.1000"):
        _ = [chunk async for chunk in env.issuance.register_many(NODE, chunks())]


async def test_dataset_status_statements(env: Env) -> None:
    certificate = env.verify(await env.issuance.register(NODE, request("k-1")))
    subject = Issuance.subject(SubjectKind.DATASET, certificate.dataset_id)
    status, statement = await env.issuance.status(subject)
    assert (status, statement) == (common_pb2.STATUS_ACTIVE, None)

    suspended = await env.issuance.set_status(
        ADMIN, subject, common_pb2.STATUS_SUSPENDED, "complaint under review"
    )
    document = env.verify_statement(suspended)
    assert document.dataset_id == certificate.dataset_id
    assert document.actor.spiffe_id == ADMIN
    status, latest = await env.issuance.status(subject)
    assert status == common_pb2.STATUS_SUSPENDED
    assert latest is not None and latest.envelope == suspended.envelope
    _, status = await env.issuance.certificate(certificate.dataset_id)
    assert status == common_pb2.STATUS_SUSPENDED

    await env.issuance.set_status(ADMIN, subject, common_pb2.STATUS_ACTIVE, "review closed")
    assert (await env.issuance.status(subject))[0] == common_pb2.STATUS_ACTIVE
    await env.issuance.set_status(ADMIN, subject, common_pb2.STATUS_REVOKED, "unlawful source")
    with pytest.raises(FailedPrecondition, match="never reinstated"):
        await env.issuance.set_status(ADMIN, subject, common_pb2.STATUS_ACTIVE, "oops")
    with pytest.raises(FailedPrecondition, match="revoked; it gets no new versions"):
        await env.issuance.register(NODE, request("k-2", description(2), certificate.dataset_id))

    feed = [item async for item in env.issuance.watch(0, follow=False)]
    assert [env.verify_statement(b).status for b, _ in feed] == [
        common_pb2.STATUS_SUSPENDED,
        common_pb2.STATUS_ACTIVE,
        common_pb2.STATUS_REVOKED,
    ]
    assert {version for _, version in feed} == {1}
    after_first = [item async for item in env.issuance.watch(feed[0][0].log_index, follow=False)]
    assert len(after_first) == 2


async def test_status_refusals(env: Env) -> None:
    unknown = StatusSubject(SubjectKind.DATASET, str(DatasetId("440100", 2026, 77)))
    with pytest.raises(NotFound):
        await env.issuance.set_status(ADMIN, unknown, common_pb2.STATUS_SUSPENDED, "x")
    member = Issuance.subject(SubjectKind.MEMBER, PLAIN)
    with pytest.raises(InvalidArgument, match="never revoked"):
        await env.issuance.set_status(ADMIN, member, common_pb2.STATUS_REVOKED, "x")
    with pytest.raises(InvalidArgument, match="reason is required"):
        await env.issuance.set_status(ADMIN, member, common_pb2.STATUS_SUSPENDED, "")
    with pytest.raises(InvalidArgument, match="status must be"):
        await env.issuance.set_status(ADMIN, member, common_pb2.STATUS_UNSPECIFIED, "x")
    with pytest.raises(InvalidArgument, match="member"):
        Issuance.subject(SubjectKind.MEMBER, "not-a-code")
    node_status, _ = await env.issuance.status(Issuance.subject(SubjectKind.NODE, NODE))
    assert node_status == common_pb2.STATUS_ACTIVE


async def test_freezing_a_member_stops_its_registrations(env: Env) -> None:
    await env.issuance.register(NODE, request("k-1"))  # The member is cached as active.
    member = Issuance.subject(SubjectKind.MEMBER, HOLDER)
    frozen = await env.issuance.set_status(ADMIN, member, common_pb2.STATUS_SUSPENDED, "audit")
    assert env.verify_statement(frozen).member == HOLDER
    assert (await env.issuance.status(member))[0] == common_pb2.STATUS_SUSPENDED
    with pytest.raises(FailedPrecondition, match="is frozen"):
        await env.issuance.register(NODE, request("k-2", description(2)))
    await env.issuance.set_status(ADMIN, member, common_pb2.STATUS_ACTIVE, "audit passed")
    env.verify(await env.issuance.register(NODE, request("k-3", description(3))))


async def test_watch_follows_new_statements(env: Env) -> None:
    certificate = env.verify(await env.issuance.register(NODE, request("k-1")))
    subject = Issuance.subject(SubjectKind.DATASET, certificate.dataset_id)
    seen: list[common_pb2.Bundle] = []

    async def follow() -> None:
        async for bundle, _ in env.issuance.watch(0, follow=True):
            seen.append(bundle)
            if len(seen) == 2:
                return

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await env.issuance.set_status(ADMIN, subject, common_pb2.STATUS_SUSPENDED, "one")
    await env.issuance.set_status(ADMIN, subject, common_pb2.STATUS_ACTIVE, "two")
    await asyncio.wait_for(watcher, 5)
    assert [env.verify_statement(b).reason for b in seen] == ["one", "two"]
