"""Witnessing: the nodes' cosignatures of the log's checkpoints (DESIGN.md section 5).

A node verifies a checkpoint (signature, consistency with the last one it
kept), adds its ``cosignature/v1`` line (c2sp.org/tlog-cosignature, signed by
``provex.checkpoint.CosignatureSigner(node_id, signing key)``) and hands the
note back with ``LogService.SubmitCosignature``. The registry keeps the line
and serves it to everyone with ``GetCheckpoint(with_cosignatures=True)``, so
that a client can demand that provinces saw the same checkpoint.

Three layers, so that the servicer stays thin:

* pure verification: :func:`parse_submission` (is it a signed checkpoint
  note at all) and :func:`verify_submission` (is it a checkpoint this
  registry signed, with a valid cosignature of the calling node), and
  :func:`cosigned_note` (a stored note plus stored lines, as one signed note);
* storage: small functions over the ``cosignatures`` table of migration 5 of
  :mod:`registry.schema`, one row per (checkpoint size, node): that node's
  newest line for that checkpoint;
* :class:`WitnessBook`, what ``LogService`` calls.

Refusals (every message names what is wrong):

* ``INVALID_ARGUMENT``: an empty note; a note that is not a signed note, or
  whose text is not a checkpoint; a cosignature time more than
  :data:`MAX_CLOCK_SKEW` seconds ahead of the registry's clock;
* ``PERMISSION_DENIED``: a note that carries other nodes' cosignatures but none
  of the caller (a node submits only its own, as everywhere in the registry);
* ``FAILED_PRECONDITION``: a checkpoint of another log origin, of a size the
  registry signed no checkpoint for, or different from the one it signed for
  that size (a fork, or a forgery); a missing or invalid log signature; no
  cosignature line of the caller; a line of the caller under another key
  (key hash) than its enrolled signing key; a cosignature that does not verify.

Lines of other keys in a submitted note (e.g. other nodes' cosignatures, when
the node cosigned a note fetched with cosignatures) are ignored: only the
caller's line is checked and stored. A repeat is idempotent: the same line
(or an older one) leaves the stored line as it is; a newer timestamp replaces
it. Cosignatures are not registry statements and are not logged.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from provex.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    CosignatureVerifier,
    NoteSignature,
    NoteVerifier,
    SignedNote,
    cosignature_timestamp,
)
from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    VerificationError,
)
from provex.timestamps import utc_now
from registry.db import Database

__all__ = (
    "MAX_CLOCK_SKEW",
    "Submission",
    "WitnessBook",
    "WitnessCosignature",
    "cosigned_note",
    "parse_submission",
    "verify_submission",
)

MAX_CLOCK_SKEW = 600
"""Seconds a cosignature's time may be ahead of the registry's clock."""


# ---------------------------------------------------------------- pure verification


@dataclass(frozen=True)
class Submission:
    """A submitted note that parses: the signed note and the checkpoint in its text."""

    note: SignedNote
    checkpoint: Checkpoint


@dataclass(frozen=True)
class WitnessCosignature:
    """A verified cosignature of one node for the checkpoint of one size."""

    size: int
    node_id: str
    line: str
    """The note's signature line ``— <node id> <base64>``, without its newline."""
    timestamp: int
    """The POSIX time inside the cosignature."""


def parse_submission(note: str) -> Submission:
    """The signed note and its checkpoint; InvalidArgument if ``note`` is neither."""
    if not note:
        raise InvalidArgument(
            "checkpoint is required: the checkpoint note with your cosignature line added"
        )
    try:
        signed = SignedNote.parse(note)
    except VerificationError as error:
        raise InvalidArgument(f"checkpoint is not a signed note: {error}") from None
    try:
        checkpoint = Checkpoint.parse(signed.text)
    except VerificationError as error:
        raise InvalidArgument(f"checkpoint note text is not a checkpoint: {error}") from None
    return Submission(signed, checkpoint)


def _line(signature: NoteSignature) -> str:
    return signature.to_line()[:-1]


def _callers_lines(
    submission: Submission, node_id: str, log_verifier: NoteVerifier
) -> list[NoteSignature]:
    """The lines named after the calling node; refuse a note without one."""
    mine = [s for s in submission.note.signatures if s.name == node_id]
    if mine:
        return mine
    others = sorted({s.name for s in submission.note.signatures if s.name != log_verifier.name})
    if others:
        raise PermissionDenied(
            f"node {node_id} may submit only its own cosignature; the note carries "
            f"cosignature lines of {', '.join(others)} but none of {node_id}"
        )
    raise FailedPrecondition(
        f"the note carries no cosignature of node {node_id}: add a cosignature/v1 line "
        f"named {node_id}, signed with the node's enrolled signing key"
    )


