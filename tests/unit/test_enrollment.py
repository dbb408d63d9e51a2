"""Enrollment, the node directory, members and node-aware authorization, without gRPC.

A real registry state (``initialize``) with a real database, sequencer and
publisher; the logic modules are called directly with explicit times.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from provex import bundle, pki, trust
from provex import envelope as dsse
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    Unauthenticated,
)
from provex.identity import SpiffeId, spiffe_id_of_certificate
from provex.ids import CreditCode
from provex.invitation import Invitation, parse_invitation
from provex.v1 import common_pb2, registry_pb2
from registry.authz import Caller, Role
from registry.config import RegistryConfig
from registry.db import Database
from registry.enrollment import Enrolled, NodeBook, create_invitation
from registry.members import MemberBook
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.services.common import Authorizer
from registry.setup import initialize
from registry.state import RegistryKeys, StateLayout, load_keys
from registry.transparency import LogReader, Sequencer

TD = "provex.test"
CONFIG = RegistryConfig(trust_domain=TD, log_origin="provex.test/log", max_batch_wait_ms=0)


@dataclass
class Env:
    """A registry's logic parts over a real state directory."""

    nodes: NodeBook
    members: MemberBook
    authorizer: Authorizer
    writer: Database
    keys: RegistryKeys
    root: trust.TrustRoot
    digest: str
    now: datetime


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    now = datetime.now(UTC)
    result = await initialize(tmp_path, CONFIG, now)
    keys = load_keys(tmp_path)
    layout = StateLayout(tmp_path)
    writer = await Database.open(layout.database, migrations=MIGRATIONS)
    reader = await Database.open(layout.database, readonly=True, migrations=MIGRATIONS)
    sequencer = Sequencer(writer, keys.log_signer(CONFIG.log_origin), CONFIG.log_origin)
    await sequencer.start()
    publisher = Publisher(sequencer, LogReader(reader), keys.issuer)
    envelope = (tmp_path / "trust" / "root-1.json").read_bytes()
    root = trust.load_trust_root(envelope, result.trust_root_digest, now).root
    authorizer = Authorizer(reader, TD)
    yield Env(
        NodeBook(CONFIG, keys, writer, reader, publisher, on_node_change=authorizer.node_changed),
        MemberBook(writer, reader),
        authorizer,
        writer,
        keys,
        root,
        result.trust_root_digest,
        now,
    )
    await sequencer.stop()
    await reader.close()
    await writer.close()


@dataclass
class NodeKeys:
    """What a node makes before it enrolls."""

    tls_key: ec.EllipticCurvePrivateKey
    signing_key: Ed25519PrivateKey

    def csr_pem(self, node_id: str | None) -> str:
        if node_id is None:  # a CSR without a SAN: the issuer decides the name
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
                .sign(self.tls_key, hashes.SHA256())
            )
        else:
            csr = pki.make_csr(self.tls_key, SpiffeId.node(TD, node_id))
        return pki.csr_to_pem(csr).decode()

    @property
    def raw_signing_key(self) -> bytes:
        return dsse.raw_public_key(self.signing_key.public_key())


def node_keys() -> NodeKeys:
    return NodeKeys(pki.generate_tls_key(), Ed25519PrivateKey.generate())


async def invite(
    env: Env, node_id: str = "gd-gzde", region: str = "440100", hours: float = 1
) -> Invitation:
    return await env.nodes.create_invitation(
        node_id,
        region,
        f"Exchange {node_id}",
        env.now + timedelta(hours=hours),
        created_by=f"spiffe://{TD}/admin/alice",
        now=env.now,
    )


async def enroll(
    env: Env, node_id: str = "gd-gzde", region: str = "440100"
) -> tuple[Enrolled, NodeKeys]:
    keys = node_keys()
    invitation = await invite(env, node_id, region)
    enrolled = await env.nodes.enroll(
        invitation.to_text(), keys.csr_pem(node_id), keys.raw_signing_key, "10.0.0.1:7500", env.now
    )
    return enrolled, keys


# ---------------------------------------------------------------- invitations


