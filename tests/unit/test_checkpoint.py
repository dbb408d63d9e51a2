"""Tests of provex.checkpoint: C2SP signed notes, checkpoints and cosignatures.

Known-answer vectors come from golang.org/x/mod/sumdb/note (note_test.go and
the package example), the C2SP signed-note, tlog-checkpoint and
tlog-cosignature examples, github.com/transparency-dev/formats
(note_cosigv1_test.go), and a real checkpoint of the
arche2025h1.staging.ct.transparency.dev log cosigned by the remora.n621.de
witness.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from provex import checkpoint
from provex.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    Cosignature,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    VerifiedCheckpoint,
    add_signature,
    cosignature_message,
    cosignature_timestamp,
    key_hash,
    open_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from provex.errors import VerificationError

EM = "\u2014"

# --- golang.org/x/mod/sumdb/note ---------------------------------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"{EM} PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"{EM} EnochRoot {ENOCH_B64}\n"

# --- C2SP examples -----------------------------------------------------------------------------

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
SOFA_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SOFA_NOTE = (
    SOFA_BODY + "\n"
    f"{EM} example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    f"{EM} witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

# --- a real cosigned checkpoint ----------------------------------------------------------------

ARCHE_ORIGIN = "arche2025h1.staging.ct.transparency.dev"
ARCHE_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
ARCHE_NOTE = f"""\
arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

{EM} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
{EM} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
{EM} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
{EM} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
{EM} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
{EM} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
"""  # noqa: E501 - verbatim vector

# --- Provex-like fixed keys --------------------------------------------------------------------

T0 = 1_700_000_000


def _key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


LOG = NoteSigner("registry.provex.example/log", _key(1))
W1 = CosignatureSigner("w1.provex.example", _key(2), clock=lambda: T0)
W2 = CosignatureSigner("w2.provex.example", _key(3), clock=lambda: T0 + 7)
W3 = CosignatureSigner("w3.provex.example", _key(5), clock=lambda: T0 + 9)
OTHER = NoteSigner("other.provex.example/log", _key(4))
LOG_V, W1_V, W2_V, W3_V = LOG.verifier(), W1.verifier(), W2.verifier(), W3.verifier()
ORIGIN = LOG.name
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
CP = Checkpoint(ORIGIN, 12345, ROOT)
BODY = CP.to_text()
NOTE = sign_checkpoint(CP, LOG)
COSIGNED = add_signature(add_signature(NOTE, W1), W2)


def _line(signer: NoteSigner | CosignatureSigner, text: str) -> str:
    """A signature line of ``signer`` over ``text``, without checking the text."""
    signature = NoteSignature(signer.name, signer.key_hash, signer.sign(text.encode()))
    return signature.to_line()


def _raw_line(name: str, key_id: int, signature: bytes) -> str:
    raw = key_id.to_bytes(4, "big") + signature
    return f"{EM} {name} {base64.b64encode(raw).decode()}\n"


def _signed(text: str, signer: NoteSigner = LOG) -> str:
    """``text`` signed by ``signer``, assembled by hand (works for malformed texts too)."""
    return text + "\n" + _line(signer, text)


def _body(origin: str = ORIGIN, size: str = "12345", root: str = ROOT_B64, extra: str = "") -> str:
    return f"{origin}\n{size}\n{root}\n{extra}"


LOG_LINE = _line(LOG, BODY)
W1_LINE = _line(W1, BODY)
W2_LINE = _line(W2, BODY)
W1_RAW = W1.sign(BODY.encode())


def _noncanonical(b64: str) -> str:
    """The same bytes in base64 with non-zero unused trailing bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    data = b64.rstrip("=")
    padding = b64[len(data) :]
    assert padding, "needs a padded encoding"
    changed = data[:-1] + alphabet[alphabet.index(data[-1]) ^ 1] + padding
    assert base64.b64decode(changed) == base64.b64decode(b64)
    return changed


def _flip_char(text: str, index: int) -> str:
    return text[:index] + chr(ord(text[index]) ^ 1) + text[index + 1 :]


