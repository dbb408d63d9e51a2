"""The registry state directory: init writes keys, CA and a self-consistent trust root."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provex import pki, trust
from provex.errors import FailedPrecondition
from provex.identity import SpiffeId, spiffe_id_of_certificate
from registry.config import RegistryConfig
from registry.state import StateLayout, create_state, latest_trust_root, load_keys

NOW = datetime(2026, 11, 25, tzinfo=UTC)
CONFIG = RegistryConfig(trust_domain="provex.test", log_origin="provex.test/log")


def test_init_writes_a_verifiable_state(tmp_path: Path) -> None:
    keys = create_state(tmp_path, CONFIG, NOW)
    layout = StateLayout(tmp_path)
    loaded = load_keys(tmp_path)
    assert loaded.issuer.public_key() == keys.issuer.public_key()
    assert loaded.ca_cert == keys.ca_cert
    for secret in (layout.issuer_key, layout.log_key, layout.ca_key, layout.server_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    version, envelope = latest_trust_root(tmp_path)
    assert version == 1
    signed = trust.load_trust_root(envelope, trust.digest_of(envelope), NOW)
    assert signed.root.trust_domain == "provex.test"
    assert signed.root.log_origin == "provex.test/log"
    ca = pki.load_cert_pem(signed.root.ca_certificate_pem.encode())
    server = pki.load_cert_pem(layout.server_cert.read_bytes())
    pki.verify_chain(server, ca, NOW)
    assert spiffe_id_of_certificate(server, "provex.test") == SpiffeId.registry("provex.test")


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    create_state(tmp_path, CONFIG, NOW)
    with pytest.raises(FailedPrecondition, match="refusing to overwrite"):
        create_state(tmp_path, CONFIG, NOW)


def test_loading_an_empty_directory_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="provex-registry init"):
        load_keys(tmp_path)