async def test_invitation_carries_the_pinned_digest_and_stores_only_a_hash(env: Env) -> None:
    invitation = await invite(env)
    parsed = parse_invitation(invitation.to_text())
    assert parsed.trust_root_digest == env.digest
    assert parsed.trust_domain == TD
    assert parsed.registry_address == CONFIG.public_listen

    def row(conn: sqlite3.Connection) -> tuple[bytes, str]:
        found = conn.execute(
            "SELECT secret_sha256, created_by FROM invitations WHERE invitation_id = ?",
            (invitation.invitation_id,),
        ).fetchone()
        return bytes(found[0]), str(found[1])

    stored, created_by = await env.writer.run(row)
    assert stored == invitation.secret_sha256
    assert invitation.secret not in stored
    assert created_by.endswith("/admin/alice")


async def test_invitations_need_only_the_database(env: Env) -> None:
    """What a CLI does next to a running server: open the database, invite, close."""
    db = await Database.open(env.writer.path, migrations=MIGRATIONS)
    try:
        invitation = await create_invitation(
            db,
            CONFIG,
            node_id="gd-cli",
            region_code="440100",
            display_name="From the CLI",
            expires_at=None,
            created_by="cli",
            now=env.now,
        )
    finally:
        await db.close()
    keys = node_keys()
    await env.nodes.enroll(
        invitation.to_text(), keys.csr_pem("gd-cli"), keys.raw_signing_key, "h:1", env.now
    )


async def test_default_expiry_comes_from_the_config(env: Env) -> None:
    invitation = await env.nodes.create_invitation(
        "gd-szde", "440300", "Shenzhen", None, created_by="admin", now=env.now
    )
    assert invitation.expires_at == env.now + timedelta(hours=CONFIG.invitation_validity_hours)


BAD_INVITATIONS = {
    "node id": (dict(node_id="GD_1"), "node_id"),
    "empty node id": (dict(node_id=""), "node_id is required"),
    "unknown region": (dict(region_code="449999"), "region_code"),
    "malformed region": (dict(region_code="44"), "region_code"),
    "not mainland": (dict(region_code="810000"), "not a mainland region"),
    "empty name": (dict(display_name="  "), "display_name is required"),
    "long name": (dict(display_name="x" * 201), "display_name"),
    "past expiry": (dict(expires_in=timedelta(seconds=-1)), "not in the future"),
    "far expiry": (dict(expires_in=timedelta(days=31)), "30 days"),
}


@pytest.mark.parametrize("changes, message", BAD_INVITATIONS.values(), ids=BAD_INVITATIONS.keys())
async def test_malformed_invitation_requests_name_the_field(
    env: Env, changes: dict[str, object], message: str
) -> None:
    args: dict[str, object] = dict(
        node_id="gd-gzde", region_code="440100", display_name="Guangzhou"
    )
    expires_in = changes.pop("expires_in", timedelta(hours=1))
    args.update(changes)
    with pytest.raises(InvalidArgument, match=message):
        await env.nodes.create_invitation(
            str(args["node_id"]),
            str(args["region_code"]),
            str(args["display_name"]),
            env.now + expires_in,  # type: ignore[operator]
            created_by="admin",
            now=env.now,
        )


async def test_an_enrolled_node_cannot_be_invited_again(env: Env) -> None:
    await enroll(env)
    with pytest.raises(AlreadyExists, match="gd-gzde is already enrolled"):
        await invite(env)


# ---------------------------------------------------------------- enrollment


async def test_enrollment_issues_a_certificate_and_a_verifiable_statement(env: Env) -> None:
    enrolled, keys = await enroll(env)
    certificate = pki.load_cert_pem(enrolled.certificate_pem.encode())
    assert spiffe_id_of_certificate(certificate, TD) == SpiffeId.node(TD, "gd-gzde")
    assert certificate.public_key() == keys.tls_key.public_key()
    ca = pki.load_cert_pem(enrolled.ca_certificate_pem.encode())
    pki.verify_chain(certificate, ca, env.now)
    assert trust.digest_of(enrolled.trust_root) == env.digest
    verified = bundle.verify_bundle(enrolled.enrollment, env.root, registry_pb2.EnrollmentStatement)
    statement = verified.document
    assert statement.node_id == "gd-gzde"
    assert statement.region_code == "440100"
    assert statement.action == registry_pb2.ENROLLMENT_ACTION_ENROLLED
    assert statement.signing_key == keys.raw_signing_key
    assert statement.certificate_fingerprint == pki.certificate_fingerprint(certificate)
    assert statement.peer_endpoint == "10.0.0.1:7500"
    node = await env.nodes.get_node("gd-gzde")
    assert node.status == "active"
    assert node.log_index == enrolled.enrollment.log_index
    assert node.to_proto().status == common_pb2.STATUS_ACTIVE


