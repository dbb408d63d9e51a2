"""Following new trust root versions while the node serves (after ``provex-registry trust rotate``).

Every ``trust_root_poll_seconds`` (and once at start) the node asks the
registry's public port for ``GetTrustRoot(version=current+1)`` and every
later one, verifies them with :func:`provex.trust.verify_chain` from the
version it trusts (a threshold of the old root keys and of the new ones,
same trust domain, versions one apart, the newest unexpired), and writes
each as ``trust/root-<n>.json`` (atomically, never overwriting another
envelope). A node started later walks the same files from its pin
(:func:`node.state.load_trust_root_chain`).

The new version is then *used* at once when what the node verifies with is
unchanged: the issuer key, the log key and origin, and the federation CA.
:class:`TrustRootHolder` holds the current version; the checkpoint keeper,
the status follower and trading read it through ``holder.current``. A new
version that changes one of those (``trust rotate`` does not, today) is
stored but not swapped in: the node logs an error that it must be
restarted and sets ``provex_node_trust_root_restart_needed`` to 1.

Metrics: ``provex_node_trust_root_version`` (in use),
``provex_node_trust_root_expiry_timestamp_seconds`` and
``provex_node_trust_root_restart_needed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import grpc
from prometheus_client import Gauge

from node.state import StateLayout
from provex import trust
from provex.errors import FailedPrecondition, VerificationError
from provex.identity import channel_credentials
from provex.keyfiles import create_file
from provex.metrics import ServerMetrics
from provex.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 60.0
"""After a failed poll the node asks again after at most this long."""


def same_verification_keys(old: trust.TrustRoot, new: trust.TrustRoot) -> bool:
    """Whether ``new`` verifies everything exactly as ``old`` (issuer, log, CA unchanged)."""
    return (
        old.issuer_key == new.issuer_key
        and old.log_key == new.log_key
        and old.log_origin == new.log_origin
        and old.ca_certificate_pem == new.ca_certificate_pem
    )


class TrustRootHolder:
    """The trust root version the running node uses; swapped when a newer one is adopted."""

    def __init__(self, signed: trust.SignedTrustRoot) -> None:
        """Hold ``signed`` (verified from the pin at start)."""
        self._signed = signed
        self._first = signed.root
        self._listeners: list[Callable[[trust.SignedTrustRoot], None]] = []

    @property
    def signed(self) -> trust.SignedTrustRoot:
        """The current version with its envelope bytes."""
        return self._signed

    @property
    def current(self) -> trust.TrustRoot:
        """The current version's content: what verification uses."""
        return self._signed.root

    @property
    def started_with(self) -> trust.TrustRoot:
        """The version the node started with (parts not swapped keep using its keys)."""
        return self._first

    def on_change(self, listener: Callable[[trust.SignedTrustRoot], None]) -> None:
        """Call ``listener(new)`` after each swap."""
        self._listeners.append(listener)

    def swap(self, signed: trust.SignedTrustRoot) -> None:
        """Use ``signed`` from now on (the caller verified it follows the current one)."""
        self._signed = signed
        for listener in self._listeners:
            listener(signed)


def store_trust_root(layout: StateLayout, version: int, envelope: bytes) -> bool:
    """Write ``trust/root-<version>.json`` atomically; False if it holds these bytes already.

    A file with other bytes is never overwritten (FailedPrecondition).
    """
    path = layout.trust_root(version)
    if path.exists():
        if path.read_bytes() == envelope:
            return False
        raise FailedPrecondition(
            f"{path} holds another trust root version {version} than the registry serves: "
            "the registry's history changed; investigate before trusting either"
        )
    create_file(path, envelope)  # Whole or not at all; refuses one that appeared meanwhile.
    return True


