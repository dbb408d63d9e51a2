"""The node's content-addressed blob directory: the data its datasets are delivered from.

Layout inside the node's state directory::

    blobs/<sha256-hex>            a complete blob, named by the SHA-256 of its bytes
    blobs/partial/<contract_id>   a delivery still arriving (kept across restarts)
    blobs/tmp/                    scratch files of imports and verifications in progress

Every blob is written to a scratch file while it is hashed, flushed and
fsynced, then renamed into place (and the directory fsynced), so a blob
name always holds exactly the bytes it names, complete; a crash leaves at
most a scratch file behind. Files are read and written in pieces
(:data:`PIECE_BYTES`): a large file is never held in memory.

The functions here are blocking file I/O; asyncio callers run them with
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from provex.errors import FailedPrecondition, InvalidArgument, NotFound
from provex.keyfiles import fsync_directory

PIECE_BYTES = 1024 * 1024
"""How much of a file is read at a time while copying or hashing."""
DIGEST_BYTES = 32


def digest_hex(digest: bytes) -> str:
    """The blob name of a SHA-256 digest; InvalidArgument if it is not 32 bytes."""
    if len(digest) != DIGEST_BYTES:
        raise InvalidArgument(f"a content digest is 32 bytes of SHA-256, got {len(digest)} bytes")
    return digest.hex()


def hash_file(path: Path) -> tuple[bytes, int]:
    """SHA-256 and size of the file at ``path``, read in pieces."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while piece := handle.read(PIECE_BYTES):
            hasher.update(piece)
            size += len(piece)
    return hasher.digest(), size


class DigestMismatch(FailedPrecondition):
    """Bytes whose SHA-256 is not the one they were expected to have."""

    def __init__(self, what: str, expected: bytes, actual: bytes) -> None:
        super().__init__(
            f"{what}: SHA-256 {actual.hex()} does not match the expected content digest "
            f"{expected.hex()}"
        )
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Imported:
    """A file copied into the store: its digest and size."""

    digest: bytes
    size: int


@dataclass(frozen=True)
class BlobStore:
    """The blob directory ``<state>/blobs``."""

    root: Path

    @classmethod
    def of_state(cls, state_dir: Path) -> BlobStore:
        """The blob store of a node state directory."""
        return cls(state_dir / "blobs")

    @property
    def partial_dir(self) -> Path:
        return self.root / "partial"

    @property
    def scratch_dir(self) -> Path:
        return self.root / "tmp"

    def _ensure(self) -> None:
        for directory in (self.root, self.partial_dir, self.scratch_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: bytes) -> Path:
        """Where the blob with ``digest`` is (whether or not it is there)."""
        return self.root / digest_hex(digest)

    def size(self, digest: bytes) -> int | None:
        """The size of the blob with ``digest``, or None if the store does not hold it."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: bytes) -> BinaryIO:
        """The blob with ``digest``, open for reading; NotFound if the store does not hold it."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {digest.hex()} in {self.root}") from None

    def _scratch(self) -> Path:
        self._ensure()
        return self.scratch_dir / f"{uuid.uuid4().hex}.tmp"

    def _install(self, scratch: Path, digest: bytes) -> Path:
        """Rename a complete, fsynced scratch file to its blob name; fsync the directory."""
        target = self.path(digest)
        os.replace(scratch, target)
        fsync_directory(self.root)
        return target

    def import_file(self, source: Path, expected: bytes | None = None) -> Imported:
        """Copy ``source`` into the store while hashing it; return its digest and size.

        With ``expected``, a file whose SHA-256 differs is refused
        (:class:`DigestMismatch`) and nothing is stored. A blob already
        present is replaced by the fresh copy (same name, same bytes, unless
        the stored one was damaged).
        """
        if expected is not None:
            digest_hex(expected)
        scratch = self._scratch()
        hasher = hashlib.sha256()
        size = 0
        try:
            with source.open("rb") as reader, scratch.open("wb") as writer:
                while piece := reader.read(PIECE_BYTES):
                    hasher.update(piece)
                    writer.write(piece)
                    size += len(piece)
                writer.flush()
                os.fsync(writer.fileno())
            digest = hasher.digest()
            if expected is not None and digest != expected:
                raise DigestMismatch(str(source), expected, digest)
            self._install(scratch, digest)
        finally:
            scratch.unlink(missing_ok=True)
        return Imported(digest, size)

    # ------------------------------------------------------------ partial downloads

    def partial_path(self, contract_id: str) -> Path:
        """Where the partial download of ``contract_id`` is kept."""
        if not contract_id or "/" in contract_id or contract_id.startswith("."):
            raise InvalidArgument(f"contract id {contract_id!r} cannot name a partial download")
        return self.partial_dir / contract_id

    def resume_partial(self, contract_id: str, durable: int) -> int:
        """Prepare the partial download to go on; return the offset to continue from.

        ``durable`` is the length the caller last recorded as durable. Bytes
        beyond it (written but not recorded before a crash) are cut off, so a
        delivery only ever continues from bytes that were fsynced and
        recorded. A file shorter than ``durable`` continues from its own end.
        """
        self._ensure()
        path = self.partial_path(contract_id)
        with path.open("ab") as handle:
            size = handle.tell()
            if size > durable:
                handle.truncate(durable)
                handle.flush()
                os.fsync(handle.fileno())
                size = durable
        return size

    def open_partial(self, contract_id: str, offset: int) -> BinaryIO:
        """The partial download open for appending at ``offset`` (its current length)."""
        self._ensure()
        handle = self.partial_path(contract_id).open("ab")
        if handle.tell() != offset:
            size = handle.tell()
            handle.close()
            raise FailedPrecondition(
                f"partial download of {contract_id} holds {size} bytes, expected {offset}"
            )
        return handle

    def discard_partial(self, contract_id: str) -> None:
        """Remove the partial download of ``contract_id`` (if any)."""
        self.partial_path(contract_id).unlink(missing_ok=True)

    def partial_size(self, contract_id: str) -> int:
        """Bytes of the partial download of ``contract_id`` (0 if none)."""
        try:
            return self.partial_path(contract_id).stat().st_size
        except FileNotFoundError:
            return 0

    def commit_partial(self, contract_id: str, expected: bytes) -> Path:
        """Verify a finished download against ``expected`` and move it into the store.

        A mismatch discards the partial file and raises :class:`DigestMismatch`;
        a match renames it to its blob name (fsynced), the path returned.
        """
        digest_hex(expected)
        path = self.partial_path(contract_id)
        if not path.exists():
            raise NotFound(f"no partial download of contract {contract_id}")
        digest, _ = hash_file(path)
        if digest != expected:
            path.unlink(missing_ok=True)
            raise DigestMismatch(f"data of contract {contract_id}", expected, digest)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        return self._install(path, digest)


def write_durably(handle: BinaryIO, data: bytes) -> None:
    """Append ``data`` to an open file and make it durable (flush, fsync)."""
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