def _corrupted_notes() -> dict[str, tuple[str | bytes, str]]:
    """Every way a checkpoint note can be wrong: the note, and the reason it is rejected."""
    size_at = len(ORIGIN) + 1
    root_at = size_at + len("12345") + 1
    log_sig = LOG.sign(BODY.encode())
    w1_ts, w1_sig = W1_RAW[:8], W1_RAW[8:]
    big_ts = 2**63
    too_late = big_ts.to_bytes(8, "big") + W1.private_key.sign(
        cosignature_message(big_ts, BODY.encode())
    )
    other_body = Checkpoint(ORIGIN, 12346, ROOT).to_text()
    huge = Checkpoint(ORIGIN, 1, ROOT, ("x" * MAX_NOTE_BYTES,)).to_text()
    wide = Checkpoint(ORIGIN, 1, ROOT, ("\u00e9" * (MAX_NOTE_BYTES // 2),)).to_text()
    unknown_lines = "".join(
        _raw_line(f"unknown{i}.example", i, b"\x00" * 64) for i in range(MAX_SIGNATURES)
    )
    log_as_cosigner = CosignatureSigner(LOG.name, LOG.private_key, clock=lambda: T0)
    return {
        # The body, signed or tampered.
        "bit flip in origin": (_flip_char(NOTE, 0), "invalid signature"),
        "bit flip in size": (_flip_char(NOTE, root_at - 2), "invalid signature"),
        "bit flip in root hash": (_flip_char(NOTE, root_at + 5), "invalid signature"),
        "appended extension line": (BODY + "ext\n\n" + LOG_LINE, "invalid signature"),
        "wrong origin": (
            sign_checkpoint(Checkpoint("evil.example/log", 12345, ROOT), LOG),
            "origin",
        ),
        "origin differs in case": (
            sign_checkpoint(Checkpoint(ORIGIN.upper(), 12345, ROOT), LOG),
            "origin",
        ),
        "origin with trailing space": (_signed(_body(origin=ORIGIN + " ")), "origin"),
        # Size line.
        "leading zero in size": (_signed(_body(size="012345")), "leading zeros"),
        "leading zeros in zero size": (_signed(_body(size="00")), "leading zeros"),
        "plus sign in size": (_signed(_body(size="+12345")), "leading zeros"),
        "negative size": (_signed(_body(size="-1")), "leading zeros"),
        "space before size": (_signed(_body(size=" 12345")), "leading zeros"),
        "underscore in size": (_signed(_body(size="12_345")), "leading zeros"),
        "non-ASCII digits in size": (_signed(_body(size="\u0661\u0662")), "leading zeros"),
        "hex size": (_signed(_body(size="0x10")), "leading zeros"),
        "size over 2^64 - 1": (_signed(_body(size=str(2**64))), "exceeds 2\\^64"),
        "empty size line": (_signed(_body(size="")), "empty line"),
        # Root line.
        "root not base64": (_signed(_body(root="not base64!")), "not valid base64"),
        "root without padding": (_signed(_body(root=ROOT_B64.rstrip("="))), "not valid base64"),
        "root non-canonical base64": (_signed(_body(root=_noncanonical(ROOT_B64))), "canonical"),
        "root of 31 bytes": (_signed(_body(root=base64.b64encode(ROOT[:31]).decode())), "32 bytes"),
        "root of 33 bytes": (
            _signed(_body(root=base64.b64encode(ROOT + b"\0").decode())),
            "32 bytes",
        ),
        "root in hex": (_signed(_body(root=ROOT.hex())), "32 bytes"),
        "root in base64url": (
            _signed(_body(root=base64.urlsafe_b64encode(b"\xfb" * 32).decode())),
            "not valid base64",
        ),
        # Lines of the body.
        "only two lines": (_signed(f"{ORIGIN}\n12345\n"), "fewer than three"),
        "empty origin": (_signed(_body(origin="")), "empty line"),
        "empty extension line": (_signed(_body(extra="\next\n")), "empty line"),
        "blank line closing the body": (_signed(BODY + "\n"), "empty line"),
        # Note structure.
        "empty note": ("", "no blank line"),
        "only a blank line": ("\n\n", "end with a signature line"),
        "body without signatures": (BODY + "\n", "end with a signature line"),
        "missing blank line": (BODY + LOG_LINE, "no blank line"),
        "signatures without body": ("\n" + LOG_LINE, "no blank line"),
        "missing final newline": (NOTE[:-1], "end with a signature line"),
        "extra blank line before signatures": (BODY + "\n\n" + LOG_LINE, "invalid signature"),
        "blank line after signatures": (NOTE + "\n", "end with a signature line"),
        "blank line between signatures": (
            BODY + "\n" + LOG_LINE + "\n" + W1_LINE,
            "invalid signature",
        ),
        "trailing line": (NOTE + "Unexpected line.\n", "em dash"),
        "trailing data": (NOTE + "x", "end with a signature line"),
        "CRLF line endings": (NOTE.replace("\n", "\r\n"), "control character"),
        # Signature line syntax.
        "hyphen instead of em dash": (NOTE.replace(EM, "-"), "em dash"),
        "en dash instead of em dash": (NOTE.replace(EM, "\u2013"), "em dash"),
        "no space after em dash": (NOTE.replace(f"{EM} ", EM), "em dash"),
        "two spaces before signature": (
            NOTE.replace(f"{LOG.name} ", f"{LOG.name}  "),
            "not valid base64",
        ),
        "trailing space after signature": (NOTE[:-1] + " \n", "not valid base64"),
        "key name missing": (
            BODY + "\n" + LOG_LINE.replace(f"{LOG.name} ", " "),
            "malformed key name",
        ),
        "key name with plus": (
            BODY + "\n" + LOG_LINE.replace(LOG.name, "a+b"),
            "malformed key name",
        ),
        "key name with no-break space": (
            BODY + "\n" + LOG_LINE.replace(LOG.name, "a\u00a0b"),
            "malformed key name",
        ),
        "bad base64 signature": (NOTE[:-6] + "!" + NOTE[-5:], "not valid base64"),
        "signature without padding": (NOTE.rstrip("\n").rstrip("=") + "\n", "not valid base64"),
        "non-canonical base64 signature": (
            NOTE.replace(LOG_LINE.split()[-1], _noncanonical(LOG_LINE.split()[-1])),
            "canonical",
        ),
        "base64url signature": (
            BODY
            + "\n"
            + _raw_line(LOG.name, LOG.key_hash, b"\xfb" * 64).replace("+", "-").replace("/", "_"),
            "not valid base64",
        ),
        # Signature lengths.
        "truncated signature": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, log_sig[:-1]),
            "invalid signature",
        ),
        "signature with an extra byte": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, log_sig + b"\0"),
            "invalid signature",
        ),
        "signature of one byte": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, b"\x01"),
            "invalid signature",
        ),
        "signature of only the key hash": (
            f"{BODY}\n{EM} {LOG.name} "
            + base64.b64encode(LOG.key_hash.to_bytes(4, "big")).decode()
            + "\n",
            "too short",
        ),
        "signature of three bytes": (f"{BODY}\n{EM} {LOG.name} AAAA\n", "too short"),
        "empty signature": (f"{BODY}\n{EM} {LOG.name} \n", "too short"),
        # Which keys signed.
        "signature by unknown key only": (
            sign_checkpoint(CP, OTHER),
            "no signature by a known key",
        ),
        "known name with wrong hash": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash ^ 1, log_sig),
            "no signature by a known key",
        ),
        "known hash with wrong name": (
            BODY + "\n" + _raw_line("registry", LOG.key_hash, log_sig),
            "no signature by a known key",
        ),
        "valid signature from wrong key": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, OTHER.sign(BODY.encode())),
            "invalid signature",
        ),
        "log signature of another checkpoint": (
            BODY + "\n" + _line(LOG, other_body),
            "invalid signature",
        ),
        "log key cosigning instead of signing": (
            BODY + "\n" + _line(log_as_cosigner, BODY),
            "no signature by a known key",
        ),
        "witness cosignatures only": (BODY + "\n" + W1_LINE + W2_LINE, "not signed by log key"),
        "bit flip in log key hash": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash ^ 0x100, log_sig),
            "no signature by a known key",
        ),
        "bit flip in log signature": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, bytes([log_sig[0] ^ 1]) + log_sig[1:]),
            "invalid signature",
        ),
        "zero signature": (
            BODY + "\n" + _raw_line(LOG.name, LOG.key_hash, b"\0" * 64),
            "invalid signature",
        ),
        # Duplicates.
        "duplicate log line": (NOTE + LOG_LINE, "two signature lines"),
        "duplicate witness line": (COSIGNED + W1_LINE, "two signature lines"),
        "second log line with another signature": (
            NOTE + _raw_line(LOG.name, LOG.key_hash, b"\0" * 64),
            "two signature lines",
        ),
        "second witness line with another timestamp": (
            COSIGNED
            + _line(CosignatureSigner(W1.name, W1.private_key, clock=lambda: T0 + 1), BODY),
            "two signature lines",
        ),
        # Witness cosignatures (the witnesses are known to the verifier).
        "invalid cosignature by known witness": (
            NOTE + _raw_line(W1.name, W1.key_hash, w1_ts + bytes([w1_sig[0] ^ 1]) + w1_sig[1:]),
            "invalid signature",
        ),
        "cosignature with altered timestamp": (
            NOTE + _raw_line(W1.name, W1.key_hash, (T0 + 1).to_bytes(8, "big") + w1_sig),
            "invalid signature",
        ),
        "cosignature timestamp over 2^63 - 1": (
            NOTE + _raw_line(W1.name, W1.key_hash, too_late),
            "invalid signature",
        ),
        "cosignature of another checkpoint": (NOTE + _line(W1, other_body), "invalid signature"),
        "truncated cosignature": (
            NOTE + _raw_line(W1.name, W1.key_hash, W1_RAW[:-1]),
            "invalid signature",
        ),
        "cosignature without timestamp": (
            NOTE + _raw_line(W1.name, W1.key_hash, w1_sig),
            "invalid signature",
        ),
        "plain signature under a witness key": (
            NOTE + _raw_line(W1.name, W1.key_hash, W1.private_key.sign(BODY.encode())),
            "invalid signature",
        ),
        # Encoding.
        "non-UTF-8 byte": (b"\xff" + NOTE.encode(), "UTF-8"),
        "non-UTF-8 byte in signature line": (NOTE.encode()[:-3] + b"\xff\n", "UTF-8"),
        "overlong UTF-8": (NOTE.encode().replace(b"/", b"\xc0\xaf", 1), "UTF-8"),
        "UTF-8 encoded surrogate": (NOTE.encode().replace(b"\n", b"\xed\xa0\x80\n", 1), "UTF-8"),
        "truncated em dash": (NOTE.encode().replace(EM.encode(), EM.encode()[:2]), "UTF-8"),
        "lone surrogate": (NOTE.replace("\n", "\ud800\n", 1), "UTF-8"),
        # Control characters.
        "NUL in origin": (_signed(_body(origin=ORIGIN + "\0")), "control character"),
        "tab in extension": (_signed(_body(extra="a\tb\n")), "control character"),
        "carriage return in body": (_signed(_body(extra="a\rb\n")), "control character"),
        "escape in body": (_signed(_body(extra="\x1b[31m\n")), "control character"),
        "unit separator in body": (_signed(_body(extra="a\x1fb\n")), "control character"),
        "vertical tab in signature line": (NOTE[:-1] + "\x0b\n", "control character"),
        "form feed in signature line": (
            NOTE.replace(f"{EM} ", f"{EM}\x0c", 1),
            "control character",
        ),
        # Size limits.
        "over-long note": (_signed(huge), "exceeds"),
        "over-long note as bytes": (_signed(huge).encode(), "exceeds"),
        "over-long in UTF-8 bytes only": (_signed(wide), "exceeds"),
        "too many signatures": (NOTE + unknown_lines, "more than 100"),
    }


