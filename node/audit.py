"""A province audits the registry's transparency log (``provex-node audit``).

The node downloads every entry up to the latest checkpoint it verified (the
one it never rolls back from), in pages, and checks on its own, with nothing
but its trust root:

- every entry is a DSSE envelope of a known document type, signed by the
  registry's keys for that type (root keys for trust roots, the issuer key
  for everything else), and its payload decodes;
- the RFC 6962 tree over the entries has exactly the checkpoint's root hash.

A registry that edited, dropped, reordered or inserted any entry below that
checkpoint fails the second check; one that logged an unsigned or foreign
document fails the first. The report counts the entries by document type (how
many certificates, status statements, trade records, permits, ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from node.config import NodeConfig
from node.registry_link import RegistryLink
from node.schema import MIGRATIONS
from node.state import StateLayout, load_trust_root_chain, require_enrolled
from provex import bundle as bundles
from provex import documents, merkle
from provex import envelope as dsse
from provex.checkpoint import Checkpoint, open_checkpoint
from provex.errors import FailedPrecondition, VerificationError
from provex.identity import TlsMaterial
from provex.rpc import error_for_rpc_error
from provex.storage import Database
from provex.trust import TrustRoot
from provex.v1 import registry_pb2, trust_pb2

if TYPE_CHECKING:
    from provex.v1.registry_pb2_grpc import LogServiceAsyncStub

PAGE_SIZE = 1000
"""Entries asked for per GetEntries call (the registry may answer fewer)."""
MAX_PROBLEMS = 20
"""Problems listed in a report; more are counted, not listed."""


@dataclass
class AuditReport:
    """What an audit found: the checkpoint audited, entries by type, problems."""

    tree_size: int
    root_hash: str
    computed_root: str = ""
    entries_by_type: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """True when every entry verified and the recomputed root equals the checkpoint's."""
        return self.problem_count == 0 and self.computed_root == self.root_hash

    def add_problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "computed_root": self.computed_root,
            "entries_by_type": dict(sorted(self.entries_by_type.items())),
            "problems": self.problems,
            "problem_count": self.problem_count,
        }


def _short_type(payload_type: str) -> str:
    """``dataset-certificate`` for ``application/vnd.provex.dataset-certificate+protobuf``."""
    return payload_type.removeprefix("application/vnd.provex.").removesuffix("+protobuf")


def check_entry(
    index: int,
    entry: bytes,
    trust_root: TrustRoot,
    report: AuditReport,
    trust_roots: Mapping[int, bytes] | None = None,
) -> None:
    """Verify one entry's signature and payload; count it or record the problem.

    ``trust_roots`` are the envelopes of the trust root versions the node
    verified as a chain (``trust/root-<n>.json``): a logged version must be
    exactly one of them (older versions may be signed by root keys the
    current version no longer lists); a newer one needs the current root keys.
    """
    try:
        envelope = dsse.Envelope.from_json(entry)
        message_class = documents.MESSAGE_TYPES.get(envelope.payload_type)
        if message_class is None:
            raise VerificationError(f"unknown document type {envelope.payload_type!r}")
        known = None
        if message_class is trust_pb2.TrustRoot:
            version = documents.decode_payload(envelope.payload, trust_pb2.TrustRoot).version
            known = (trust_roots or {}).get(version)
            if known is not None and known != entry:
                raise VerificationError(
                    f"trust root version {version} is not the one this node verified"
                )
        if known is None:
            keys, threshold = bundles.document_signers(trust_root, message_class)
            documents.open_document(envelope, message_class, keys, threshold)
    except (VerificationError, ValueError) as error:
        report.add_problem(f"entry {index}: {error}")
        return
    report.entries_by_type[_short_type(envelope.payload_type)] += 1


async def audit_log(
    log: LogServiceAsyncStub,
    trust_root: TrustRoot,
    checkpoint: Checkpoint,
    deadline: float,
    *,
    progress: Callable[[int, int], None] | None = None,
    trust_roots: Mapping[int, bytes] | None = None,
) -> AuditReport:
    """Fetch entries ``[0, checkpoint.size)`` and check them against ``checkpoint``."""
    report = AuditReport(tree_size=checkpoint.size, root_hash=checkpoint.root_hash.hex())
    compact = merkle.CompactRange()
    position = 0
    while position < checkpoint.size:
        end = min(position + PAGE_SIZE, checkpoint.size)
        try:
            answer = await log.GetEntries(
                registry_pb2.GetEntriesRequest(start=position, end=end), timeout=deadline
            )
        except grpc.aio.AioRpcError as error:
            raise error_for_rpc_error(error, "the registry (GetEntries)") from None
        if answer.start != position or not answer.entries:
            report.add_problem(
                f"the registry answered entries from {answer.start} ({len(answer.entries)} of "
                f"them) when asked for {position}..{end}; the audit stops there"
            )
            break
        for entry in answer.entries[: end - position]:
            check_entry(position, entry, trust_root, report, trust_roots)
            compact.append(merkle.leaf_hash(entry))
            position += 1
        if progress is not None:
            progress(position, checkpoint.size)
    if position == checkpoint.size:
        report.computed_root = compact.root().hex()
        if report.computed_root != report.root_hash:
            report.add_problem(
                f"the tree of the {position} entries has root {report.computed_root}, "
                f"not the checkpoint's {report.root_hash}: the registry's history changed"
            )
    return report


async def audit_state(
    state_dir: Path, config: NodeConfig, *, progress: Callable[[int, int], None] | None = None
) -> AuditReport:
    """Audit the registry's log up to the latest checkpoint the node in ``state_dir`` verified."""
    identity = require_enrolled(state_dir)
    layout = StateLayout(state_dir)
    root = load_trust_root_chain(layout, identity.trust_root_digest).root
    # The chain just verified: each logged version must be one of these files.
    trust_roots = {
        version: layout.trust_root(version).read_bytes() for version in range(1, root.version + 1)
    }
    database = await Database.open(layout.database, migrations=MIGRATIONS, readonly=True)
    try:
        row = await database.run(
            lambda conn: conn.execute(
                "SELECT note FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
        )
    finally:
        await database.close()
    if row is None:
        raise FailedPrecondition(
            "this node has verified no checkpoint of the registry's log yet: run "
            "`provex-node serve` until it has synced, then audit"
        )
    # Verified again here: the audit trusts the trust root, not the node's database.
    checkpoint = open_checkpoint(str(row[0]), root.log_verifier, origin=root.log_origin).checkpoint
    tls = TlsMaterial(
        layout.federation_ca.read_bytes(), layout.tls_cert.read_bytes(), layout.tls_key.read_bytes()
    )
    link = RegistryLink(
        config.registry_address or identity.registry_federation, tls, config.registry_deadline
    )
    try:
        return await audit_log(
            link.log,
            root,
            checkpoint,
            config.registry_deadline,
            progress=progress,
            trust_roots=trust_roots,
        )
    finally:
        await link.close()