async def test_a_csr_without_a_san_gets_the_invited_identity(env: Env) -> None:
    keys = node_keys()
    invitation = await invite(env)
    enrolled = await env.nodes.enroll(
        invitation.to_text(), keys.csr_pem(None), keys.raw_signing_key, "node.example:7500", env.now
    )
    certificate = pki.load_cert_pem(enrolled.certificate_pem.encode())
    assert spiffe_id_of_certificate(certificate, TD).name == "gd-gzde"


def forged(invitation: Invitation) -> Invitation:
    return replace(invitation, secret=bytes(32))


def other_node(invitation: Invitation) -> Invitation:
    return replace(invitation, node_id="gd-szde")


def other_domain(invitation: Invitation) -> Invitation:
    return replace(invitation, trust_domain="elsewhere.test")


def unknown_id(invitation: Invitation) -> Invitation:
    return replace(invitation, invitation_id="inv-ffffffffffffffff")


REFUSED_ENROLLMENTS = {
    "forged secret": (forged, Unauthenticated, "not issued by this registry or was altered"),
    "tampered node id": (other_node, Unauthenticated, "altered"),
    "unknown invitation": (unknown_id, Unauthenticated, "not issued by this registry"),
    "other trust domain": (other_domain, PermissionDenied, "trust domain 'elsewhere.test'"),
}


@pytest.mark.parametrize(
    "tamper, error, message", REFUSED_ENROLLMENTS.values(), ids=REFUSED_ENROLLMENTS.keys()
)
async def test_forged_invitations_are_refused(
    env: Env, tamper: object, error: type[ProvexError], message: str
) -> None:
    keys = node_keys()
    invitation = tamper(await invite(env))  # type: ignore[operator]
    with pytest.raises(error, match=message):
        await env.nodes.enroll(
            invitation.to_text(),
            keys.csr_pem(invitation.node_id),
            keys.raw_signing_key,
            "h:1",
            env.now,
        )


async def test_an_invitation_works_once(env: Env) -> None:
    keys = node_keys()
    invitation = await invite(env)
    args = (invitation.to_text(), keys.csr_pem("gd-gzde"), keys.raw_signing_key, "h:1")
    await env.nodes.enroll(*args, env.now)
    with pytest.raises(PermissionDenied, match="already used"):
        await env.nodes.enroll(*args, env.now)


async def test_concurrent_enrollments_with_one_invitation_let_exactly_one_through(
    env: Env,
) -> None:
    invitation = await invite(env)
    attempts = [node_keys() for _ in range(4)]
    results = await asyncio.gather(
        *(
            env.nodes.enroll(
                invitation.to_text(), k.csr_pem("gd-gzde"), k.raw_signing_key, "h:1", env.now
            )
            for k in attempts
        ),
        return_exceptions=True,
    )
    successes = [r for r in results if isinstance(r, Enrolled)]
    failures = [r for r in results if not isinstance(r, Enrolled)]
    assert len(successes) == 1
    assert all(isinstance(f, PermissionDenied) for f in failures), failures


async def test_an_expired_invitation_is_refused(env: Env) -> None:
    keys = node_keys()
    invitation = await invite(env, hours=1)
    with pytest.raises(PermissionDenied, match="expired at"):
        await env.nodes.enroll(
            invitation.to_text(),
            keys.csr_pem("gd-gzde"),
            keys.raw_signing_key,
            "h:1",
            env.now + timedelta(hours=2),
        )