CORRUPTED = _corrupted_notes()


# --- keys --------------------------------------------------------------------------------------


def test_key_hash_known_answer() -> None:
    verifier = NoteVerifier.from_verifier_key(PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_hash == 0xC74F20A3
    assert key_hash("PeterNeumann", 0x01, verifier.public_key) == 0xC74F20A3
    assert verifier.verifier_key() == PETER_VKEY


def test_signer_key_known_answer() -> None:
    signer = NoteSigner.from_signer_key(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_hash == 0xC74F20A3
    assert signer.verifier().verifier_key() == PETER_VKEY
    assert signer.signer_key() == PETER_SKEY


def test_c2sp_verifier_key_known_answer() -> None:
    verifier = NoteVerifier.from_verifier_key(SPEC_VKEY)
    assert verifier.name == "example.com/foo"
    assert verifier.key_hash == 0x530D903A
    assert verifier.public_key == bytes.fromhex(
        "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"
    )


def test_cosignature_verifier_keys_known_answer() -> None:
    remora = CosignatureVerifier.from_verifier_key(REMORA_VKEY)
    assert (remora.name, remora.key_hash) == ("remora.n621.de", 0xDA77ADE7)
    assert remora.verifier_key() == REMORA_VKEY
    assert NoteVerifier.from_verifier_key(
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    )


def _all_mangled(key: str) -> list[str]:
    """Every proper substring and every one-byte increment of ``key`` (as x/mod's tests)."""
    raw = key.encode()
    mangled = [
        raw[i:j].decode()
        for i in range(len(raw) + 1)
        for j in range(i + 1, len(raw) + 1)
        if (i, j) != (0, len(raw))
    ]
    for i in range(len(raw)):
        mangled.append((raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :]).decode())
    return mangled


def test_mangled_verifier_keys_are_rejected() -> None:
    accepted = []
    for key in _all_mangled(PETER_VKEY):
        try:
            NoteVerifier.from_verifier_key(key)
        except VerificationError:
            continue
        accepted.append(key)
    assert accepted == []


def test_mangled_signer_keys_are_rejected() -> None:
    accepted = []
    for key in _all_mangled(PETER_SKEY):
        try:
            NoteSigner.from_signer_key(key)
        except VerificationError:
            continue
        accepted.append(key)
    assert accepted == []


@pytest.mark.parametrize(
    "vkey",
    [
        # golang.org/x/mod: wrong key length and unknown algorithm, each with a matching hash.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        # transparency-dev/formats.
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "rekor.sigstore.dev+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        # Ours.
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        REMORA_VKEY,  # a cosignature key is not a note key
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(VerificationError):
        NoteVerifier.from_verifier_key(vkey)


def test_key_types_are_not_interchangeable() -> None:
    with pytest.raises(VerificationError):
        CosignatureVerifier.from_verifier_key(PETER_VKEY)
    with pytest.raises(VerificationError):
        CosignatureSigner.from_signer_key(PETER_SKEY)
    with pytest.raises(VerificationError):
        NoteSigner.from_signer_key(W1.signer_key())
    # Same key and name, different signature type: different key hash.
    assert W1.key_hash != NoteSigner(W1.name, W1.private_key).key_hash


@pytest.mark.parametrize("signer_type", [NoteSigner, CosignatureSigner])
def test_generated_keys_round_trip(signer_type: type[NoteSigner] | type[CosignatureSigner]) -> None:
    signer = signer_type.generate("example.com/key")
    again = signer_type.from_signer_key(signer.signer_key())
    assert again == signer
    assert again.private_key.private_bytes_raw() == signer.private_key.private_bytes_raw()
    verifier = signer.verifier()
    assert type(verifier).from_verifier_key(verifier.verifier_key()) == verifier
    assert (verifier.name, verifier.key_hash) == (signer.name, signer.key_hash)
    assert "private_key" not in repr(signer)


@pytest.mark.parametrize(
    "name",
    ["", "a+b", "a b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b", "a\u3000b", "a\x01b", "a\ud800b"],
)
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError):
        NoteSigner(name, _key(9))
    with pytest.raises(ValueError):
        CosignatureVerifier(name, W1.public_key)
    with pytest.raises(ValueError):
        NoteSignature(name, 1, b"x")


def test_verifier_rejects_bad_public_key_length() -> None:
    with pytest.raises(ValueError):
        NoteVerifier("a", b"\0" * 31)


# --- signed notes ------------------------------------------------------------------------------


def test_sign_known_answer() -> None:
    signer = NoteSigner.from_signer_key(PETER_SKEY)
    note = SignedNote(
        PETER_TEXT,
        (NoteSignature(signer.name, signer.key_hash, signer.sign(PETER_TEXT.encode())),),
    )
    assert note.format() == PETER_TEXT + "\n" + PETER_SIG


def test_open_known_answer() -> None:
    peter = NoteVerifier.from_verifier_key(PETER_VKEY)
    enoch = NoteVerifier.from_verifier_key(ENOCH_VKEY)
    note = SignedNote.parse(PETER_TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.text == PETER_TEXT
    assert [(s.name, s.key_hash) for s in note.signatures] == [
        ("PeterNeumann", 0xC74F20A3),
        ("EnochRoot", 0xAF0CFE78),
    ]
    assert [s.name for s in note.verify([peter])] == ["PeterNeumann"]
    assert [s.name for s in note.verify([enoch])] == ["EnochRoot"]
    assert [s.name for s in note.verify([peter, enoch, enoch])] == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(VerificationError, match="no signature by a known key"):
        note.verify([])


def test_c2sp_signed_note_known_answer() -> None:
    note = SignedNote.parse(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert note.verify([NoteVerifier.from_verifier_key(SPEC_VKEY)]) == note.signatures
    assert note.format() == SPEC_NOTE


def test_open_rejects_invalid_known_signature() -> None:
    peter = NoteVerifier.from_verifier_key(PETER_VKEY)
    tampered = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(VerificationError, match="invalid signature for key PeterNeumann"):
        SignedNote.parse(PETER_TEXT + "\n" + tampered).verify([peter])


@pytest.mark.parametrize(
    "message",
    [
        # golang.org/x/mod/sumdb/note TestOpen's malformed messages.
        PETER_TEXT,
        PETER_TEXT + "\n",
        PETER_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + PETER_TEXT + "\n" + PETER_SIG,
        b"\xff" + (PETER_TEXT + "\n" + PETER_SIG).encode(),
        PETER_TEXT + "\n" + f"{EM} Bad Name {PETER_B64}",
        PETER_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        PETER_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1),
        # Duplicate lines: x/mod ignores them, Provex rejects the note.
        PETER_TEXT + "\n" + PETER_SIG + PETER_SIG,
    ],
)
def test_malformed_notes(message: str | bytes) -> None:
    with pytest.raises(VerificationError):
        SignedNote.parse(message)


def test_note_text_may_contain_empty_lines() -> None:
    # signed-note: the text is separated from the signatures by the last empty line.
    text = "a\n\nb\n\n"
    signed = SignedNote(text, (NoteSignature("k", 1, b"s"),))
    assert SignedNote.parse(signed.format()) == signed


def test_signed_note_construction_is_validated() -> None:
    sig = NoteSignature("k", 1, b"s")
    with pytest.raises(ValueError):
        SignedNote("no final newline", (sig,))
    with pytest.raises(ValueError):
        SignedNote("tab\there\n", (sig,))
    with pytest.raises(ValueError):
        SignedNote("text\n", ())
    with pytest.raises(ValueError):
        SignedNote("text\n", (sig, NoteSignature("k", 1, b"t")))
    with pytest.raises(ValueError):
        NoteSignature("k", 2**32, b"s")
    with pytest.raises(ValueError):
        NoteSignature("k", 1, b"")


def test_ambiguous_verifiers_are_a_configuration_error() -> None:
    impostor = NoteVerifier(LOG.name, OTHER.public_key)
    object.__setattr__(impostor, "key_hash", LOG.key_hash)  # a forced collision
    with pytest.raises(ValueError, match="two different verifiers"):
        SignedNote.parse(NOTE).verify([LOG_V, impostor])


def test_accepts_at_least_sixteen_signatures() -> None:
    signers = [
        CosignatureSigner(f"w{i}.example", _key(100 + i), clock=lambda: T0) for i in range(20)
    ]
    note = NOTE
    for signer in signers:
        note = add_signature(note, signer)
    verified = open_checkpoint(
        note,
        LOG_V,
        origin=ORIGIN,
        witnesses=[s.verifier() for s in signers],
        witness_threshold=20,
    )
    assert len(verified.cosigned_by) == 20


# --- checkpoints -------------------------------------------------------------------------------


def test_c2sp_checkpoint_known_answer() -> None:
    checkpoint = Checkpoint.parse(SOFA_BODY)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.to_text() == SOFA_BODY


def test_c2sp_cosignature_example_parses() -> None:
    note = SignedNote.parse(SOFA_NOTE)
    assert note.text == SOFA_BODY
    witness = note.signatures[1]
    assert (witness.name, witness.key_hash) == ("witness.example.com/w1", 0x8D66CF3F)
    # The spec's example message uses this time: "time 1679315147".
    assert cosignature_timestamp(witness.signature) == 1679315147
    assert note.format() == SOFA_NOTE


def test_transparency_dev_cosignature_timestamps() -> None:
    works = base64.b64decode(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
    )
    assert cosignature_timestamp(works[4:]) == 1727964367
    plain = base64.b64decode(
        "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
    )
    with pytest.raises(VerificationError):
        cosignature_timestamp(plain[4:])


def test_real_cosigned_checkpoint() -> None:
    log = NoteVerifier.from_verifier_key(ARCHE_VKEY)
    remora = CosignatureVerifier.from_verifier_key(REMORA_VKEY)
    verified = open_checkpoint(
        ARCHE_NOTE, log, origin=ARCHE_ORIGIN, witnesses=[remora], witness_threshold=1
    )
    assert verified.checkpoint.origin == ARCHE_ORIGIN
    assert verified.checkpoint.size == 1432088532
    assert verified.checkpoint.to_text() == SignedNote.parse(ARCHE_NOTE).text
    assert verified.cosignatures == (Cosignature("remora.n621.de", 0xDA77ADE7, 1779573024),)
    assert verified.cosigned_by == ("remora.n621.de",)
    # The other lines (a type 0x05 signature under the log's name, other witnesses) are
    # unknown keys and ignored; without the witness the log signature alone suffices.
    assert verify_checkpoint(ARCHE_NOTE, log, origin=ARCHE_ORIGIN) == verified.checkpoint
    assert SignedNote.parse(ARCHE_NOTE).format() == ARCHE_NOTE


def test_real_checkpoint_tampered() -> None:
    log = NoteVerifier.from_verifier_key(ARCHE_VKEY)
    with pytest.raises(VerificationError):
        verify_checkpoint(ARCHE_NOTE.replace("1432088532", "42"), log, origin=ARCHE_ORIGIN)


def test_sign_and_verify_round_trip() -> None:
    assert NOTE == BODY + "\n" + LOG_LINE
    assert verify_checkpoint(NOTE, LOG_V, origin=ORIGIN) == CP
    assert verify_checkpoint(NOTE.encode(), LOG_V, origin=ORIGIN) == CP


def test_checkpoint_with_extensions() -> None:
    checkpoint = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "ext+two"))
    assert checkpoint.to_text() == f"{ORIGIN}\n0\n{ROOT_B64}\next one\next+two\n"
    note = add_signature(sign_checkpoint(checkpoint, LOG), W1)
    assert verify_checkpoint(note, LOG_V, origin=ORIGIN, witnesses=[W1_V]) == checkpoint
    # The cosignature covers the extension lines too.
    swapped = note.replace("ext+two\n\n", "ext+twO\n\n")
    with pytest.raises(VerificationError):
        verify_checkpoint(swapped, LOG_V, origin=ORIGIN)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"origin": ""}, "origin"),
        ({"origin": "a\nb"}, "origin"),
        ({"origin": "a\x00"}, "origin"),
        ({"size": -1}, "size"),
        ({"size": 2**64}, "size"),
        ({"size": True}, "size"),
        ({"size": 1.0}, "size"),
        ({"root_hash": ROOT[:31]}, "root"),
        ({"root_hash": bytearray(ROOT)}, "root"),
        ({"extensions": ["x"]}, "extensions"),
        ({"extensions": ("",)}, "extension"),
        ({"extensions": ("a\nb",)}, "extension"),
    ],
)
def test_checkpoint_construction_is_validated(kwargs: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {"origin": ORIGIN, "size": 1, "root_hash": ROOT, "extensions": ()}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=problem):
        Checkpoint(**fields)  # type: ignore[arg-type]


