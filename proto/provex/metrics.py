"""Prometheus metrics of one Provex server process, and the ``/metrics`` HTTP endpoint.

- :class:`ServerMetrics`: a :class:`prometheus_client.CollectorRegistry` of
  its own per server process (never the library's global default registry),
  the gRPC call metrics every server has, and a list of asynchronous
  *refreshers* the scrape runs first (each reads what it reports — a log
  size, an outbox depth — from the server's storage and sets its gauges).
- :class:`MetricsInterceptor`: a grpc.aio server interceptor counting calls
  by port, service, method and status code, and timing them (streaming calls
  from the first message to the last). Put it after
  :class:`provex.logs.RequestIdInterceptor` and before
  :class:`provex.rpc.ErrorInterceptor`, so that it sees the status codes the
  error interceptor chose.
- :class:`MetricsHttpServer`: an asyncio HTTP/1.1 responder in the server's
  own event loop: ``GET /metrics`` (the text exposition format); anything
  else is answered 400, 404 or 405, never a crash. One request per
  connection, bounded in size and time.
- :class:`DurableCounter`: a counter whose value is read from storage (e.g.
  alarms recorded), exposed as a Prometheus counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc
from cryptography import x509
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from provex.errors import FailedPrecondition, InvalidArgument
from provex.logs import call_code
from provex.rpc import wrap_handler

__all__ = (
    "DurableCounter",
    "MetricsHttpServer",
    "MetricsInterceptor",
    "ServerMetrics",
    "certificate_expiry",
    "parse_listen",
    "serve_metrics",
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Seconds; federated searches answer within a few seconds, streams may last minutes."""

Refresher = Callable[[], Awaitable[None]]
"""Runs before each scrape; sets the gauges it owns from the server's state."""

ResponseHook = Callable[[Any], None]
"""Sees every response message a method sends (e.g. to count registrations)."""


def _split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ("pkg.Service", "Method")."""
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    return (service or "unknown", name or "unknown")


def certificate_expiry(pem: bytes) -> float:
    """The end of a PEM certificate's validity, in Unix seconds."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def iso_to_unix(text: str) -> float | None:
    """An ISO 8601 time (as the databases store them) in Unix seconds; None if empty or bad."""
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


