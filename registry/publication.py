"""Publishing signed facts: sign a document, log its envelope, answer bundles.

Everything the registry signs goes through :class:`Publisher`: the document
is serialized once, signed, and its DSSE JSON envelope appended to the
transparency log together with the domain rows that describe it (one
transaction). :func:`bundle_from_receipt` and :meth:`Publisher.bundle_for`
turn a log position into a ``provex.v1.Bundle`` any holder of the trust root
can verify offline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from provex import documents
from provex.checkpoint import SignedNote
from provex.envelope import SigningKey
from provex.v1 import common_pb2
from registry.transparency import LogReader, Receipt, Sequencer

RecordRows = Callable[[sqlite3.Connection, int, bytes], None]
"""``record(conn, log_index, envelope)``: domain rows written with the log entry."""


def bundle_from_receipt(envelope: bytes, receipt: Receipt) -> common_pb2.Bundle:
    """The bundle of a freshly appended entry: its proof against its batch's checkpoint."""
    return common_pb2.Bundle(
        envelope=envelope,
        log_index=receipt.log_index,
        inclusion_proof=list(receipt.inclusion_proof),
        checkpoint=receipt.checkpoint,
    )


def checkpoint_size(note: str) -> int:
    """The tree size a checkpoint note states (its second line)."""
    return int(SignedNote.parse(note).text.split("\n")[1])


class Publisher:
    """Signs documents with the issuer key and logs them through the sequencer."""

    def __init__(self, sequencer: Sequencer, reader: LogReader, issuer: Ed25519PrivateKey):
        self._sequencer = sequencer
        self._reader = reader
        self._issuer = SigningKey.of(issuer)

    async def publish(
        self,
        document: Message,
        record: RecordRows | None = None,
        keys: Sequence[Ed25519PrivateKey | SigningKey] | None = None,
    ) -> common_pb2.Bundle:
        """Sign ``document`` (issuer key unless ``keys``), log it with its rows, bundle it."""
        envelope = documents.sign_document(document, keys or [self._issuer]).to_json()
        return await self.log_envelope(envelope, record)

    async def log_envelope(
        self, envelope: bytes, record: RecordRows | None = None
    ) -> common_pb2.Bundle:
        """Log an already signed envelope (e.g. a trust root) with its rows."""

        def write(conn: sqlite3.Connection, log_index: int) -> None:
            if record is not None:
                record(conn, log_index, envelope)

        receipt = await self._sequencer.append(envelope, write)
        return bundle_from_receipt(envelope, receipt)

    async def bundle_for(self, envelope: bytes, log_index: int) -> common_pb2.Bundle:
        """A bundle for a stored entry, proved against the latest checkpoint."""
        note = await self._reader.latest_checkpoint()
        size = checkpoint_size(note)
        proof = await self._reader.inclusion_proof(log_index, size)
        return common_pb2.Bundle(
            envelope=envelope, log_index=log_index, inclusion_proof=proof, checkpoint=note
        )
