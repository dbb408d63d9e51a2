"""The node's datasets: registration through the registry, and the certificates it answered.

``SubmitDataset`` stores the operator's request and queues it (outbox kind
``register_dataset``) in one transaction; the outbox delivers it to the
registry's ``RegisterDataset`` with the operator's idempotency key, so a
retry, a crash or a registry outage never registers twice. When the registry
answers, the node verifies the certificate bundle against its trust root
(:func:`provex.bundle.verify_certificate`) and stores it with the dataset id.
Status statements the node follows (suspend, revoke, reinstate) update the
certificate's status here.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from node import outbox
from node.listings import CertifiedDataset
from provex import bundle as bundles
from provex.envelope import Envelope
from provex.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from provex.ids import DatasetId
from provex.members import check_credit_code
from provex.trust import TrustRoot
from provex.v1 import common_pb2, dataset_pb2, node_pb2, registry_pb2

SCHEMA = """
-- Every dataset submitted on this node, by the operator's idempotency key. ``request`` is
-- the serialized RegisterDatasetRequest; ``certificate`` the verified Bundle once registered.
CREATE TABLE datasets (
    idempotency_key     TEXT PRIMARY KEY,
    request             BLOB NOT NULL,
    holder              TEXT NOT NULL,
    dataset_id          TEXT,
    version             INTEGER,
    certificate         BLOB,
    certificate_status  TEXT NOT NULL DEFAULT 'active'
        CHECK (certificate_status IN ('active', 'suspended', 'revoked')),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX datasets_by_id ON datasets (dataset_id, version);
CREATE INDEX datasets_by_holder ON datasets (holder, idempotency_key);
"""

REGISTER_KIND = "register_dataset"
MAX_KEY = 128
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

CertificateStatus = Literal["active", "suspended", "revoked"]
_STATUS: dict[CertificateStatus, common_pb2.Status.ValueType] = {
    "active": common_pb2.STATUS_ACTIVE,
    "suspended": common_pb2.STATUS_SUSPENDED,
    "revoked": common_pb2.STATUS_REVOKED,
}
_STATUS_NAME: dict[int, CertificateStatus] = {value: name for name, value in _STATUS.items()}


@dataclass(frozen=True)
class _Row:
    key: str
    request: registry_pb2.RegisterDatasetRequest
    dataset_id: str
    certificate: common_pb2.Bundle | None
    status: CertificateStatus


_COLUMNS = "idempotency_key, request, dataset_id, certificate, certificate_status"


def _row(row: Any) -> _Row:
    certificate = None if row[3] is None else common_pb2.Bundle.FromString(bytes(row[3]))
    return _Row(
        str(row[0]),
        registry_pb2.RegisterDatasetRequest.FromString(bytes(row[1])),
        str(row[2] or ""),
        certificate,
        _STATUS_NAME[_STATUS[row[4]]],
    )


def _record(conn: sqlite3.Connection, row: _Row) -> node_pb2.DatasetRecord:
    record = node_pb2.DatasetRecord(
        idempotency_key=row.key,
        dataset=row.request.dataset,
        dataset_id=row.dataset_id or row.request.dataset_id,
        status=_STATUS[row.status],
    )
    if row.certificate is not None:
        record.certificate.CopyFrom(row.certificate)
    item = outbox.get_row(conn, row.key)
    if item is not None:
        record.registration.CopyFrom(item.to_proto())
    return record


def submit_dataset(
    conn: sqlite3.Connection,
    request: node_pb2.SubmitDatasetRequest,
    now: datetime,
) -> node_pb2.DatasetRecord:
    """Store a registration request and queue it for the registry (caller's transaction).

    The registry validates the description in full; here the node checks what
    it alone knows: the key, that the holder is a member of this node, and
    that a new version names a dataset this node registered.
    """
    key = request.idempotency_key
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidArgument(f"idempotency_key must be 1..{MAX_KEY} characters, got {len(key)}")
    if not request.HasField("dataset"):
        raise InvalidArgument("dataset is required")
    holder = check_credit_code(request.dataset.holder, "dataset.holder")
    dataset_id = ""
    if request.dataset_id:
        try:
            dataset_id = str(DatasetId.parse(request.dataset_id))
        except InvalidArgument as error:
            raise InvalidArgument(f"dataset_id: {error}") from None
    outgoing = registry_pb2.RegisterDatasetRequest(
        idempotency_key=key, dataset=request.dataset, dataset_id=dataset_id
    )
    outgoing.dataset.holder = holder
    existing = conn.execute(
        f"SELECT {_COLUMNS} FROM datasets WHERE idempotency_key = ?", (key,)
    ).fetchone()
    if existing is not None:
        row = _row(existing)
        if row.request != outgoing:
            raise AlreadyExists(
                f"idempotency key {key} was used for a different dataset submission"
            )
        return _record(conn, row)
    if conn.execute("SELECT 1 FROM members WHERE credit_code = ?", (holder,)).fetchone() is None:
        raise FailedPrecondition(
            f"dataset.holder {holder} is not a member of this node: add the member first"
        )
    if dataset_id and (
        conn.execute(
            "SELECT 1 FROM datasets WHERE dataset_id = ? AND holder = ?", (dataset_id, holder)
        ).fetchone()
        is None
    ):
        raise NotFound(f"dataset {dataset_id} of holder {holder} was not registered by this node")
    conn.execute(
        "INSERT INTO datasets (idempotency_key, request, holder, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (key, outgoing.SerializeToString(), holder, now.isoformat(), now.isoformat()),
    )
    outbox.enqueue(conn, REGISTER_KIND, key, outgoing.SerializeToString(), now)
    found = conn.execute(f"SELECT {_COLUMNS} FROM datasets WHERE idempotency_key = ?", (key,))
    return _record(conn, _row(found.fetchone()))


def verify_registration(result: bytes, trust_root: TrustRoot) -> dataset_pb2.DatasetCertificate:
    """The certificate in a RegisterDatasetResponse, verified (VerificationError if not)."""
    response = registry_pb2.RegisterDatasetResponse.FromString(result)
    return bundles.verify_certificate(response.certificate, trust_root)


def on_registered(trust_root: TrustRoot, clock: Callable[[], datetime]) -> outbox.OnDone:
    """The outbox's completion of ``register_dataset``: verify, then store the certificate.

    A bundle that does not verify against the trust root fails the item
    (VerificationError), so an unverified certificate is never kept.
    """

    def done(conn: sqlite3.Connection, item: outbox.OutboxItemRow, result: bytes) -> None:
        certificate = verify_registration(result, trust_root)
        store_certificate(conn, item.key, result, certificate, clock())

    return done


def store_certificate(
    conn: sqlite3.Connection,
    key: str,
    result: bytes,
    certificate: dataset_pb2.DatasetCertificate,
    now: datetime,
) -> None:
    """Record the registry's verified answer for the submission ``key`` (outbox done)."""
    response = registry_pb2.RegisterDatasetResponse.FromString(result)
    conn.execute(
        "UPDATE datasets SET dataset_id = ?, version = ?, certificate = ?, updated_at = ? "
        "WHERE idempotency_key = ?",
        (
            certificate.dataset_id,
            certificate.version,
            response.certificate.SerializeToString(),
            now.isoformat(),
            key,
        ),
    )


def get_dataset(
    conn: sqlite3.Connection, *, dataset_id: str = "", idempotency_key: str = ""
) -> node_pb2.DatasetRecord:
    """A dataset by its id (latest version) or by the submission's key; NotFound otherwise."""
    if dataset_id:
        try:
            normalized = str(DatasetId.parse(dataset_id))
        except InvalidArgument as error:
            raise InvalidArgument(f"dataset_id: {error}") from None
        found = conn.execute(
            f"SELECT {_COLUMNS} FROM datasets WHERE dataset_id = ? ORDER BY version DESC LIMIT 1",
            (normalized,),
        ).fetchone()
        what = f"dataset {normalized}"
    elif idempotency_key:
        found = conn.execute(
            f"SELECT {_COLUMNS} FROM datasets WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
        what = f"submission {idempotency_key}"
    else:
        raise InvalidArgument("give dataset_id or idempotency_key")
    if found is None:
        raise NotFound(f"{what} is not on this node")
    return _record(conn, _row(found))


def list_datasets(
    conn: sqlite3.Connection, holder: str, page_size: int, page_token: str
) -> tuple[list[node_pb2.DatasetRecord], str]:
    """A page of datasets by submission key (optionally of one holder), and the next token."""
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {page_size} is above the maximum {MAX_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    try:
        after = base64.urlsafe_b64decode(page_token.encode("ascii")).decode() if page_token else ""
    except (binascii.Error, ValueError):
        raise InvalidArgument("page_token is not a token this node gave out") from None
    sql = f"SELECT {_COLUMNS} FROM datasets WHERE idempotency_key > ?"
    params: list[object] = [after]
    if holder:
        sql += " AND holder = ?"
        params.append(check_credit_code(holder, "holder"))
    sql += " ORDER BY idempotency_key LIMIT ?"
    params.append(size + 1)
    rows = [_row(row) for row in conn.execute(sql, params).fetchall()]
    records = [_record(conn, row) for row in rows[:size]]
    if len(rows) > size:
        return records, base64.urlsafe_b64encode(rows[size - 1].key.encode()).decode("ascii")
    return records, ""


def certified_dataset(conn: sqlite3.Connection, dataset_id: str) -> CertifiedDataset:
    """What a listing needs of a registered dataset (its latest certificate); NotFound if none."""
    record = get_dataset(conn, dataset_id=dataset_id)
    if not record.HasField("certificate"):
        raise FailedPrecondition(f"dataset {dataset_id} has no certificate yet")
    certificate = dataset_pb2.DatasetCertificate()
    certificate.ParseFromString(_certificate_payload(record.certificate))
    return CertifiedDataset(
        dataset_id=certificate.dataset_id,
        certificate_version=certificate.version,
        holder=certificate.dataset.holder,
        title=certificate.dataset.title,
        description=certificate.dataset.description,
        categories=tuple(certificate.dataset.categories),
        grade=int(certificate.grade),
        region_code=certificate.dataset_id.split("-")[0],
        tradable=True,  # The registry certifies only tradable categories.
        status=_STATUS_NAME[record.status],
    )


def attach_digest(record: node_pb2.DatasetRecord) -> bytes:
    """The SHA-256 that data attached to ``record`` must have (``dataset attach``).

    A certified dataset's is its certificate's content digest (what buyers
    verify); a dataset still waiting for its certificate has the digest of
    its submitted description. FailedPrecondition if there is none.
    """
    digest = record.dataset.content_digest
    if record.HasField("certificate"):
        certificate = dataset_pb2.DatasetCertificate()
        certificate.ParseFromString(_certificate_payload(record.certificate))
        digest = certificate.dataset.content_digest
    if len(digest) != 32:
        name = record.dataset_id or record.idempotency_key
        raise FailedPrecondition(
            f"dataset {name} has no 32-byte content digest to check attached data against"
        )
    return digest


def _certificate_payload(bundle: common_pb2.Bundle) -> bytes:
    return Envelope.from_json(bundle.envelope).payload


def apply_status(conn: sqlite3.Connection, dataset_id: str, status: int, now: datetime) -> int:
    """Record a dataset's new certificate status; the number of submissions it touched."""
    updated = conn.execute(
        "UPDATE datasets SET certificate_status = ?, updated_at = ? WHERE dataset_id = ?",
        (_STATUS_NAME[status], now.isoformat(), dataset_id),
    )
    return int(updated.rowcount)