def test_zero_size_and_maximum_size() -> None:
    for size in (0, 2**64 - 1):
        checkpoint = Checkpoint(ORIGIN, size, ROOT)
        assert Checkpoint.parse(checkpoint.to_text()) == checkpoint


@pytest.mark.parametrize("name", sorted(CORRUPTED))
def test_corrupted_checkpoint_notes_are_rejected(name: str) -> None:
    note, reason = CORRUPTED[name]
    with pytest.raises(VerificationError, match=reason):
        verify_checkpoint(note, LOG_V, origin=ORIGIN, witnesses=[W1_V, W2_V])


def test_corruption_baseline_verifies() -> None:
    verified = open_checkpoint(COSIGNED, LOG_V, origin=ORIGIN, witnesses=[W1_V, W2_V])
    assert verified.checkpoint == CP
    assert verified.cosigned_by == (W1.name, W2.name)


# --- cosignatures ------------------------------------------------------------------------------


def test_cosignature_layout() -> None:
    raw = W1.sign(BODY.encode(), timestamp=1679315147)
    assert len(raw) == 8 + 64
    assert raw[:8] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    assert cosignature_message(1679315147, BODY.encode()) == message
    assert W1_V.verify(BODY.encode(), raw)
    assert not W1_V.verify(BODY.encode() + b"x\n", raw)
    assert key_hash(W1.name, 0x04, W1.public_key) == W1.key_hash


