"""``provex-node enroll``: join the federation with an invitation, without trust on first use.

The operator gives the invitation text (from a registry admin), the
registry's public and federation addresses and the federation CA file. The
CA file is not trusted by itself: the node fetches the trust root over TLS
with it, requires that the trust root's digest is the one *inside the
invitation*, and that the CA the trust root names is the CA it dialed with.
Only then does it send its CSR (its own P-256 key; the SPIFFE id
``spiffe://<trust-domain>/node/<node-id>``) and its Ed25519 signing key, and
it verifies the logged enrollment statement it gets back against the pinned
trust root before writing anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc

from node.state import (
    Identity,
    StateLayout,
    load_signing_key,
    read_identity,
    write_identity,
)
from provex import bundle, pki, trust
from provex import envelope as dsse
from provex.errors import FailedPrecondition, InvalidArgument, VerificationError
from provex.identity import SpiffeId, channel_credentials
from provex.invitation import parse_invitation
from provex.keyfiles import write_public
from provex.rpc import raise_for_rpc_error
from provex.v1 import registry_pb2, registry_pb2_grpc


@dataclass(frozen=True)
class Enrolled:
    """What enrollment established."""

    identity: Identity
    certificate: Path
    enrollment_log_index: int


def _same_certificate(a_pem: bytes, b_pem: bytes) -> bool:
    return pki.load_cert_pem(a_pem) == pki.load_cert_pem(b_pem)


async def enroll(
    state_dir: Path,
    invitation_text: str,
    *,
    registry_public: str,
    registry_federation: str,
    registry_ca_pem: bytes,
    peer_endpoint: str,
    now: datetime,
    deadline: float = 10.0,
) -> Enrolled:
    """Enroll the node of ``state_dir`` (see the module docstring)."""
    layout = StateLayout(state_dir)
    identity = read_identity(state_dir)
    if identity.enrolled:
        raise FailedPrecondition(f"node {identity.node_id} is enrolled already")
    invitation = parse_invitation(invitation_text)
    if invitation.node_id != identity.node_id:
        raise InvalidArgument(
            f"invitation: it is for node {invitation.node_id}, this node is {identity.node_id}"
        )
    if invitation.region_code != identity.region_code:
        raise InvalidArgument(
            f"invitation: it is for region {invitation.region_code}, this node was initialized "
            f"for {identity.region_code}"
        )
    public = registry_public or invitation.registry_address
    if not public:
        raise InvalidArgument("the registry's public address is needed (--registry)")
    if not registry_federation:
        raise InvalidArgument("the registry's federation address is needed")
    credentials = channel_credentials(registry_ca_pem)
    tls_key = pki.load_key_pem(layout.tls_key.read_bytes())
    signing_key = load_signing_key(state_dir)
    spiffe_id = SpiffeId.node(invitation.trust_domain, identity.node_id)
    try:
        async with grpc.aio.secure_channel(public, credentials) as channel:
            trust_service = registry_pb2_grpc.TrustServiceStub(channel)
            first = await trust_service.GetTrustRoot(
                registry_pb2.GetTrustRootRequest(version=1), timeout=deadline
            )
            envelopes = [first.envelope]
            for version in range(2, first.latest_version + 1):
                answer = await trust_service.GetTrustRoot(
                    registry_pb2.GetTrustRootRequest(version=version), timeout=deadline
                )
                envelopes.append(answer.envelope)
            # Pinned version 1 (it may have expired), then every rotation to the current one.
            current = trust.load_pinned_chain(
                first.envelope, invitation.trust_root_digest, envelopes[1:], now
            )
            if not _same_certificate(current.root.ca_certificate_pem.encode(), registry_ca_pem):
                raise VerificationError(
                    "the CA file given is not the federation CA of the invitation's trust root"
                )
            response = await registry_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
                registry_pb2.EnrollRequest(
                    invitation=invitation_text,
                    csr_pem=pki.csr_to_pem(pki.make_csr(tls_key, spiffe_id)).decode("ascii"),
                    signing_key=dsse.raw_public_key(signing_key.public_key()),
                    peer_endpoint=peer_endpoint,
                ),
                timeout=deadline,
            )
    except grpc.aio.AioRpcError as error:
        raise_for_rpc_error(error, f"registry at {public}")
    statement = bundle.verify_bundle(
        response.enrollment, current.root, registry_pb2.EnrollmentStatement
    ).document
    certificate = pki.load_cert_pem(response.certificate_pem.encode())
    pki.verify_chain(certificate, pki.load_cert_pem(registry_ca_pem), now)
    if statement.node_id != identity.node_id or statement.certificate_fingerprint != (
        pki.certificate_fingerprint(certificate)
    ):
        raise VerificationError("the enrollment statement does not match the issued certificate")
    for version, envelope in enumerate(envelopes, start=1):
        if not layout.trust_root(version).exists():
            write_public(layout.trust_root(version), envelope)
    write_public(layout.federation_ca, registry_ca_pem)
    write_public(layout.tls_cert, response.certificate_pem.encode())
    enrolled = Identity(
        node_id=identity.node_id,
        region_code=identity.region_code,
        trust_domain=invitation.trust_domain,
        registry_public=public,
        registry_federation=registry_federation,
        trust_root_digest=invitation.trust_root_digest,
    )
    write_identity(state_dir, enrolled)
    return Enrolled(enrolled, layout.tls_cert, response.enrollment.log_index)
