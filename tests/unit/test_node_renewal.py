"""node.renewal without a network: when a certificate is due, what a renewed one must be."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.renewal import check_certificate, install_certificate, renewal_due
from node.state import Identity, StateLayout
from provex import pki
from provex.errors import VerificationError
from provex.identity import SpiffeId, node_server_name

NOW = datetime(2026, 11, 26, tzinfo=UTC)
TD = "provex.local"
IDENTITY = Identity("gd-gzde", "440100", TD, "127.0.0.1:7400", "127.0.0.1:7401", "digest")
CA_KEY, CA = pki.create_ca(TD, NOW - timedelta(days=1), timedelta(days=3650))
KEY = pki.generate_tls_key()


def issue(
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    node_id: str = "gd-gzde",
    dns: str | None = None,
    days: float = 90,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] = (CA_KEY, CA),
) -> x509.Certificate:
    spiffe_id = SpiffeId.node(TD, node_id)
    return pki.issue_certificate(
        ca[0],
        ca[1],
        pki.make_csr(key, spiffe_id),
        spiffe_id,
        now=NOW,
        validity=timedelta(days=days),
        dns_names=[dns if dns is not None else node_server_name(TD, node_id)],
    )


DUE = {
    "90 days, default: a third of the lifetime": (90, 0.0, 1 / 3),
    "90 days, 10 days before": (90, 10.0, timedelta(days=10)),
    "1 day, default: a third": (1, 0.0, 1 / 3),
    "1 day, almost all of it (the tests' setting)": (1, 0.9999, timedelta(days=0.9999)),
}


@pytest.mark.parametrize("days, before, remaining", DUE.values(), ids=DUE.keys())
def test_renewal_is_due(days: float, before: float, remaining: float | timedelta) -> None:
    certificate = issue(days=days)
    expires = certificate.not_valid_after_utc
    lifetime = expires - certificate.not_valid_before_utc
    left = remaining if isinstance(remaining, timedelta) else lifetime * remaining
    assert renewal_due(certificate, before) == expires - left
    assert lifetime >= timedelta(days=days)


OTHER_CA = pki.create_ca(TD, NOW - timedelta(days=1), timedelta(days=3650))
REFUSED = {
    "another node's id": (lambda: issue(node_id="sh-sde", dns=node_server_name(TD, "gd-gzde")),
                          "is for spiffe://provex.local/node/sh-sde"),
    "no node DNS name": (lambda: issue(dns="localhost"), "does not name gd-gzde.node"),
    "another key": (lambda: issue(key=pki.generate_tls_key()), "not for this node's TLS key"),
    "another CA": (lambda: issue(ca=OTHER_CA), "not signed by the federation CA"),
}  # fmt: skip


@pytest.mark.parametrize("make, message", REFUSED.values(), ids=REFUSED.keys())
def test_a_wrong_certificate_is_refused(make: Callable[[], x509.Certificate], message: str) -> None:
    certificate = make()
    with pytest.raises(VerificationError, match=message):
        check_certificate(certificate, IDENTITY, pki.cert_to_pem(CA), KEY, NOW)


def test_a_right_certificate_passes_and_is_installed_with_a_backup(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    layout.tls_cert.parent.mkdir(parents=True)
    old = pki.cert_to_pem(issue())
    layout.tls_cert.write_bytes(old)
    new_certificate = issue()
    check_certificate(new_certificate, IDENTITY, pki.cert_to_pem(CA), KEY, NOW)
    new = pki.cert_to_pem(new_certificate)
    previous = install_certificate(layout, new)
    assert layout.tls_cert.read_bytes() == new
    assert previous.read_bytes() == old
    assert previous.name == "node.pem.previous"
    assert sorted(p.name for p in layout.tls_cert.parent.iterdir()) == [
        "node.pem",
        "node.pem.previous",
    ]