def _check_signed_by_registry(
    submission: Submission, signed_note: str | None, log_verifier: NoteVerifier
) -> None:
    """The note's text must be the checkpoint stored for its size, with a valid log signature."""
    checkpoint = submission.checkpoint
    if checkpoint.origin != log_verifier.name:
        raise VerificationError(
            f"the checkpoint is for log origin {checkpoint.origin!r}, "
            f"not this registry's log {log_verifier.name!r}"
        )
    if signed_note is None:
        raise VerificationError(
            f"the registry signed no checkpoint for tree size {checkpoint.size}"
        )
    if SignedNote.parse(signed_note).text != submission.note.text:
        raise VerificationError(
            f"the checkpoint of tree size {checkpoint.size} differs from the one the "
            "registry signed for that size"
        )
    log_key = (log_verifier.name, log_verifier.key_hash)
    lines = [s for s in submission.note.signatures if (s.name, s.key_hash) == log_key]
    if not lines:
        raise VerificationError(
            f"the note carries no signature of the log key {log_key[0]}+{log_key[1]:08x}"
        )
    if not log_verifier.verify(submission.note.text.encode("utf-8"), lines[0].signature):
        raise VerificationError(
            f"the log signature {log_key[0]}+{log_key[1]:08x} on the note does not verify"
        )


def verify_submission(
    submission: Submission,
    *,
    node_id: str,
    node_key: bytes,
    signed_note: str | None,
    log_verifier: NoteVerifier,
    now: float,
) -> WitnessCosignature:
    """The calling node's verified cosignature in ``submission``, or why it is refused.

    ``node_key`` is the node's enrolled Ed25519 signing key (raw 32 bytes);
    ``signed_note`` is the checkpoint note the registry stored for the
    submitted size (None if it signed none); ``log_verifier`` is the log's
    key, named after the log origin; ``now`` is the registry's POSIX time.
    """
    witness = CosignatureVerifier(node_id, node_key)
    mine = _callers_lines(submission, node_id, log_verifier)
    _check_signed_by_registry(submission, signed_note, log_verifier)
    matching = [s for s in mine if s.key_hash == witness.key_hash]
    if not matching:
        hashes = ", ".join(f"{s.key_hash:08x}" for s in mine)
        raise VerificationError(
            f"the cosignature line of node {node_id} has key hash {hashes}, but the "
            f"node's enrolled cosignature/v1 key is {node_id}+{witness.key_hash:08x}"
        )
    (line,) = matching
    if not witness.verify(submission.note.text.encode("utf-8"), line.signature):
        raise VerificationError(
            f"the cosignature of node {node_id} does not verify with its enrolled signing key"
        )
    timestamp = cosignature_timestamp(line.signature)
    if timestamp > now + MAX_CLOCK_SKEW:
        raise InvalidArgument(
            f"the cosignature time {timestamp} is {timestamp - int(now)} s ahead of the "
            f"registry's clock (at most {MAX_CLOCK_SKEW} s allowed)"
        )
    return WitnessCosignature(submission.checkpoint.size, node_id, _line(line), timestamp)


def cosigned_note(note: str, lines: Sequence[str]) -> str:
    """``note`` (a checkpoint signed by the log) with the cosignature ``lines`` appended.

    The log's signature stays first and the others are sorted by key name,
    then key hash, as :func:`provex.checkpoint.add_signature` orders them. A
    line of a key the note has already, and lines beyond the note's limit of
    :data:`~provex.checkpoint.MAX_SIGNATURES` signatures (``lines`` come
    newest first), are left out.
    """
    signed = SignedNote.parse(note)
    if not lines:
        return note
    keys = {(s.name, s.key_hash) for s in signed.signatures}
    others: list[NoteSignature] = []
    for line in lines:
        if len(signed.signatures) + len(others) >= MAX_SIGNATURES:
            break
        (signature,) = SignedNote.parse(f"{signed.text}\n{line}\n").signatures
        if (signature.name, signature.key_hash) not in keys:
            keys.add((signature.name, signature.key_hash))
            others.append(signature)
    first, *rest = signed.signatures
    ordered = sorted([*rest, *others], key=lambda s: (s.name, s.key_hash))
    return SignedNote(signed.text, (first, *ordered)).format()


# ---------------------------------------------------------------- storage


def _signed_checkpoint(conn: sqlite3.Connection, size: int) -> str | None:
    row = conn.execute("SELECT note FROM log_checkpoints WHERE size = ?", (size,)).fetchone()
    return None if row is None else str(row[0])


