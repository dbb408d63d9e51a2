"""Trust root rotation: ``registry.trust_rotation`` makes versions a node accepts; bad ones fail.

Each case initializes a real registry state (keys, database, log), rotates,
and checks the new version as a node does: from the pinned version 1 with
:func:`provex.trust.verify_chain`. Versions signed without a threshold of
the old root keys (or of their own) are refused. The node's side stores
versions atomically and only swaps in one that verifies exactly as before.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.state import StateLayout as NodeLayout
from node.trust_follow import TrustRootHolder, same_verification_keys, store_trust_root
from provex import documents, trust
from provex import envelope as dsse
from provex.errors import FailedPrecondition, InvalidArgument, VerificationError
from provex.keyfiles import load_ed25519
from registry.config import RegistryConfig
from registry.setup import initialize
from registry.state import StateLayout, latest_trust_root
from registry.transparency import verify_log
from registry.trust_rotation import new_root_key_path, rotate

NOW = datetime(2026, 11, 25, tzinfo=UTC)
LATER = NOW + timedelta(days=360)  # Near the end of version 1's year.
CONFIG = RegistryConfig(trust_domain="provex.test", log_origin="provex.test/log")


async def _registry(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "registry"
    result = await initialize(state, CONFIG, NOW)
    return state, result.trust_root_digest


def _chain(state: Path, digest: str, now: datetime) -> trust.SignedTrustRoot:
    """What a node does: the pinned version 1, then every later file in order."""
    layout = StateLayout(state)
    pinned = trust.load_trust_root(layout.trust_root(1).read_bytes(), digest, NOW)
    latest, _ = latest_trust_root(state)
    newer = [layout.trust_root(v).read_bytes() for v in range(2, latest + 1)]
    return trust.verify_chain(pinned, newer, now)


def _recorded(state: Path) -> list[tuple[int, int, bytes]]:
    conn = sqlite3.connect(StateLayout(state).database)
    try:
        rows = conn.execute(
            "SELECT t.version, t.log_index, e.entry FROM trust_roots t "
            "JOIN log_entries e ON e.idx = t.log_index ORDER BY t.version"
        ).fetchall()
    finally:
        conn.close()
    return [(int(v), int(i), bytes(e)) for v, i, e in rows]


@pytest.mark.parametrize(
    ("new_root_keys", "days"),
    [(False, 365.0), (True, 365.0), (False, 30.0), (True, 730.0)],
)
async def test_rotated_version_verifies_from_version_1(
    tmp_path: Path, new_root_keys: bool, days: float
) -> None:
    state, digest = await _registry(tmp_path)
    first = _chain(state, digest, NOW).root
    done = await rotate(
        state, CONFIG, LATER, validity=timedelta(days=days), new_root_keys=new_root_keys
    )
    assert done.version == 2
    # A year after init version 1 has expired; the chain to version 2 still holds.
    current = _chain(state, digest, NOW + timedelta(days=366))
    assert current.root.version == 2
    assert current.digest == done.digest
    assert current.root.expires_at == LATER + timedelta(days=days)
    assert current.root.issuer_key == first.issuer_key
    assert current.root.log_key == first.log_key
    assert current.root.ca_certificate_pem == first.ca_certificate_pem
    assert current.root.trust_domain == first.trust_domain
    assert (set(current.root.root_keys) == set(first.root_keys)) is not new_root_keys
    # Recorded as version 1 is: a row and a log entry of the trust-root document type.
    recorded = _recorded(state)
    assert [(v, i) for v, i, _ in recorded] == [(1, 0), (2, done.log_index)]
    assert recorded[1][2] == StateLayout(state).trust_root(2).read_bytes()
    opened = dsse.Envelope.from_json(recorded[1][2])
    assert opened.payload_type == trust.PAYLOAD_TYPE
    check = verify_log(StateLayout(state).database, first.log_verifier, CONFIG.log_origin)
    assert check.ok, check.problems
    if new_root_keys:
        assert len(done.new_root_key_files) == 3
        for path in done.new_root_key_files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            raw = dsse.raw_public_key(load_ed25519(path).public_key())
            assert raw in current.root.root_keys
    else:
        assert done.new_root_key_files == ()


async def test_rotations_chain_and_the_new_root_keys_sign_the_next(tmp_path: Path) -> None:
    state, digest = await _registry(tmp_path)
    await rotate(state, CONFIG, NOW, new_root_keys=True)
    # Version 1's root keys are no longer needed: version 2's own sign version 3.
    for number in (1, 2, 3):
        StateLayout(state).root_key(number).rename(tmp_path / f"offline-{number}.pem")
    third = await rotate(state, CONFIG, NOW, new_root_keys=True)
    assert third.version == 3
    assert third.new_root_key_files[0] == new_root_key_path(StateLayout(state), 3, 1)
    assert _chain(state, digest, NOW).root.version == 3


@pytest.mark.parametrize(
    ("old_signers", "new_signers", "refusal"),
    [
        (1, 2, "not signed by 2 of version 1's root keys"),
        (0, 2, "not signed by 2 of version 1's root keys"),
        (2, 1, "not signed by 2 of version 2's root keys"),
        (2, 0, "not signed by 2 of version 2's root keys"),
    ],
)
async def test_a_version_without_both_thresholds_is_refused(
    tmp_path: Path, old_signers: int, new_signers: int, refusal: str
) -> None:
    state, digest = await _registry(tmp_path)
    pinned = _chain(state, digest, NOW)
    old_keys = [load_ed25519(StateLayout(state).root_key(n)) for n in (1, 2, 3)]
    new_keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    successor = replace(
        pinned.root,
        version=2,
        root_keys=tuple(dsse.raw_public_key(k.public_key()) for k in new_keys),
    )
    signers = old_keys[:old_signers] + new_keys[:new_signers]
    envelope = documents.sign_document(successor.to_proto(), signers).to_json()
    with pytest.raises(VerificationError, match=refusal):
        trust.verify_chain(pinned, [envelope], NOW)


async def test_refusals(tmp_path: Path) -> None:
    state, _ = await _registry(tmp_path)
    with pytest.raises(InvalidArgument, match="--validity-days"):
        await rotate(state, CONFIG, NOW, validity=timedelta(0))
    # Too few root keys on disk (moved offline): nothing is made.
    for number in (2, 3):
        StateLayout(state).root_key(number).rename(tmp_path / f"offline-{number}.pem")
    with pytest.raises(FailedPrecondition, match="only 1 of trust root version 1's root keys"):
        await rotate(state, CONFIG, NOW)
    assert latest_trust_root(state)[0] == 1
    assert [v for v, _, _ in _recorded(state)] == [1]
    # A readiness file whose server does not answer: the operator decides, not the command.
    run = state / "run"
    run.mkdir()
    (run / "endpoints.json").write_text(
        json.dumps({"service": "registry", "public": "127.0.0.1:9", "ca_certificate": "x"})
    )
    with pytest.raises(FailedPrecondition, match="delete"):
        await rotate(state, CONFIG, NOW)


async def test_an_interrupted_rotation_is_completed_not_repeated(tmp_path: Path) -> None:
    state, digest = await _registry(tmp_path)
    done = await rotate(state, CONFIG, NOW, new_root_keys=True)
    # As if the command stopped after logging the version but before writing its file.
    done.path.unlink()
    again = await rotate(state, CONFIG, NOW, new_root_keys=True)
    assert again.resumed
    assert (again.version, again.digest, again.log_index) == (2, done.digest, done.log_index)
    assert again.new_root_key_files == done.new_root_key_files
    assert [v for v, _, _ in _recorded(state)] == [1, 2]
    assert _chain(state, digest, NOW).digest == done.digest


async def test_the_node_stores_versions_once_and_swaps_only_same_keys(tmp_path: Path) -> None:
    state, digest = await _registry(tmp_path)
    pinned = _chain(state, digest, NOW)
    await rotate(state, CONFIG, NOW, new_root_keys=True)
    second = _chain(state, digest, NOW)
    envelope = StateLayout(state).trust_root(2).read_bytes()
    layout = NodeLayout(tmp_path / "node")
    assert store_trust_root(layout, 2, envelope)
    assert not store_trust_root(layout, 2, envelope)  # The same bytes again: nothing to do.
    with pytest.raises(FailedPrecondition, match="another trust root version 2"):
        store_trust_root(layout, 2, envelope.replace(b'"sig"', b'"sig" '))
    assert layout.trust_root(2).read_bytes() == envelope
    assert not list(layout.trust_root(2).parent.glob(".*"))  # No scratch file left.

    holder = TrustRootHolder(pinned)
    seen: list[int] = []
    holder.on_change(lambda signed: seen.append(signed.root.version))
    assert same_verification_keys(holder.started_with, second.root)
    holder.swap(second)
    assert (holder.current.version, holder.started_with.version, seen) == (2, 1, [2])
    for changed in (
        replace(
            second.root, issuer_key=dsse.raw_public_key(Ed25519PrivateKey.generate().public_key())
        ),
        replace(
            second.root, log_key=dsse.raw_public_key(Ed25519PrivateKey.generate().public_key())
        ),
        replace(second.root, log_origin="elsewhere/log"),
        replace(second.root, ca_certificate_pem="-----BEGIN CERTIFICATE-----\nother"),
    ):
        assert not same_verification_keys(holder.started_with, changed)


async def test_an_expired_pin_walks_forward_to_the_current_version(tmp_path: Path) -> None:
    state, digest = await _registry(tmp_path)
    await rotate(state, CONFIG, LATER)
    layout = StateLayout(state)
    first, second = layout.trust_root(1).read_bytes(), layout.trust_root(2).read_bytes()
    after_a_year = NOW + timedelta(days=400)
    with pytest.raises(VerificationError, match="version 1 expired"):
        trust.load_trust_root(first, digest, after_a_year)
    # What a node does at start and at enrollment: version 1 by its pin, then the chain.
    assert trust.load_pinned_chain(first, digest, [second], after_a_year).root.version == 2
    with pytest.raises(VerificationError, match="version 1 expired"):
        trust.load_pinned_chain(first, digest, [], after_a_year)
    with pytest.raises(VerificationError, match="does not match the pinned"):
        trust.load_pinned_chain(second, digest, [], after_a_year)