class TrustRootFollower:
    """Fetches, verifies, stores and (when safe) swaps in newer trust root versions."""

    def __init__(
        self,
        layout: StateLayout,
        holder: TrustRootHolder,
        registry_public: str,
        *,
        deadline: float,
        clock: Callable[[], datetime],
        metrics: ServerMetrics | None = None,
    ) -> None:
        """Follow the registry at ``registry_public`` (its public port, server TLS)."""
        self._layout = layout
        self._holder = holder
        self._address = registry_public
        self._deadline = deadline
        self._clock = clock
        self.restart_needed = False
        self._version_gauge: Gauge | None = None
        self._expiry_gauge: Gauge | None = None
        self._restart_gauge: Gauge | None = None
        if metrics is not None:
            registry = metrics.registry
            self._version_gauge = Gauge(
                "provex_node_trust_root_version",
                "The trust root version the node verifies with now.",
                registry=registry,
            )
            self._expiry_gauge = Gauge(
                "provex_node_trust_root_expiry_timestamp_seconds",
                "When the trust root version in use expires (Unix seconds).",
                registry=registry,
            )
            self._restart_gauge = Gauge(
                "provex_node_trust_root_restart_needed",
                "1 when a newer trust root changed keys the node verifies with: restart it.",
                registry=registry,
            )
        self._publish()

    def _publish(self) -> None:
        root = self._holder.current
        if self._version_gauge is not None:
            self._version_gauge.set(root.version)
        if self._expiry_gauge is not None:
            self._expiry_gauge.set(root.expires_at.timestamp())
        if self._restart_gauge is not None:
            self._restart_gauge.set(1 if self.restart_needed else 0)

    async def _fetch_newer(self, after: int) -> list[bytes]:
        """Envelopes of every version after ``after`` the registry serves, in order."""
        ca_pem = self._layout.federation_ca.read_bytes()
        envelopes: list[bytes] = []
        async with grpc.aio.secure_channel(self._address, channel_credentials(ca_pem)) as channel:
            stub = registry_pb2_grpc.TrustServiceStub(channel)
            version = after + 1
            while True:
                try:
                    answer = await stub.GetTrustRoot(
                        registry_pb2.GetTrustRootRequest(version=version), timeout=self._deadline
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        return envelopes
                    raise
                envelopes.append(bytes(answer.envelope))
                if version >= answer.latest_version:
                    return envelopes
                version += 1

    async def poll(self) -> int:
        """Adopt every newer version; return how many were new (VerificationError if bad)."""
        current = self._holder.signed
        envelopes = await self._fetch_newer(current.root.version)
        if not envelopes:
            return 0
        newest = trust.verify_chain(current, envelopes, self._clock())
        written = 0
        for version, envelope in enumerate(envelopes, start=current.root.version + 1):
            written += store_trust_root(self._layout, version, envelope)
        if same_verification_keys(self._holder.started_with, newest.root):
            self._holder.swap(newest)
            log.info(
                "trust root version %d in use (expires %s; %d file(s) written)",
                newest.root.version,
                newest.root.expires_at.isoformat(),
                written,
            )
        else:
            self.restart_needed = True
            log.error(
                "trust root version %d (stored in %s) changes the issuer key, the log key or "
                "origin, or the federation CA: restart the node to use it",
                newest.root.version,
                self._layout.trust_root(newest.root.version),
            )
        self._publish()
        return len(envelopes)

    async def run(self, interval: float) -> None:
        """Poll at start and then every ``interval`` seconds (sooner again after a failure)."""
        while True:
            delay = interval
            try:
                await self.poll()
            except grpc.aio.AioRpcError as error:
                delay = min(interval, RETRY_MAX_SECONDS)
                log.warning(
                    "could not ask the registry at %s for newer trust roots (%s); retrying in "
                    "%.1f s",
                    self._address,
                    error.code().name,
                    delay,
                )
            except (VerificationError, FailedPrecondition) as error:
                delay = min(interval, RETRY_MAX_SECONDS)
                log.error(
                    "a newer trust root from the registry was REFUSED (%s); keeping version %d",
                    error,
                    self._holder.current.version,
                )
            await asyncio.sleep(delay)
