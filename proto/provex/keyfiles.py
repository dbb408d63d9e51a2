"""Key and certificate files in a state directory: written once, private keys mode 0600.

Both services keep their keys as PEM files. Secrets are created with
``O_EXCL`` and mode 0600 and public files with mode ``x``: nothing is ever
overwritten, so a second ``init`` cannot destroy a key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex.errors import FailedPrecondition

__all__ = ("ed25519_to_pem", "load_ed25519", "write_public", "write_secret")


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600) holding ``data``; refuse an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


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