def _node_key(conn: sqlite3.Connection, node_id: str) -> bytes | None:
    row = conn.execute("SELECT signing_key FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _submission_inputs(
    conn: sqlite3.Connection, size: int, node_id: str
) -> tuple[str | None, bytes | None]:
    """The checkpoint signed for ``size`` and the node's signing key (None: none)."""
    return _signed_checkpoint(conn, size), _node_key(conn, node_id)


def _store(conn: sqlite3.Connection, cosignature: WitnessCosignature, received_at: str) -> int:
    """Keep the node's newest line for the checkpoint; the count of nodes that cosigned it."""
    conn.execute(
        "INSERT INTO cosignatures (size, node_id, signature_line, timestamp, received_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (size, node_id) DO UPDATE SET "
        "signature_line = excluded.signature_line, timestamp = excluded.timestamp, "
        "received_at = excluded.received_at "
        "WHERE excluded.timestamp > cosignatures.timestamp "
        "OR (excluded.timestamp = cosignatures.timestamp "
        "AND excluded.signature_line <> cosignatures.signature_line)",
        (
            cosignature.size,
            cosignature.node_id,
            cosignature.line,
            cosignature.timestamp,
            received_at,
        ),
    )
    return _witness_count(conn, cosignature.size)


def _witness_count(conn: sqlite3.Connection, size: int) -> int:
    row = conn.execute("SELECT count(*) FROM cosignatures WHERE size = ?", (size,)).fetchone()
    return int(row[0])


def _cosignature_lines(conn: sqlite3.Connection, size: int, limit: int) -> list[str]:
    """The stored lines for the checkpoint of ``size``, newest first, at most ``limit``."""
    rows = conn.execute(
        "SELECT signature_line FROM cosignatures WHERE size = ? "
        "ORDER BY timestamp DESC, node_id LIMIT ?",
        (size, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _last_by_node(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """Each node's largest cosigned checkpoint size and when the registry received that line."""
    rows = conn.execute(
        "SELECT node_id, MAX(size), received_at FROM cosignatures GROUP BY node_id"
    ).fetchall()
    return {str(row[0]): (int(row[1]), str(row[2])) for row in rows}


def _latest_with_lines(conn: sqlite3.Connection) -> tuple[str, list[str]]:
    """The latest checkpoint note and the cosignature lines stored for it (one snapshot)."""
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT size, checkpoint FROM log_state WHERE id = 1").fetchone()
        if row is None:
            raise NotFound("the log has no checkpoint yet (its sequencer never started)")
        return str(row[1]), _cosignature_lines(conn, int(row[0]), MAX_SIGNATURES - 1)
    finally:
        conn.execute("COMMIT")


# ---------------------------------------------------------------- the book


class WitnessBook:
    """Takes nodes' cosignatures of the log's checkpoints and serves them with the checkpoint."""

    def __init__(
        self,
        writer: Database,
        reader: Database,
        log_verifier: NoteVerifier,
        *,
        clock: Callable[[], float] = time.time,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """``log_verifier`` is the log's checkpoint key, named after the log origin.

        ``clock`` gives the POSIX time cosignature times are checked against;
        ``now`` the time recorded as ``received_at``.
        """
        self._writer = writer
        self._reader = reader
        self._log_verifier = log_verifier
        self._clock = clock
        self._now = now

    async def submit(self, node_id: str, note: str) -> int:
        """Verify and keep ``node_id``'s cosignature in ``note``; the checkpoint's witness count.

        ``node_id`` is the calling node, as authenticated (an active node).
        """
        submission = parse_submission(note)
        signed_note, node_key = await self._reader.run(
            partial(_submission_inputs, size=submission.checkpoint.size, node_id=node_id)
        )
        if node_key is None:
            raise PermissionDenied(f"node {node_id} is not enrolled")
        cosignature = verify_submission(
            submission,
            node_id=node_id,
            node_key=node_key,
            signed_note=signed_note,
            log_verifier=self._log_verifier,
            now=self._clock(),
        )
        received_at = self._now().isoformat()
        return await self._writer.transaction(
            partial(_store, cosignature=cosignature, received_at=received_at)
        )

    async def witnesses(self, size: int) -> int:
        """How many nodes cosigned the checkpoint of ``size``."""
        return await self._reader.run(partial(_witness_count, size=size))

    async def last_cosigned(self) -> dict[str, tuple[int, datetime]]:
        """Per node id: the largest checkpoint size it cosigned and when that line arrived."""
        found = await self._reader.run(_last_by_node)
        return {
            node: (size, datetime.fromisoformat(received))
            for node, (size, received) in found.items()
        }

    async def cosigned_checkpoint(self) -> str:
        """The latest checkpoint note with every stored cosignature of it appended."""
        note, lines = await self._reader.run(_latest_with_lines)
        return cosigned_note(note, lines)