class DurableCounter(Collector):
    """A counter whose values come from storage (they survive restarts), set by a refresher."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def set(self, values: Mapping[tuple[str, ...], float]) -> None:
        """Replace every labelled value (label values in ``labelnames`` order)."""
        self._values = dict(values)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in sorted(self._values.items()):
            family.add_metric(list(labels), value)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]


class ServerMetrics:
    """The metrics of one server process: its registry, call metrics and refreshers.

    ``service`` ("registry" or "node") and ``instance`` (the node id, or the
    registry's trust domain) are exported as ``provex_server_info{service, server_id}``.
    """

    def __init__(self, service: str, instance: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._refreshers: list[tuple[str, Refresher]] = []
        self._refreshing = asyncio.Lock()
        self._hooks: dict[str, ResponseHook] = {}
        info = Gauge(
            "provex_server_info",
            "Constant 1, labelled with what this server process is.",
            ["service", "server_id"],  # Not "instance": Prometheus sets that one.
            registry=self.registry,
        )
        info.labels(service, instance).set(1)
        self.started = Gauge(
            "provex_server_start_time_seconds",
            "When this server process started (Unix seconds).",
            registry=self.registry,
        )
        self.started.set(time.time())
        self.handled = Counter(
            "provex_grpc_server_handled",
            "gRPC calls finished, by port, service, method and status code.",
            ["port", "grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "provex_grpc_server_handling_seconds",
            "Time from a call's start until its answer (a stream's last message).",
            ["port", "grpc_service", "grpc_method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "provex_grpc_server_in_flight",
            "gRPC calls being handled now (streams that stay open count too).",
            ["port", "grpc_service", "grpc_method"],
            registry=self.registry,
        )
        self.refresh_errors = Counter(
            "provex_metrics_refresh_errors",
            "Scrapes whose reading of a server's state failed (its gauges kept older values).",
            ["refresher"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "provex_certificate_expiry_timestamp_seconds",
            "When this server's own certificates expire (Unix seconds).",
            ["certificate"],
            registry=self.registry,
        )

    def add_refresher(self, name: str, refresher: Refresher) -> None:
        """Run ``refresher`` before every scrape (in order of addition)."""
        self._refreshers.append((name, refresher))
        self.refresh_errors.labels(name)  # Exported as 0 from the start.

    def on_response(self, method: str, hook: ResponseHook) -> None:
        """Call ``hook(response)`` for every response message ``method`` sends successfully."""
        self._hooks[method] = hook

    def response_hook(self, method: str) -> ResponseHook | None:
        return self._hooks.get(method)

    def interceptor(self, port: str) -> MetricsInterceptor:
        """The server interceptor of one port (``port`` labels its calls)."""
        return MetricsInterceptor(self, port)

    async def refresh(self) -> None:
        """Run every refresher; a failing one is logged and counted, the others still run."""
        async with self._refreshing:
            for name, refresher in self._refreshers:
                try:
                    await refresher()
                except Exception:
                    log.warning("metrics refresher %s failed", name, exc_info=True)
                    self.refresh_errors.labels(name).inc()

    async def exposition(self) -> bytes:
        """Refresh, then the text exposition of every metric."""
        await self.refresh()
        return bytes(generate_latest(self.registry))


# ---------------------------------------------------------------- the interceptor

Behavior = Callable[..., Any]


class _Call:
    """One call's labels and clock."""

    __slots__ = ("_labels", "_metrics", "_started")

    def __init__(self, metrics: ServerMetrics, port: str, method: str) -> None:
        service, name = _split_method(method)
        self._metrics = metrics
        self._labels = (port, service, name)
        self._started = time.perf_counter()
        metrics.in_flight.labels(*self._labels).inc()

    def finish(
        self, context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
    ) -> None:
        metrics, labels = self._metrics, self._labels
        metrics.in_flight.labels(*labels).dec()
        metrics.handled.labels(*labels, call_code(context, error)).inc()
        metrics.latency.labels(*labels).observe(time.perf_counter() - self._started)


def _unary(
    behavior: Behavior, metrics: ServerMetrics, port: str, method: str, hook: ResponseHook | None
) -> Behavior:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(metrics, port, method)
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as error:
            call.finish(context, error)
            raise
        call.finish(context, None)
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(result)
        return result

    return handler


def _streaming(
    behavior: Behavior, metrics: ServerMetrics, port: str, method: str, hook: ResponseHook | None
) -> Behavior:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        call = _Call(metrics, port, method)
        try:
            responses = behavior(request, context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    if hook is not None:
                        with contextlib.suppress(Exception):
                            hook(response)
                    yield response
            else:
                for response in responses:
                    yield response
        except BaseException as error:
            call.finish(context, error)
            raise
        call.finish(context, None)

    return handler


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call of one port (see the module docstring for its place)."""

    def __init__(self, metrics: ServerMetrics, port: str) -> None:
        self._metrics = metrics
        self._port = port

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        metrics, port = self._metrics, self._port
        if handler is None:  # grpc answers UNIMPLEMENTED; the name is the caller's, not labelled.
            metrics.handled.labels(port, "unknown", "unknown", "UNIMPLEMENTED").inc()
            return None  # type: ignore[return-value]
        method = str(handler_call_details.method)
        hook = metrics.response_hook(method)
        return wrap_handler(
            handler,
            lambda behavior: _unary(behavior, metrics, port, method, hook),
            lambda behavior: _streaming(behavior, metrics, port, method, hook),
        )


# ---------------------------------------------------------------- HTTP

MAX_REQUEST_LINE = 4096
MAX_HEADERS = 100
READ_TIMEOUT = 10.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as (host, port); ValueError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a host:port address: {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class MetricsHttpServer:
    """``GET /metrics`` of one :class:`ServerMetrics`, in the running event loop."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.address = ""

    async def start(self, listen: str) -> str:
        """Listen on ``listen`` (``host:port``, port 0 picks one); return the bound address."""
        try:
            host, port = parse_listen(listen)
        except ValueError as error:
            raise InvalidArgument(f"setting metrics_listen: {error}") from None
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_REQUEST_LINE, reuse_address=True
            )
        except OSError as error:
            raise FailedPrecondition(
                f"cannot serve metrics on {listen} ({error.strerror or error}): "
                "change setting metrics_listen, or empty it to turn metrics off"
            ) from None
        bound = self._server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        self.address = f"{shown}:{bound[1]}"
        return self.address

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        connections, self._connections = list(self._connections), set()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                status, body, content_type, head_only = await self._answer(reader)
            await self._respond(writer, status, body, content_type, head_only)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away or was too slow: nothing to answer.
        except asyncio.CancelledError:
            pass  # Stopping: the connection just closes (the task ends here anyway).
        except Exception:
            log.exception("metrics endpoint: request failed")
            with contextlib.suppress(Exception):
                await self._respond(writer, 500, b"internal error\n", "text/plain", False)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool]:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            return 400, b"request line too long\n", "text/plain", False
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b"expected: GET /metrics HTTP/1.1\n", "text/plain", False
        for _ in range(MAX_HEADERS + 1):  # Read (and ignore) the headers.
            try:
                header = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                return 400, b"header line too long\n", "text/plain", False
            if header in (b"\r\n", b"\n", b""):
                break
        else:
            return 400, b"too many headers\n", "text/plain", False
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return 404, b"not found: the metrics are at /metrics\n", "text/plain", False
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain", False
        body = await self._metrics.exposition()
        return 200, body, CONTENT_TYPE_LATEST, method == "HEAD"

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, head_only: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        )
        if status == 405:
            head += "Allow: GET, HEAD\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + (b"" if head_only else body))
        await writer.drain()


async def serve_metrics(metrics: ServerMetrics, listen: str) -> MetricsHttpServer | None:
    """Start ``/metrics`` on ``listen`` (setting ``metrics_listen``); None if it is empty.

    Servers call it first, before storage and gRPC ports, so that a bad or
    taken address stops them before anything else started.
    """
    if not listen:
        return None
    server = MetricsHttpServer(metrics)
    await server.start(listen)
    return server
