"""A node's state directory: ``init`` makes keys and the operator PKI once, refuses the rest."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.config import NodeConfig, load_config
from node.state import StateLayout, init_state, read_identity, require_enrolled
from provex import pki
from provex.errors import FailedPrecondition, InvalidArgument
from provex.identity import PeerKind, spiffe_id_of_certificate

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_init_writes_identity_keys_and_operator_certificates(tmp_path: Path) -> None:
    identity = init_state(tmp_path, "gd-gzde", "440100", NodeConfig(), NOW)
    assert read_identity(tmp_path) == identity
    assert not identity.enrolled
    layout = StateLayout(tmp_path)
    for secret in (layout.signing_key, layout.tls_key, layout.operator_ca_key, layout.operator_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    ca = pki.load_cert_pem(layout.operator_ca.read_bytes())
    client = pki.load_cert_pem(layout.operator_cert.read_bytes())
    pki.verify_chain(client, ca, NOW)
    operator = spiffe_id_of_certificate(client, identity.operator_trust_domain)
    assert operator.kind is PeerKind.ADMIN
    server = pki.load_cert_pem(layout.operator_server_cert.read_bytes())
    pki.verify_chain(server, ca, NOW)
    assert load_config(tmp_path, environ={}) == NodeConfig()


def test_init_never_overwrites_a_node(tmp_path: Path) -> None:
    init_state(tmp_path, "gd-gzde", "440100", NodeConfig(), NOW)
    key = StateLayout(tmp_path).signing_key.read_bytes()
    with pytest.raises(FailedPrecondition, match="already holds a node state"):
        init_state(tmp_path, "gd-szde", "440300", NodeConfig(), NOW)
    assert StateLayout(tmp_path).signing_key.read_bytes() == key


REFUSALS = {
    "node id with capitals and spaces": ("Not A Node", "440100", InvalidArgument),
    "unknown region": ("gd-gzde", "999999", InvalidArgument),
    "malformed region": ("gd-gzde", "44", InvalidArgument),
}


@pytest.mark.parametrize("node_id, region, error", REFUSALS.values(), ids=REFUSALS.keys())
def test_init_refuses_bad_identities(
    tmp_path: Path, node_id: str, region: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        init_state(tmp_path, node_id, region, NodeConfig(), NOW)
    assert not StateLayout(tmp_path).identity.exists()


def test_serving_needs_enrollment_and_init(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="provex-node init"):
        read_identity(tmp_path)
    init_state(tmp_path, "gd-gzde", "440100", NodeConfig(), NOW)
    with pytest.raises(FailedPrecondition, match="provex-node enroll"):
        require_enrolled(tmp_path)


def test_settings_come_from_file_then_environment(tmp_path: Path) -> None:
    init_state(tmp_path, "gd-gzde", "440100", NodeConfig(peer_listen="0.0.0.0:7600"), NOW)
    config = load_config(tmp_path, environ={"PROVEX_NODE_PEER_DEADLINE": "0.5"})
    assert config.peer_listen == "0.0.0.0:7600"
    assert config.peer_deadline == 0.5
    assert config.advertised_peer_address == "0.0.0.0:7600"