async def test_a_csr_for_another_node_is_refused_naming_both(env: Env) -> None:
    keys = node_keys()
    invitation = await invite(env)
    with pytest.raises(PermissionDenied) as raised:
        await env.nodes.enroll(
            invitation.to_text(), keys.csr_pem("sh-sde"), keys.raw_signing_key, "h:1", env.now
        )
    assert "node/sh-sde" in str(raised.value)
    assert "node/gd-gzde" in str(raised.value)
    # The refused attempt did not use the invitation up.
    await env.nodes.enroll(
        invitation.to_text(), keys.csr_pem("gd-gzde"), keys.raw_signing_key, "h:1", env.now
    )


MALFORMED_ENROLLMENTS = {
    "garbage invitation": (dict(invitation="hello"), "invitation"),
    "garbage csr": (dict(csr_pem="-----BEGIN nothing"), "csr_pem"),
    "empty csr": (dict(csr_pem=""), "csr_pem is required"),
    "short signing key": (dict(signing_key=b"\x01" * 31), "signing_key"),
    "empty endpoint": (dict(peer_endpoint=""), "peer_endpoint is required"),
    "endpoint without port": (dict(peer_endpoint="node.example"), "peer_endpoint"),
    "endpoint with bad port": (dict(peer_endpoint="node.example:99999"), "peer_endpoint"),
    "endpoint with spaces": (dict(peer_endpoint="no de:1"), "peer_endpoint"),
}


@pytest.mark.parametrize(
    "changes, field", MALFORMED_ENROLLMENTS.values(), ids=MALFORMED_ENROLLMENTS.keys()
)
async def test_malformed_enrollments_name_the_field(
    env: Env, changes: dict[str, object], field: str
) -> None:
    keys = node_keys()
    invitation = await invite(env)
    args: dict[str, object] = dict(
        invitation=invitation.to_text(),
        csr_pem=keys.csr_pem("gd-gzde"),
        signing_key=keys.raw_signing_key,
        peer_endpoint="[::1]:7500",
    )
    args.update(changes)
    with pytest.raises(InvalidArgument, match=field):
        await env.nodes.enroll(
            str(args["invitation"]),
            str(args["csr_pem"]),
            args["signing_key"],  # type: ignore[arg-type]
            str(args["peer_endpoint"]),
            env.now,
        )


# ---------------------------------------------------------------- renew, revoke, directory


async def test_renewal_logs_a_new_fingerprint(env: Env) -> None:
    enrolled, keys = await enroll(env)
    renewed = await env.nodes.renew("gd-gzde", keys.csr_pem("gd-gzde"), env.now)
    statement = bundle.verify_bundle(
        renewed.enrollment, env.root, registry_pb2.EnrollmentStatement
    ).document
    assert statement.action == registry_pb2.ENROLLMENT_ACTION_RENEWED
    assert statement.signing_key == keys.raw_signing_key
    new = pki.load_cert_pem(renewed.certificate_pem.encode())
    assert statement.certificate_fingerprint == pki.certificate_fingerprint(new)
    assert renewed.certificate_pem != enrolled.certificate_pem
    node = await env.nodes.get_node("gd-gzde")
    assert node.certificate_fingerprint == statement.certificate_fingerprint
    with pytest.raises(PermissionDenied, match="node/sh-sde"):
        await env.nodes.renew("gd-gzde", keys.csr_pem("sh-sde"), env.now)


async def test_revocation_is_logged_and_final_until_reinvited(env: Env) -> None:
    _, keys = await enroll(env)
    statement = await env.nodes.revoke("gd-gzde", "compromised key", "admin", env.now)
    document = bundle.verify_bundle(statement, env.root, registry_pb2.EnrollmentStatement).document
    assert document.action == registry_pb2.ENROLLMENT_ACTION_REVOKED
    assert (await env.nodes.get_node("gd-gzde")).status == "revoked"
    with pytest.raises(PermissionDenied, match="node gd-gzde is revoked"):
        await env.nodes.renew("gd-gzde", keys.csr_pem("gd-gzde"), env.now)
    with pytest.raises(PermissionDenied, match="node gd-gzde is revoked"):
        await env.nodes.update_endpoint("gd-gzde", "h:2")
    with pytest.raises(FailedPrecondition, match="already revoked"):
        await env.nodes.revoke("gd-gzde", "", "admin", env.now)
    with pytest.raises(NotFound, match="node nobody is not enrolled"):
        await env.nodes.revoke("nobody", "", "admin", env.now)
    # A revoked node may be invited and enrolled again, with new keys.
    enrolled, _ = await enroll(env)
    assert (await env.nodes.get_node("gd-gzde")).status == "active"
    assert enrolled.enrollment.log_index > statement.log_index


