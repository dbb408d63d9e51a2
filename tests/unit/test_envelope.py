"""DSSE envelopes: PAE, signing, strict parsing, threshold verification."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from provex import envelope as dsse
from provex.errors import VerificationError

TYPE = "application/vnd.provex.test+protobuf"
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 4)]
PUBLIC = [k.public_key() for k in KEYS]


def test_pae_matches_the_dsse_specification() -> None:
    # The worked example of the DSSE protocol document.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    import hashlib

    raw = dsse.raw_public_key(PUBLIC[0])
    assert len(raw) == 32
    assert dsse.key_id(PUBLIC[0]) == hashlib.sha256(raw).hexdigest() == dsse.key_id(raw)


@given(payload=st.binary(max_size=512), payload_type=st.text(min_size=1, max_size=40))
def test_round_trip_through_json(payload: bytes, payload_type: str) -> None:
    signed = dsse.sign(payload_type, payload, KEYS[:2])
    parsed = dsse.Envelope.from_json(signed.to_json())
    assert parsed == signed
    assert dsse.verify(parsed, payload_type, PUBLIC, threshold=2) == payload


def test_json_form_is_canonical() -> None:
    signed = dsse.sign(TYPE, b"x", KEYS[:1])
    document = json.loads(signed.to_json())
    assert list(document) == ["payload", "payloadType", "signatures"]
    assert b" " not in signed.to_json()


def test_unknown_signers_are_ignored_and_threshold_counts_distinct_keys() -> None:
    stranger = Ed25519PrivateKey.generate()
    signed = dsse.add_signatures(dsse.sign(TYPE, b"data", [stranger]), [KEYS[0]])
    assert dsse.verify(signed, TYPE, {dsse.key_id(PUBLIC[0]): PUBLIC[0]}) == b"data"
    doubled = dsse.add_signatures(dsse.sign(TYPE, b"data", [KEYS[0]]), [KEYS[0]])
    with pytest.raises(VerificationError, match="1 valid signature"):
        dsse.verify(doubled, TYPE, PUBLIC, threshold=2)


def _mutate_payload(e: dsse.Envelope) -> dsse.Envelope:
    return dsse.Envelope(e.payload_type, e.payload + b"!", e.signatures)


def _mutate_type(e: dsse.Envelope) -> dsse.Envelope:
    return dsse.Envelope(e.payload_type + "x", e.payload, e.signatures)


def _flip_signature(e: dsse.Envelope) -> dsse.Envelope:
    sig = e.signatures[0]
    flipped = bytes([sig.sig[0] ^ 1]) + sig.sig[1:]
    return dsse.Envelope(e.payload_type, e.payload, (dsse.Signature(sig.keyid, flipped),))


def _no_signatures(e: dsse.Envelope) -> dsse.Envelope:
    return dsse.Envelope(e.payload_type, e.payload, ())


def _wrong_keyid(e: dsse.Envelope) -> dsse.Envelope:
    sig = e.signatures[0]
    return dsse.Envelope(e.payload_type, e.payload, (dsse.Signature("00" * 32, sig.sig),))


def _truncated_signature(e: dsse.Envelope) -> dsse.Envelope:
    sig = e.signatures[0]
    return dsse.Envelope(e.payload_type, e.payload, (dsse.Signature(sig.keyid, sig.sig[:-1]),))


def _signed_by_stranger(e: dsse.Envelope) -> dsse.Envelope:
    return dsse.sign(e.payload_type, e.payload, [Ed25519PrivateKey.generate()])


CORRUPTIONS: dict[str, Callable[[dsse.Envelope], dsse.Envelope]] = {
    "payload changed": _mutate_payload,
    "payload type changed": _mutate_type,
    "signature bit flipped": _flip_signature,
    "no signatures": _no_signatures,
    "key id of nobody": _wrong_keyid,
    "signature truncated": _truncated_signature,
    "signed by an unknown key": _signed_by_stranger,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_every_corruption_is_rejected(corrupt: Callable[[dsse.Envelope], dsse.Envelope]) -> None:
    signed = dsse.sign(TYPE, b"payload", KEYS[:1])
    assert dsse.verify(signed, TYPE, PUBLIC[:1]) == b"payload"
    with pytest.raises(VerificationError):
        dsse.verify(corrupt(signed), TYPE, PUBLIC[:1])


MALFORMED_JSON: dict[str, bytes] = {
    "not json": b"{",
    "not utf-8": b"\xff\xfe",
    "a list": b"[]",
    "no payloadType": b'{"payload":"","signatures":[]}',
    "empty payloadType": b'{"payload":"","payloadType":"","signatures":[]}',
    "no payload": b'{"payloadType":"t","signatures":[]}',
    "payload not base64": b'{"payload":"***","payloadType":"t","signatures":[]}',
    "signatures not a list": b'{"payload":"","payloadType":"t","signatures":{}}',
    "signature not an object": b'{"payload":"","payloadType":"t","signatures":[1]}',
    "signature without sig": b'{"payload":"","payloadType":"t","signatures":[{"keyid":"a"}]}',
    "sig not base64": b'{"payload":"","payloadType":"t","signatures":[{"keyid":"a","sig":"!"}]}',
    "too large": b" " * (dsse.MAX_ENVELOPE_BYTES + 1),
}


@pytest.mark.parametrize("data", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_rejected(data: bytes) -> None:
    with pytest.raises(VerificationError):
        dsse.Envelope.from_json(data)


def test_public_key_must_be_32_bytes() -> None:
    with pytest.raises(VerificationError, match="32 bytes"):
        dsse.load_public_key(b"\x00" * 31)


def test_sign_needs_a_key_and_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        dsse.sign(TYPE, b"", [])
    signed = dsse.sign(TYPE, b"", KEYS[:1])
    with pytest.raises(ValueError):
        dsse.verify(signed, TYPE, PUBLIC, threshold=0)
    assert base64.b64decode(json.loads(signed.to_json())["payload"]) == b""


def test_a_signing_key_signs_exactly_as_its_private_key() -> None:
    key = Ed25519PrivateKey.generate()
    prepared = dsse.SigningKey.of(key)
    assert prepared.keyid == dsse.key_id(key.public_key())
    by_key = dsse.sign("application/x-test", b"payload", [key])
    by_prepared = dsse.sign("application/x-test", b"payload", [prepared])
    assert by_prepared == by_key  # Ed25519 signatures are deterministic.
    dsse.verify(by_prepared, "application/x-test", {prepared.keyid: key.public_key()})


# The canonical form (what to_json writes, what the log holds) has a fast path in
# from_json; every input must still parse, or be refused, exactly as json.loads reads it.
_SIGNED = dsse.add_signatures(dsse.sign(TYPE, b"\x00payload\xff", KEYS[:1]), KEYS[1:2])
_CANONICAL = _SIGNED.to_json()
_ONE_SIGNATURE = dsse.sign(TYPE, b"x", KEYS[:1]).to_json()
_PAYLOAD = base64.b64encode(_SIGNED.payload)
_SIG = base64.b64encode(_SIGNED.signatures[0].sig)

EDGE_JSON: dict[str, bytes] = {
    "canonical, two signatures": _CANONICAL,
    "canonical, one signature": _ONE_SIGNATURE,
    "no signatures": dsse.Envelope(TYPE, b"x", ()).to_json(),
    "white space": json.dumps(json.loads(_CANONICAL), indent=1).encode(),
    "keys in another order": b'{"payloadType":"t","payload":"eA==","signatures":[]}',
    "escaped slash in payload": _CANONICAL.replace(b"/", b"\\/"),
    "unicode escape in payload": _CANONICAL.replace(
        _PAYLOAD[:1], b"\\u00" + _PAYLOAD[:1].hex().encode(), 1
    ),
    "non-ASCII payload type": _CANONICAL.replace(TYPE.encode(), "类型".encode()),
    "escaped quote in payload type": _CANONICAL.replace(b"+protobuf", b'+\\"protobuf'),
    "duplicate payload key": _CANONICAL.replace(b'{"payload":', b'{"payload":"AAAA","payload":', 1),
    "non-canonical padding bits": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"eB=="'),
    "missing padding": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"eA"'),
    "padding inside": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"e=A="'),
    "three padding characters": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"eA==="'),
    "new line in payload": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"eA\\n=="'),
    "raw new line in payload": _ONE_SIGNATURE.replace(b'"payload":"eA=="', b'"payload":"e\nA=="'),
    "sig not base64": _CANONICAL.replace(_SIG, b"*" + _SIG[1:]),
    "sig missing padding": _CANONICAL.replace(_SIG, _SIG.rstrip(b"=")),
    "trailing comma in signatures": _CANONICAL.replace(b"}]}", b"},]}"),
    "signature with an extra field": _CANONICAL.replace(b'{"keyid"', b'{"extra":1,"keyid"', 1),
    "empty payload type": _ONE_SIGNATURE.replace(TYPE.encode(), b""),
    "trailing garbage": _CANONICAL + b"x",
    "trailing white space": _CANONICAL + b" ",
    "truncated": _CANONICAL[:-1],
}


def _by_json_loads(data: bytes) -> dsse.Envelope | str:
    try:
        return dsse._from_any_json(data)
    except VerificationError as error:
        return f"refused: {error}"


def _by_from_json(data: bytes) -> dsse.Envelope | str:
    try:
        return dsse.Envelope.from_json(data)
    except VerificationError as error:
        return f"refused: {error}"


@pytest.mark.parametrize("data", EDGE_JSON.values(), ids=EDGE_JSON.keys())
def test_fast_path_reads_every_input_as_json_loads_does(data: bytes) -> None:
    assert _by_from_json(data) == _by_json_loads(data)


def test_fast_path_edge_table_covers_both_outcomes() -> None:
    outcomes = {isinstance(_by_from_json(data), str) for data in EDGE_JSON.values()}
    assert outcomes == {True, False}
    assert dsse.Envelope.from_json(_CANONICAL) == _SIGNED
    assert dsse.Envelope.from_json(EDGE_JSON["non-canonical padding bits"]).payload == b"x"


@given(
    position=st.integers(min_value=0),
    replacement=st.sampled_from(
        [b"", b"=", b"==", b"A", b"/", b"+", b"\\", b'"', b",", b"}", b"]", b" ", b"\n", b"\xc3"]
    ),
    width=st.integers(min_value=0, max_value=3),
)
def test_fast_path_agrees_with_json_loads_on_mutations(
    position: int, replacement: bytes, width: int
) -> None:
    at = position % (len(_CANONICAL) + 1)
    data = _CANONICAL[:at] + replacement + _CANONICAL[at + width :]
    assert _by_from_json(data) == _by_json_loads(data)
