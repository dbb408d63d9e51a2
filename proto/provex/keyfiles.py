"""Key, certificate and trust files in a state directory: written once or whole.

Both services keep their keys as PEM files. Secrets are created with
``O_EXCL`` and mode 0600 and public files with mode ``x``: nothing is ever
overwritten, so a second ``init`` cannot destroy a key. Files that must
appear whole or not at all (a renewed certificate, a new trust root version)
are written aside, fsynced and renamed or linked into place, and their
directory fsynced (:func:`create_file`, :func:`replace_file`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex.errors import FailedPrecondition

__all__ = (
    "create_file",
    "ed25519_to_pem",
    "fsync_directory",
    "load_ed25519",
    "replace_file",
    "write_public",
    "write_secret",
)


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``; refuse an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _scratch(path: Path, data: bytes) -> Path:
    """``data`` written and fsynced beside ``path``, under a name of this process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with scratch.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return scratch


def create_file(path: Path, data: bytes) -> None:
    """Create ``path`` whole or not at all; FailedPrecondition if it exists (never overwritten)."""
    scratch = _scratch(path, data)
    try:
        os.link(scratch, path)  # Atomic, and fails if the file appeared meanwhile.
    except FileExistsError:
        raise FailedPrecondition(f"{path} exists already; refusing to overwrite it") from None
    finally:
        scratch.unlink()
    fsync_directory(path.parent)


def replace_file(path: Path, data: bytes) -> None:
    """Replace (or create) ``path`` atomically: readers see the old or the new bytes, whole."""
    os.replace(_scratch(path, data), path)
    fsync_directory(path.parent)


def write_public(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``; refuse an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:
        handle.write(data)


def ed25519_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of an Ed25519 private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_ed25519(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise FailedPrecondition(f"{path} does not hold an Ed25519 private key")
    return key