async def test_directory_filters_and_endpoint_updates(env: Env) -> None:
    await enroll(env, "gd-gzde")
    await enroll(env, "gd-szde")
    await enroll(env, "sh-sde", "310000")
    await env.nodes.revoke("gd-szde", "", "admin", env.now)
    names = [n.node_id for n in await env.nodes.list_nodes("", include_revoked=False)]
    assert names == ["gd-gzde", "sh-sde"]
    names = [n.node_id for n in await env.nodes.list_nodes("44", include_revoked=True)]
    assert names == ["gd-gzde", "gd-szde"]
    with pytest.raises(InvalidArgument, match="region_prefix"):
        await env.nodes.list_nodes("4%", include_revoked=True)
    node = await env.nodes.update_endpoint("sh-sde", "sh.example:443")
    assert node.peer_endpoint == "sh.example:443"
    with pytest.raises(NotFound):
        await env.nodes.get_node("gd-nowhere")
    with pytest.raises(InvalidArgument, match="node_id"):
        await env.nodes.get_node("Bad!")


# ---------------------------------------------------------------- authorization of nodes


class FakeContext:
    """The auth context of a TLS peer presenting ``certificate_pem``."""

    def __init__(self, certificate_pem: str) -> None:
        self._properties = {"x509_pem_cert": [certificate_pem.encode()]}

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._properties


async def test_authorizer_refuses_revoked_unenrolled_and_replaced_certificates(env: Env) -> None:
    enrolled, keys = await enroll(env)
    caller = await env.authorizer.caller(FakeContext(enrolled.certificate_pem))  # type: ignore[arg-type]
    assert caller.role is Role.NODE
    renewed = await env.nodes.renew("gd-gzde", keys.csr_pem("gd-gzde"), env.now)
    with pytest.raises(PermissionDenied, match="no longer current"):
        await env.authorizer.caller(FakeContext(enrolled.certificate_pem))  # type: ignore[arg-type]
    await env.authorizer.caller(FakeContext(renewed.certificate_pem))  # type: ignore[arg-type]
    await env.nodes.revoke("gd-gzde", "", "admin", env.now)
    with pytest.raises(PermissionDenied, match="node gd-gzde is revoked"):
        await env.authorizer.caller(FakeContext(renewed.certificate_pem))  # type: ignore[arg-type]
    stranger = pki.issue_certificate(
        env.keys.ca_key,
        env.keys.ca_cert,
        pki.make_csr(keys.tls_key, SpiffeId.node(TD, "gd-ghost")),
        SpiffeId.node(TD, "gd-ghost"),
        now=env.now,
        validity=timedelta(days=1),
    )
    with pytest.raises(PermissionDenied, match="node gd-ghost is not enrolled"):
        await env.authorizer.caller(FakeContext(pki.cert_to_pem(stranger).decode()))  # type: ignore[arg-type]


# ---------------------------------------------------------------- members


def credit_code(body: str, region: str = "440100") -> str:
    return CreditCode.from_parts("9", "1", region, body).code


def member(code: str, **changes: object) -> registry_pb2.Member:
    message = registry_pb2.Member(credit_code=code, name="Acme Data Co.", region_code="440100")
    for name, value in changes.items():
        if name == "security_officer":
            message.security_officer.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(message, name, value)
    return message


GZ = Caller(Role.NODE, SpiffeId.node(TD, "gd-gzde"))
SZ = Caller(Role.NODE, SpiffeId.node(TD, "gd-szde"))
AUDITOR = Caller(Role.AUDITOR, SpiffeId.admin(TD, "audrey"))