def test_cosigner_clock_and_timestamp() -> None:
    assert cosignature_timestamp(W1.sign(BODY.encode())) == T0
    assert cosignature_timestamp(W1.sign(BODY.encode(), timestamp=0)) == 0
    with pytest.raises(ValueError):
        W1.sign(BODY.encode(), timestamp=2**63)
    with pytest.raises(ValueError):
        W1.sign(BODY.encode(), timestamp=-1)


def test_cosigner_signs_checkpoints_only() -> None:
    with pytest.raises(VerificationError):
        W1.sign(PETER_TEXT.encode())
    with pytest.raises(VerificationError):
        add_signature(PETER_TEXT + "\n" + PETER_SIG, W1)


def test_multiple_cosignatures_and_threshold() -> None:
    witnesses = [W1_V, W2_V, W3_V]
    verified = open_checkpoint(
        COSIGNED, LOG_V, origin=ORIGIN, witnesses=witnesses, witness_threshold=2
    )
    assert verified == VerifiedCheckpoint(
        CP,
        (
            Cosignature(W1.name, W1.key_hash, T0),
            Cosignature(W2.name, W2.key_hash, T0 + 7),
        ),
    )
    with pytest.raises(VerificationError, match="2 witness cosignature"):
        open_checkpoint(COSIGNED, LOG_V, origin=ORIGIN, witnesses=witnesses, witness_threshold=3)
    all_three = add_signature(COSIGNED, W3)
    assert open_checkpoint(
        all_three, LOG_V, origin=ORIGIN, witnesses=witnesses, witness_threshold=3
    ).cosigned_by == (W1.name, W2.name, W3.name)


