"""Signed notes, log checkpoints and witness cosignatures, as the C2SP specifies them.

The registry's transparency log publishes its tree head as a checkpoint
(c2sp.org/tlog-checkpoint): a note text of origin, tree size and base64 root
hash, signed as a signed note (c2sp.org/signed-note) with the log's Ed25519
key (signature type 0x01). Provincial nodes witness it: after checking
consistency they add a timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature,
``cosignature/v1``, signature type 0x04) to the same note.

This module formats and parses all of that byte for byte like the reference
implementation (golang.org/x/mod/sumdb/note), with the same key strings
(``<name>+<hash>+<base64 key>`` and ``PRIVATE+KEY+<name>+<hash>+<base64 seed>``),
and verifies checkpoints against the log key and a witness quorum
(:func:`verify_checkpoint`, :func:`open_checkpoint`).

Parsing is strict and canonical: anything that parses formats back to the
same bytes. Every parse or verification failure of untrusted input (a note, a
checkpoint, a key string) raises :class:`~provex.errors.VerificationError`;
constructing objects from bad Python values, and bad verification settings,
raise :class:`ValueError` (those are bugs, not attacks).

Verification is a pure function of the note's exact text and of the keys,
origin and witness quorum it is checked against, and the same checkpoint
note is checked again and again (every bundle of a tree size carries it,
every peer shows it on every federated search). So :func:`open_checkpoint`
remembers its last :data:`VERIFIED_CACHE_SIZE` successes, keyed on exactly
those inputs (the whole note string or bytes, compared for equality, never
a digest of it); a note that differs in any byte, or a different key or
quorum, is verified afresh. Failures are never remembered.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provex.envelope import raw_public_key
from provex.errors import VerificationError

SIGNATURE_TYPE_ED25519 = 0x01
"""Signed-note signature type of plain Ed25519 note signatures (the log's)."""

SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04
"""Signed-note signature type of timestamped Ed25519 ``cosignature/v1`` (witnesses')."""

MAX_NOTE_BYTES = 64 * 1024
"""Largest signed note accepted or produced, in UTF-8 bytes."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec requires accepting at least 16)."""

MAX_TREE_SIZE = 2**64 - 1
MAX_TIMESTAMP = 2**63 - 1
ROOT_HASH_SIZE = 32

_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_TIMESTAMP_SIZE = 8
_KEY_HASH_SIZE = 4
_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline
_DECIMAL = re.compile("0|[1-9][0-9]{0,19}")
_HEX8 = re.compile("[0-9a-f]{8}")

VERIFIED_CACHE_SIZE = 1024
"""Verified checkpoint notes :func:`open_checkpoint` remembers (least recently used go first)."""


# --- keys -------------------------------------------------------------------------------------


def key_hash(name: str, signature_type: int, public_key: bytes) -> int:
    """The note key hash (key ID): SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4], big-endian."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    ).digest()
    return int.from_bytes(digest[:_KEY_HASH_SIZE], "big")


def _is_valid_key_name(name: str) -> bool:
    """Non-empty, no '+', no Unicode space, no control character, encodable as UTF-8."""
    if not name or "+" in name or _CONTROL.search(name):
        return False
    if any(ch.isspace() for ch in name):
        return False
    return _is_utf8_encodable(name)


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Standard padded base64, canonical only (re-encoding gives ``text`` back)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if _b64encode(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _parse_key_string(key: str, signature_type: int, what: str) -> tuple[str, int, bytes]:
    """Split ``<name>+<hex8 hash>+<base64(type ‖ 32 bytes)>`` and check its syntax."""
    name, sep1, rest = key.partition("+")
    hash_hex, sep2, material_b64 = rest.partition("+")
    if not (sep1 and sep2) or not _is_valid_key_name(name):
        raise VerificationError(f"malformed {what}")
    if not _HEX8.fullmatch(hash_hex):
        raise VerificationError(f"{what} hash is not 8 lowercase hex digits")
    material = _b64decode(material_b64, what)
    if len(material) != 1 + _ED25519_KEY_SIZE:
        raise VerificationError(f"{what} material has the wrong length")
    if material[0] != signature_type:
        raise VerificationError(
            f"{what} has signature type {material[0]:#04x}, expected {signature_type:#04x}"
        )
    return name, int(hash_hex, 16), material[1:]


class Verifier(Protocol):
    """A known key: checks signatures whose line carries its name and key hash."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the 4-byte key hash) is valid over note ``text``."""
        ...


class Signer(Protocol):
    """A private key that signs note texts under a name and key hash."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> int: ...

    def sign(self, text: bytes) -> bytes:
        """The signature bytes over note ``text`` (without the 4-byte key hash)."""
        ...


@dataclass(frozen=True)
class _Ed25519Verifier:
    """Shared part of the two Ed25519 verifier key kinds; use a subclass."""

    SIGNATURE_TYPE: ClassVar[int]

    name: str
    public_key: bytes
    key_hash: int = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_valid_key_name(self.name):
            raise ValueError(f"invalid key name {self.name!r}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != _ED25519_KEY_SIZE:
            raise ValueError("an Ed25519 public key is 32 bytes")
        object.__setattr__(
            self, "key_hash", key_hash(self.name, self.SIGNATURE_TYPE, self.public_key)
        )
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.public_key))

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> Self:
        """The verifier for ``public_key`` under ``name``."""
        return cls(name, raw_public_key(public_key))

    @classmethod
    def from_verifier_key(cls, vkey: str) -> Self:
        """Parse a verifier key string ``<name>+<hash>+<base64(type ‖ public key)>``."""
        name, claimed_hash, public_key = _parse_key_string(vkey, cls.SIGNATURE_TYPE, "verifier key")
        verifier = cls(name, public_key)
        if verifier.key_hash != claimed_hash:
            raise VerificationError("verifier key hash does not match the key")
        return verifier

    def verifier_key(self) -> str:
        """The verifier key string ``<name>+<hash>+<base64(type ‖ public key)>``."""
        material = bytes([self.SIGNATURE_TYPE]) + self.public_key
        return f"{self.name}+{self.key_hash:08x}+{_b64encode(material)}"

    def _verify_ed25519(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class _Ed25519Signer:
    """Shared part of the two Ed25519 signer key kinds; use a subclass."""

    SIGNATURE_TYPE: ClassVar[int]

    name: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: bytes = field(init=False)
    key_hash: int = field(init=False)

    def __post_init__(self) -> None:
        if not _is_valid_key_name(self.name):
            raise ValueError(f"invalid key name {self.name!r}")
        public_key = raw_public_key(self.private_key.public_key())
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "key_hash", key_hash(self.name, self.SIGNATURE_TYPE, public_key))

    @classmethod
    def generate(cls, name: str) -> Self:
        """A signer with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_signer_key(cls, skey: str) -> Self:
        """Parse a signer key string ``PRIVATE+KEY+<name>+<hash>+<base64(type ‖ seed)>``."""
        if not skey.startswith(_PRIVATE_KEY_PREFIX):
            raise VerificationError("signer key does not start with PRIVATE+KEY+")
        name, claimed_hash, seed = _parse_key_string(
            skey.removeprefix(_PRIVATE_KEY_PREFIX), cls.SIGNATURE_TYPE, "signer key"
        )
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_hash != claimed_hash:
            raise VerificationError("signer key hash does not match the key")
        return signer

    def signer_key(self) -> str:
        """The signer key string; it holds the private key, keep it secret."""
        material = bytes([self.SIGNATURE_TYPE]) + self.private_key.private_bytes_raw()
        return f"{_PRIVATE_KEY_PREFIX}{self.name}+{self.key_hash:08x}+{_b64encode(material)}"


@dataclass(frozen=True)
class NoteVerifier(_Ed25519Verifier):
    """An Ed25519 note key (type 0x01): verifies signatures over the note text itself."""

    SIGNATURE_TYPE: ClassVar[int] = SIGNATURE_TYPE_ED25519

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``text``."""
        return self._verify_ed25519(text, signature)


@dataclass(frozen=True)
class NoteSigner(_Ed25519Signer):
    """An Ed25519 note signing key (type 0x01), e.g. the log's checkpoint key."""

    SIGNATURE_TYPE: ClassVar[int] = SIGNATURE_TYPE_ED25519

    def sign(self, text: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``text``."""
        return self.private_key.sign(text)

    def verifier(self) -> NoteVerifier:
        """The matching verifier."""
        return NoteVerifier(self.name, self.public_key)


def cosignature_message(timestamp: int, text: bytes) -> bytes:
    """What a ``cosignature/v1`` signs: header line, time line, then the checkpoint text."""
    return b"cosignature/v1\ntime %d\n%b" % (timestamp, text)


def cosignature_timestamp(signature: bytes) -> int:
    """The POSIX time in a ``cosignature/v1`` signature (the bytes after the key hash)."""
    if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
        raise VerificationError("a cosignature/v1 signature is 72 bytes")
    timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
    if timestamp > MAX_TIMESTAMP:
        raise VerificationError("cosignature timestamp exceeds 2^63 - 1")
    return timestamp


@dataclass(frozen=True)
class CosignatureVerifier(_Ed25519Verifier):
    """A witness key (type 0x04): verifies timestamped ``cosignature/v1`` signatures."""

    SIGNATURE_TYPE: ClassVar[int] = SIGNATURE_TYPE_COSIGNATURE_V1

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (timestamp ‖ Ed25519 signature) cosigns checkpoint ``text``."""
        try:
            timestamp = cosignature_timestamp(signature)
        except VerificationError:
            return False
        message = cosignature_message(timestamp, text)
        return self._verify_ed25519(message, signature[_TIMESTAMP_SIZE:])


@dataclass(frozen=True)
class CosignatureSigner(_Ed25519Signer):
    """A witness's cosigning key (type 0x04); ``clock`` gives the current POSIX time."""

    SIGNATURE_TYPE: ClassVar[int] = SIGNATURE_TYPE_COSIGNATURE_V1

    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def sign(self, text: bytes, timestamp: int | None = None) -> bytes:
        """Timestamp (8 bytes, big-endian) ‖ Ed25519 signature of the cosigned message.

        ``text`` must be a checkpoint (VerificationError otherwise); ``timestamp``
        defaults to the clock's current time.
        """
        try:
            Checkpoint.parse(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise VerificationError("checkpoint is not valid UTF-8") from None
        when = int(self.clock()) if timestamp is None else timestamp
        if not 0 <= when <= MAX_TIMESTAMP:
            raise ValueError("cosignature timestamp must be in [0, 2^63 - 1]")
        signature = self.private_key.sign(cosignature_message(when, text))
        return when.to_bytes(_TIMESTAMP_SIZE, "big") + signature

    def verifier(self) -> CosignatureVerifier:
        """The matching verifier."""
        return CosignatureVerifier(self.name, self.public_key)


# --- signed notes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key hash and the signature bytes that follow the hash."""

    name: str
    key_hash: int
    signature: bytes

    def __post_init__(self) -> None:
        if not _is_valid_key_name(self.name):
            raise ValueError(f"invalid key name {self.name!r}")
        if not 0 <= self.key_hash < 2**32:
            raise ValueError("a key hash is a 32-bit unsigned integer")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise ValueError("a signature is non-empty bytes")

    def to_line(self) -> str:
        """``— <name> <base64(key hash ‖ signature)>`` and a newline."""
        raw = self.key_hash.to_bytes(_KEY_HASH_SIZE, "big") + self.signature
        return f"{_SIGNATURE_PREFIX}{self.name} {_b64encode(raw)}\n"


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise VerificationError("signature line does not start with an em dash and a space")
    name, sep, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
    if not sep or not _is_valid_key_name(name):
        raise VerificationError("signature line has a malformed key name")
    raw = _b64decode(encoded, "signature")
    if len(raw) <= _KEY_HASH_SIZE:
        raise VerificationError("signature is too short")
    return NoteSignature(name, int.from_bytes(raw[:_KEY_HASH_SIZE], "big"), raw[_KEY_HASH_SIZE:])


def _check_note_text(text: str) -> str | None:
    """Why ``text`` cannot be a note text, or None if it can."""
    if not text.endswith("\n"):
        return "note text does not end with a newline"
    if _CONTROL.search(text):
        return "note text contains a control character"
    if not _is_utf8_encodable(text):
        return "note text is not valid UTF-8"
    return None


@dataclass(frozen=True)
class SignedNote:
    """A note text (ending in a newline) and its signatures, in line order.

    At most one signature per key (name and key hash), 1 to MAX_SIGNATURES of them.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        problem = _check_note_text(self.text)
        if problem:
            raise ValueError(problem)
        if not 1 <= len(self.signatures) <= MAX_SIGNATURES:
            raise ValueError(f"a signed note has 1 to {MAX_SIGNATURES} signatures")
        keys = {(s.name, s.key_hash) for s in self.signatures}
        if len(keys) != len(self.signatures):
            raise ValueError("a signed note has at most one signature per key")

    def format(self) -> str:
        """The signed note: text, a blank line, then one line per signature."""
        note = self.text + "\n" + "".join(s.to_line() for s in self.signatures)
        if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
            raise ValueError(f"signed note exceeds {MAX_NOTE_BYTES} bytes")
        return note

    @classmethod
    def parse(cls, note: str | bytes) -> SignedNote:
        """Parse a signed note strictly, checking no signature; VerificationError if malformed."""
        if len(note) > MAX_NOTE_BYTES:
            raise VerificationError(f"signed note exceeds {MAX_NOTE_BYTES} bytes")
        if isinstance(note, bytes):
            try:
                note = note.decode("utf-8")
            except UnicodeDecodeError:
                raise VerificationError("signed note is not valid UTF-8") from None
        else:
            try:
                size = len(note.encode("utf-8"))
            except UnicodeEncodeError:
                raise VerificationError("signed note is not valid UTF-8") from None
            if size > MAX_NOTE_BYTES:
                raise VerificationError(f"signed note exceeds {MAX_NOTE_BYTES} bytes")
        if _CONTROL.search(note):
            raise VerificationError("signed note contains a control character")
        split = note.rfind("\n\n")
        if split < 0:
            raise VerificationError("signed note has no blank line before its signatures")
        text, block = note[: split + 1], note[split + 2 :]
        if not block.endswith("\n"):
            raise VerificationError("signed note does not end with a signature line")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise VerificationError(f"signed note has more than {MAX_SIGNATURES} signatures")
        signatures = tuple(_parse_signature_line(line) for line in lines)
        if len({(s.name, s.key_hash) for s in signatures}) != len(signatures):
            raise VerificationError("signed note has two signature lines for one key")
        return cls(text, signatures)

    def verify(self, verifiers: Iterable[Verifier]) -> tuple[NoteSignature, ...]:
        """The signatures by known keys, all of which must be valid.

        A line whose name and key hash match a verifier must verify, or the
        whole note is rejected; lines of unknown keys are ignored. At least one
        signature by a known key is required. VerificationError otherwise.
        """
        known = _index_verifiers(verifiers)
        text = self.text.encode("utf-8")
        valid: list[NoteSignature] = []
        for signature in self.signatures:
            verifier = known.get((signature.name, signature.key_hash))
            if verifier is None:
                continue
            if not verifier.verify(text, signature.signature):
                raise VerificationError(
                    f"invalid signature for key {signature.name}+{signature.key_hash:08x}"
                )
            valid.append(signature)
        if not valid:
            raise VerificationError("signed note has no signature by a known key")
        return tuple(valid)


def _index_verifiers(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_hash)
        existing = known.setdefault(key, verifier)
        if existing is not verifier and existing != verifier:
            raise ValueError(f"two different verifiers for key {key[0]}+{key[1]:08x}")
    return known


# --- checkpoints ------------------------------------------------------------------------------


def _is_valid_line(line: str) -> bool:
    return (
        bool(line) and "\n" not in line and not _CONTROL.search(line) and _is_utf8_encodable(line)
    )


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin line, tree size, RFC 6962 root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not _is_valid_line(self.origin):
            raise ValueError("checkpoint origin must be one non-empty line without controls")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("checkpoint size must be in [0, 2^64 - 1]")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_HASH_SIZE:
            raise ValueError(f"checkpoint root hash must be {ROOT_HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise ValueError("checkpoint extensions must be a tuple")
        for line in self.extensions:
            if not isinstance(line, str) or not _is_valid_line(line):
                raise ValueError("checkpoint extension must be one non-empty line without controls")

    def to_text(self) -> str:
        """The note text: origin, size and base64 root hash lines, then the extension lines."""
        lines = (self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly; VerificationError if malformed."""
        if len(text) > MAX_NOTE_BYTES:
            raise VerificationError(f"checkpoint exceeds {MAX_NOTE_BYTES} bytes")
        if not text.endswith("\n"):
            raise VerificationError("checkpoint does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError("checkpoint has fewer than three lines")
        if not all(lines):
            raise VerificationError("checkpoint has an empty line")
        if _CONTROL.search(text) or not _is_utf8_encodable(text):
            raise VerificationError("checkpoint contains a control character or invalid UTF-8")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise VerificationError("checkpoint size is not a decimal without leading zeros")
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise VerificationError("checkpoint size exceeds 2^64 - 1")
        root_hash = _b64decode(root_text, "checkpoint root hash")
        if len(root_hash) != ROOT_HASH_SIZE:
            raise VerificationError(f"checkpoint root hash is not {ROOT_HASH_SIZE} bytes")
        return cls(origin, size, root_hash, tuple(extensions))


@dataclass(frozen=True, order=True)
class Cosignature:
    """A valid witness cosignature: the witness key's name and hash, and when it cosigned."""

    name: str
    key_hash: int
    timestamp: int


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint signed by its log, with the valid cosignatures of configured witnesses."""

    checkpoint: Checkpoint
    cosignatures: tuple[Cosignature, ...] = ()

    @property
    def cosigned_by(self) -> tuple[str, ...]:
        """Names of the witnesses that cosigned, sorted, each once."""
        return tuple(sorted({c.name for c in self.cosignatures}))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a signed note with one signature, by ``signer``."""
    text = checkpoint.to_text()
    signature = NoteSignature(signer.name, signer.key_hash, signer.sign(text.encode("utf-8")))
    return SignedNote(text, (signature,)).format()


def add_signature(note: str | bytes, signer: Signer) -> str:
    """``note`` with one more signature (e.g. a witness's cosignature) by ``signer``.

    The existing signatures are not checked here; verify the note first. Order
    is canonical: the first signature (normally the log's) stays first, the
    others are sorted by key name, then key hash, so the same set of
    signatures always gives the same bytes. A line by the same key (name and
    hash) is replaced, never duplicated. VerificationError if ``note`` is
    malformed.
    """
    signed = SignedNote.parse(note)
    text = signed.text.encode("utf-8")
    new = NoteSignature(signer.name, signer.key_hash, signer.sign(text))
    first, *others = signed.signatures
    if (first.name, first.key_hash) == (new.name, new.key_hash):
        first = new
    else:
        others = [s for s in others if (s.name, s.key_hash) != (new.name, new.key_hash)]
        others.append(new)
    others.sort(key=lambda s: (s.name, s.key_hash))
    return SignedNote(signed.text, (first, *others)).format()


def _check_witnesses(
    log_verifier: NoteVerifier, witnesses: Sequence[CosignatureVerifier], threshold: int
) -> None:
    if threshold < 0:
        raise ValueError("witness threshold must not be negative")
    names = {w.name for w in witnesses}
    if threshold > len(names):
        raise ValueError(f"witness threshold {threshold} exceeds the {len(names)} witness(es)")
    owners: dict[bytes, CosignatureVerifier] = {}
    for witness in witnesses:
        if witness.public_key == log_verifier.public_key:
            raise ValueError(f"witness {witness.name} uses the log's key")
        owner = owners.setdefault(witness.public_key, witness)
        if owner != witness:
            raise ValueError(f"witnesses {owner.name} and {witness.name} share a key")


def open_checkpoint(
    note: str | bytes,
    log_verifier: NoteVerifier,
    *,
    origin: str,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_threshold: int = 0,
) -> VerifiedCheckpoint:
    """Verify a checkpoint note; return it with the witnesses that validly cosigned it.

    Requires a valid signature by ``log_verifier``, the origin line equal to
    ``origin``, and valid cosignatures by at least ``witness_threshold``
    distinct witness names. Any line whose name and key hash match the log or a
    witness must verify; lines of unknown keys are ignored. VerificationError on
    any failure; ValueError for inconsistent settings (a threshold above the
    number of witnesses, witnesses sharing a key or using the log's key).
    """
    if not witnesses and not witness_threshold:  # Nothing to check (the usual bundle case).
        return _open_remembered(note, log_verifier, origin, (), 0)
    _check_witnesses(log_verifier, witnesses, witness_threshold)
    return _open_remembered(note, log_verifier, origin, tuple(witnesses), witness_threshold)


@functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)
def _open_remembered(
    note: str | bytes,
    log_verifier: NoteVerifier,
    origin: str,
    witnesses: tuple[CosignatureVerifier, ...],
    witness_threshold: int,
) -> VerifiedCheckpoint:
    """:func:`open_checkpoint` without the settings check; successes are remembered.

    The key is every argument: the exact note, and the verifiers by value
    (name and public key), so nothing but an identical check is answered
    from memory. lru_cache is thread-safe and does not keep exceptions.
    """
    signed = SignedNote.parse(note)
    valid = signed.verify([log_verifier, *witnesses])
    log_key = (log_verifier.name, log_verifier.key_hash)
    if all((s.name, s.key_hash) != log_key for s in valid):
        raise VerificationError(
            f"checkpoint is not signed by log key {log_key[0]}+{log_key[1]:08x}"
        )
    checkpoint = Checkpoint.parse(signed.text)
    if checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    witness_keys = {(w.name, w.key_hash) for w in witnesses}
    cosignatures = tuple(
        sorted(
            Cosignature(s.name, s.key_hash, cosignature_timestamp(s.signature))
            for s in valid
            if (s.name, s.key_hash) in witness_keys
        )
    )
    result = VerifiedCheckpoint(checkpoint, cosignatures)
    if len(result.cosigned_by) < witness_threshold:
        raise VerificationError(
            f"checkpoint has {len(result.cosigned_by)} witness cosignature(s), "
            f"{witness_threshold} required"
        )
    return result


def forget_verified() -> None:
    """Empty the memory of verified checkpoint notes (for tests and benchmarks)."""
    _open_remembered.cache_clear()


def verified_memory() -> functools._CacheInfo:
    """Hits, misses, size and capacity of the memory of verified checkpoint notes."""
    return _open_remembered.cache_info()


def verify_checkpoint(
    note: str | bytes,
    log_verifier: NoteVerifier,
    *,
    origin: str,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_threshold: int = 0,
) -> Checkpoint:
    """The checkpoint of a verified checkpoint note; see :func:`open_checkpoint`."""
    if not witnesses and not witness_threshold:  # As open_checkpoint does, one call less.
        return _open_remembered(note, log_verifier, origin, (), 0).checkpoint
    return open_checkpoint(
        note,
        log_verifier,
        origin=origin,
        witnesses=witnesses,
        witness_threshold=witness_threshold,
    ).checkpoint