async def test_members_report_and_read(env: Env) -> None:
    await enroll(env, "gd-gzde")
    await enroll(env, "gd-szde")
    code = credit_code("MA5ABC01")
    officer = registry_pb2.SecurityOfficer(name="Li Wei", title="CSO", email="li@acme.example")
    reported = await env.members.report("gd-gzde", member(code, security_officer=officer), env.now)
    assert reported.node_id == "gd-gzde"
    assert reported.country == "CN"
    wire = reported.to_proto()
    assert wire.security_officer.name == "Li Wei"
    assert wire.status == common_pb2.STATUS_ACTIVE
    # An update keeps the owner; lower case is canonicalized.
    updated = await env.members.report("gd-gzde", member(code.lower(), name="Acme 2"), env.now)
    assert (updated.credit_code, updated.name) == (code, "Acme 2")
    assert (await env.members.get(GZ, code)).name == "Acme 2"
    assert (await env.members.get(AUDITOR, code)).node_id == "gd-gzde"
    with pytest.raises(PermissionDenied, match="belongs to another node"):
        await env.members.get(SZ, code)
    with pytest.raises(PermissionDenied, match=f"member {code} belongs to node gd-gzde"):
        await env.members.report("gd-szde", member(code), env.now)
    with pytest.raises(PermissionDenied, match="not members of node gd-gzde"):
        await env.members.report("gd-szde", member(code, node_id="gd-gzde"), env.now)
    with pytest.raises(NotFound):
        await env.members.get(AUDITOR, credit_code("MA5ABC02"))


MALFORMED_MEMBERS = {
    "bad credit code": (dict(credit_code="91440100MA5ABC01XX"), "member.credit_code"),
    "empty credit code": (dict(credit_code=""), "member.credit_code is required"),
    "no name": (dict(name=""), "member.name is required"),
    "bad region": (dict(region_code="999999"), "member.region_code"),
    "no region": (dict(region_code=""), "member.region_code is required"),
    "bad country": (dict(country="China"), "member.country"),
    "officer without name": (
        dict(security_officer=registry_pb2.SecurityOfficer(phone="123")),
        "member.security_officer.name",
    ),
    "officer unreachable": (
        dict(security_officer=registry_pb2.SecurityOfficer(name="Li")),
        "phone or an email",
    ),
}


@pytest.mark.parametrize("changes, field", MALFORMED_MEMBERS.values(), ids=MALFORMED_MEMBERS.keys())
async def test_malformed_members_name_the_field(
    env: Env, changes: dict[str, object], field: str
) -> None:
    await enroll(env)
    with pytest.raises(InvalidArgument, match=field):
        await env.members.report("gd-gzde", member(credit_code("MA5ABC01"), **changes), env.now)


async def test_member_lists_page_and_filter(env: Env) -> None:
    await enroll(env, "gd-gzde")
    await enroll(env, "sh-sde", "310000")
    gz = [credit_code(f"MA5AB{n:03d}") for n in range(7)]
    for code in gz:
        await env.members.report("gd-gzde", member(code), env.now)
    sh = credit_code("MA5XH001", "310000")
    await env.members.report("sh-sde", member(sh, region_code="310000"), env.now)
    seen: list[str] = []
    token = ""
    while True:
        page, token = await env.members.list(GZ, "", "", 3, token)
        assert len(page) <= 3
        seen += [m.credit_code for m in page]
        if not token:
            break
    assert seen == sorted(gz)
    everyone, _ = await env.members.list(AUDITOR, "", "", 0, "")
    assert len(everyone) == 8
    shanghai, _ = await env.members.list(AUDITOR, "", "31", 0, "")
    assert [m.credit_code for m in shanghai] == [sh]
    only_sh, _ = await env.members.list(AUDITOR, "sh-sde", "", 0, "")
    assert [m.credit_code for m in only_sh] == [sh]
    with pytest.raises(PermissionDenied, match="only its own members"):
        await env.members.list(GZ, "sh-sde", "", 0, "")
    with pytest.raises(InvalidArgument, match="page_size"):
        await env.members.list(AUDITOR, "", "", 501, "")
    with pytest.raises(InvalidArgument, match="page_token"):
        await env.members.list(AUDITOR, "", "", 10, "not-a-token")