def test_unknown_cosignatures_are_ignored() -> None:
    verified = open_checkpoint(COSIGNED, LOG_V, origin=ORIGIN, witnesses=[W2_V])
    assert verified.cosigned_by == (W2.name,)
    assert verify_checkpoint(COSIGNED, LOG_V, origin=ORIGIN) == CP
    garbage = COSIGNED + _raw_line("stranger.example", 7, b"\0" * 72)
    assert verify_checkpoint(garbage, LOG_V, origin=ORIGIN, witnesses=[W1_V]) == CP


def test_rotated_witness_key_counts_once() -> None:
    rotated = CosignatureSigner(W1.name, _key(6), clock=lambda: T0 + 60)
    note = add_signature(COSIGNED, rotated)
    verified = open_checkpoint(
        note, LOG_V, origin=ORIGIN, witnesses=[W1_V, rotated.verifier(), W2_V]
    )
    assert len(verified.cosignatures) == 3
    assert verified.cosigned_by == (W1.name, W2.name)


@pytest.mark.parametrize(
    ("witnesses", "threshold", "problem"),
    [
        ((W1_V,), -1, "negative"),
        ((W1_V,), 2, "exceeds"),
        ((W1_V, W1_V), 2, "exceeds"),
        ((W1_V, CosignatureVerifier("alias.example", W1.public_key)), 1, "share a key"),
        ((CosignatureVerifier("log-as-witness", LOG.public_key),), 0, "log's key"),
    ],
)
def test_inconsistent_witness_settings(
    witnesses: tuple[CosignatureVerifier, ...], threshold: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        verify_checkpoint(
            COSIGNED, LOG_V, origin=ORIGIN, witnesses=witnesses, witness_threshold=threshold
        )


# --- adding signatures -------------------------------------------------------------------------


def test_add_signature_order_is_canonical() -> None:
    one_way = add_signature(add_signature(add_signature(NOTE, W3), W1), W2)
    other_way = add_signature(add_signature(add_signature(NOTE, W2), W3), W1)
    assert one_way == other_way
    names = [s.name for s in SignedNote.parse(one_way).signatures]
    assert names == [LOG.name, W1.name, W2.name, W3.name]


def test_add_signature_replaces_a_keys_line() -> None:
    later = CosignatureSigner(W1.name, W1.private_key, clock=lambda: T0 + 3600)
    note = add_signature(COSIGNED, later)
    signatures = SignedNote.parse(note).signatures
    assert len(signatures) == 3
    verified = open_checkpoint(note, LOG_V, origin=ORIGIN, witnesses=[W1_V, W2_V])
    assert {c.name: c.timestamp for c in verified.cosignatures} == {
        W1.name: T0 + 3600,
        W2.name: T0 + 7,
    }
    # Re-signing by the log leaves the note as it was (Ed25519 is deterministic).
    assert add_signature(COSIGNED, LOG) == COSIGNED


def test_add_signature_rejects_malformed_notes() -> None:
    with pytest.raises(VerificationError):
        add_signature(NOTE[:-1], W1)
    with pytest.raises(VerificationError):
        add_signature(NOTE + LOG_LINE, W1)


# --- properties --------------------------------------------------------------------------------

_line_chars = st.characters(codec="utf-8").filter(lambda c: c >= " ")
_lines = st.text(_line_chars, min_size=1, max_size=40)
checkpoints = st.builds(
    Checkpoint,
    origin=_lines,
    size=st.integers(0, 2**64 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_lines, max_size=3).map(tuple),
)


@given(checkpoints)
def test_checkpoint_text_round_trip(checkpoint: Checkpoint) -> None:
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint


@settings(max_examples=50)
@given(checkpoints)
def test_signed_checkpoint_round_trip(checkpoint: Checkpoint) -> None:
    note = add_signature(sign_checkpoint(checkpoint, LOG), W1)
    verified = open_checkpoint(
        note, LOG_V, origin=checkpoint.origin, witnesses=[W1_V], witness_threshold=1
    )
    assert verified.checkpoint == checkpoint
    assert SignedNote.parse(note).format() == note


@given(
    st.lists(st.text(_line_chars, max_size=20), min_size=1, max_size=6),
    st.lists(
        st.tuples(
            st.text(_line_chars.filter(lambda c: c != "+" and not c.isspace()), min_size=1),
            st.integers(0, 2**32 - 1),
            st.binary(min_size=1, max_size=80),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda t: (t[0], t[1]),
    ),
)
def test_signed_note_round_trip(lines: list[str], sigs: list[tuple[str, int, bytes]]) -> None:
    note = SignedNote(
        "".join(line + "\n" for line in lines), tuple(NoteSignature(*s) for s in sigs)
    )
    assert SignedNote.parse(note.format()) == note
    assert SignedNote.parse(note.format().encode()) == note


@given(st.data())
def test_single_byte_changes_never_verify_a_different_checkpoint(data: st.DataObject) -> None:
    raw = bytearray(COSIGNED.encode())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
    try:
        checkpoint = verify_checkpoint(bytes(raw), LOG_V, origin=ORIGIN, witnesses=[W1_V])
    except VerificationError:
        return
    assert checkpoint == CP  # only a change in an unknown (W2) line can be accepted


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_only_raises_verification_error(note: str | bytes) -> None:
    with pytest.raises(VerificationError):
        verify_checkpoint(note, LOG_V, origin=ORIGIN)


@given(st.text(max_size=100))
def test_arbitrary_checkpoint_text_parses_or_raises_verification_error(text: str) -> None:
    try:
        checkpoint = Checkpoint.parse(text)
    except VerificationError:
        return
    assert checkpoint.to_text() == text


# --- the memory of verified notes -------------------------------------------------------------

REMEMBERED_THEN_ASKED: dict[str, tuple[dict[str, object], dict[str, object], str | None]] = {
    # (settings a note verified under, other settings it is asked about, error expected)
    "same settings": ({}, {}, None),
    "a witness quorum it does not meet": (
        {"witnesses": [W1_V, W2_V]},
        {"witnesses": [W1_V, W2_V, W3_V], "witness_threshold": 3},
        "2 witness cosignature",
    ),
    "another log key": ({}, {"log_verifier": OTHER.verifier()}, "no signature by a known key"),
    "a key of the same name": (
        {},
        {"log_verifier": NoteVerifier(LOG.name, OTHER.public_key)},
        "no signature by a known key",
    ),
    "another origin": ({}, {"origin": "elsewhere.example/log"}, "origin"),
    "fewer witnesses": ({"witnesses": [W1_V, W2_V]}, {"witnesses": [W1_V]}, None),
}


@pytest.mark.parametrize(
    "first, then, error", REMEMBERED_THEN_ASKED.values(), ids=REMEMBERED_THEN_ASKED.keys()
)
def test_a_remembered_note_answers_only_the_same_question(
    first: dict[str, object], then: dict[str, object], error: str | None
) -> None:
    def ask(settings: dict[str, object]) -> VerifiedCheckpoint:
        arguments: dict[str, object] = {"log_verifier": LOG_V, "origin": ORIGIN, **settings}
        return open_checkpoint(COSIGNED, **arguments)  # type: ignore[arg-type]

    remembered = ask(first)
    assert ask(first) == remembered
    for _ in range(2):  # failures are never remembered
        if error is None:
            fresh = ask(then)
            checkpoint.forget_verified()
            assert ask(then) == fresh  # the same answer as a verification from scratch
        else:
            with pytest.raises(VerificationError, match=error):
                ask(then)


def test_the_memory_is_keyed_on_the_exact_note() -> None:
    checkpoint.forget_verified()
    assert verify_checkpoint(NOTE, LOG_V, origin=ORIGIN) == CP
    assert verify_checkpoint(NOTE.encode(), LOG_V, origin=ORIGIN) == CP  # bytes: its own entry
    assert checkpoint.verified_memory().currsize == 2
    body, _, line = NOTE.partition("\n\n")
    tampered = body + "\n\n" + line[:-6] + ("A" if line[-6] != "A" else "B") + line[-5:]
    assert len(tampered) == len(NOTE)
    with pytest.raises(VerificationError):
        verify_checkpoint(tampered, LOG_V, origin=ORIGIN)
    assert checkpoint.verified_memory().currsize == 2
    for _ in range(3):
        verify_checkpoint(NOTE, LOG_V, origin=ORIGIN)
    assert checkpoint.verified_memory().hits == 3


def test_the_memory_is_bounded() -> None:
    checkpoint.forget_verified()
    for size in range(checkpoint.VERIFIED_CACHE_SIZE + 5):
        note = sign_checkpoint(Checkpoint(ORIGIN, size, ROOT), LOG)
        verify_checkpoint(note, LOG_V, origin=ORIGIN)
    assert checkpoint.verified_memory().currsize == checkpoint.VERIFIED_CACHE_SIZE
