"""Publishing signed facts: sign a document, log its envelope, answer bundles.

Everything the registry signs goes through :class:`Publisher`: the document
is serialized once, signed, and its DSSE JSON envelope appended to the
transparency log together with the domain rows that describe it (one
transaction). :func:`bundle_from_receipt` and :meth:`Publisher.bundle_for`
turn a log position into a ``provex.v1.Bundle`` any holder of the trust root
can verify offline.

:meth:`Publisher.publish_group` is the bulk form: many documents of one type
signed in a tight loop (:class:`GroupSigner`, whose envelope bytes are exactly
:meth:`provex.envelope.Envelope.to_json`'s) and appended as one group of one
log batch, their rows written together (:meth:`Sequencer.append_group`).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from provex import documents
from provex.checkpoint import SignedNote
from provex.envelope import SigningKey, pae
from provex.v1 import common_pb2
from registry.transparency import GroupCheck, LogReader, Receipt, Sequencer

RecordRows = Callable[[sqlite3.Connection, int, bytes], None]
"""``record(conn, log_index, envelope)``: domain rows written with the log entry."""

GroupRows = Callable[[sqlite3.Connection, Sequence[int | None], Sequence[bytes]], None]
"""``write(conn, indexes, envelopes)``: a group's rows; each document's index (None: refused)."""


class GroupSigner:
    """Signs many documents of one type with one key: DSSE JSON envelopes, one signature each.

    The bytes are those of ``documents.sign_document(...).to_json()`` (sorted
    keys, compact, ASCII), assembled from a constant prefix instead of a
    ``json.dumps`` per document.
    """

    def __init__(self, key: SigningKey, message_class: type[Message]) -> None:
        """A signer of ``message_class`` documents."""
        self._sign = key.key.sign
        self._payload_type = documents.payload_type_of(message_class)
        middle = json.dumps(self._payload_type) + ',"signatures":[{"keyid":' + json.dumps(key.keyid)
        self._middle = ('","payloadType":' + middle + ',"sig":"').encode("ascii")

    def envelope(self, payload: bytes) -> bytes:
        """The signed envelope of a serialized document."""
        signature = self._sign(pae(self._payload_type, payload))
        return b"".join(
            (
                b'{"payload":"',
                base64.b64encode(payload),
                self._middle,
                base64.b64encode(signature),
                b'"}]}',
            )
        )


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
        self._group_signers: dict[type[Message], GroupSigner] = {}

    async def publish(
        self,
        document: Message,
        record: RecordRows | None = None,
        keys: Sequence[Ed25519PrivateKey | SigningKey] | None = None,
    ) -> common_pb2.Bundle:
        """Sign ``document`` (issuer key unless ``keys``), log it with its rows, bundle it."""
        if keys:
            envelope = documents.sign_document(document, keys).to_json()
        else:
            envelope = self._signer_for(type(document)).envelope(document.SerializeToString())
        return await self.log_envelope(envelope, record)

    def _signer_for(self, kind: type[Message]) -> GroupSigner:
        """The issuer's signer of documents of type ``kind``."""
        signer = self._group_signers.get(kind)
        if signer is None:
            signer = self._group_signers[kind] = GroupSigner(self._issuer, kind)
        return signer

    async def log_envelope(
        self, envelope: bytes, record: RecordRows | None = None
    ) -> common_pb2.Bundle:
        """Log an already signed envelope (e.g. a trust root) with its rows."""

        def write(conn: sqlite3.Connection, log_index: int) -> None:
            if record is not None:
                record(conn, log_index, envelope)

        receipt = await self._sequencer.append(envelope, write)
        return bundle_from_receipt(envelope, receipt)

    async def publish_group(
        self, documents: Sequence[Message], check: GroupCheck, write: GroupRows
    ) -> list[common_pb2.Bundle | Exception]:
        """Sign ``documents`` (one type, issuer key) and log them as one group of one batch.

        ``check(conn)`` refuses documents (an exception each, None to accept)
        and ``write(conn, indexes, envelopes)`` writes every accepted
        document's rows at once, both in the batch's transaction (see
        :meth:`Sequencer.append_group`). Each document's bundle or refusal, in
        order; raises if the group or its batch failed (nothing was stored).
        """
        if not documents:
            return []
        kind = type(documents[0])
        if any(type(document) is not kind for document in documents):
            raise TypeError("publish_group signs documents of one type")
        sign = self._signer_for(kind).envelope
        envelopes = [sign(document.SerializeToString()) for document in documents]
        answers = await self._sequencer.append_group(
            envelopes, check, partial(_write_group, write=write, envelopes=envelopes)
        )
        return [
            bundle_from_receipt(envelope, answer) if isinstance(answer, Receipt) else answer
            for envelope, answer in zip(envelopes, answers, strict=True)
        ]

    async def bundles_for(self, stored: Sequence[tuple[bytes, int]]) -> list[common_pb2.Bundle]:
        """Bundles of stored ``(envelope, log_index)`` pairs, against the latest checkpoint."""
        if not stored:
            return []
        note, proofs = await self._reader.latest_proofs([index for _, index in stored])
        return [
            common_pb2.Bundle(
                envelope=envelope, log_index=index, inclusion_proof=proof, checkpoint=note
            )
            for (envelope, index), proof in zip(stored, proofs, strict=True)
        ]

    async def bundle_for(self, envelope: bytes, log_index: int) -> common_pb2.Bundle:
        """A bundle for a stored entry, proved against the latest checkpoint."""
        note = await self._reader.latest_checkpoint()
        size = checkpoint_size(note)
        proof = await self._reader.inclusion_proof(log_index, size)
        return common_pb2.Bundle(
            envelope=envelope, log_index=log_index, inclusion_proof=proof, checkpoint=note
        )


def _write_group(
    conn: sqlite3.Connection,
    indexes: Sequence[int | None],
    *,
    write: GroupRows,
    envelopes: Sequence[bytes],
) -> None:
    write(conn, indexes, envelopes)
