"""Structured logs and request ids for every Provex server.

- :class:`JsonFormatter`: one JSON object per line (time, level, logger,
  message, request_id, method, the server's name and id, any ``extra``
  fields, the exception's traceback); :func:`configure_logging` installs it
  (or a text format carrying the same request id) on the root logger, which
  is what ``serve`` of both command lines does (setting ``log_format``).
- Request ids: a call's ``x-request-id`` metadata (or a fresh id when it has
  none or a malformed one) is kept in a context variable while the call is
  handled (:class:`RequestIdInterceptor`), appears in every log line the call
  writes, is echoed in the call's trailing metadata, and travels with every
  outbound call the server makes meanwhile (:func:`outbound_metadata`; the
  channels of the node attach it with :class:`OutboundRequestIdInterceptor`).
- The same interceptor writes one access-log line per finished call (method,
  status code, milliseconds, peer; logger ``provex.access``): at INFO when
  the call failed, took a second or more, or came with a request id, else at
  DEBUG (:func:`access_level`), so that the nodes' routine polls stay quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc

from provex.errors import InvalidArgument
from provex.rpc import wrap_handler

__all__ = (
    "REQUEST_ID_KEY",
    "JsonFormatter",
    "OutboundRequestIdInterceptor",
    "RequestIdInterceptor",
    "access_level",
    "call_code",
    "configure_logging",
    "current_method",
    "current_request_id",
    "new_request_id",
    "outbound_interceptors",
    "outbound_metadata",
    "request_scope",
    "valid_request_id",
)

REQUEST_ID_KEY = "x-request-id"
"""The metadata key of a call's request id (lower case, as gRPC metadata keys are)."""

LOG_FORMATS = ("json", "text")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "provex_request_id", default=None
)
_method: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "provex_rpc_method", default=None
)

_QUIET_PREFIX = "/grpc.health.v1.Health/"
SLOW_CALL_SECONDS = 1.0

access_log = logging.getLogger("provex.access")


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


def valid_request_id(text: str) -> bool:
    """Whether ``text`` may be a request id: 1 to 128 of ``A-Za-z0-9._:@/+=-``.

    Anything else (spaces, quotes, control characters) could forge log lines
    and is replaced by a fresh id rather than refused: a request id is advice.
    """
    return _REQUEST_ID.fullmatch(text) is not None


def current_request_id() -> str | None:
    """The request id of the call being handled (None outside a call)."""
    return _request_id.get()


def current_method() -> str | None:
    """The full method name of the call being handled, e.g. ``/provex.v1.LogService/GetEntries``."""
    return _method.get()


@contextlib.contextmanager
def request_scope(request_id: str | None = None, method: str | None = None) -> Iterator[str]:
    """Handle something under ``request_id`` (a fresh one if None or invalid); yield the id used."""
    chosen = request_id if request_id and valid_request_id(request_id) else new_request_id()
    id_token = _request_id.set(chosen)
    method_token = _method.set(method) if method is not None else None
    try:
        yield chosen
    finally:
        # A stream's generator may be closed from another task (its context is a copy):
        # there the tokens do not apply, and that context ends with the closing anyway.
        with contextlib.suppress(ValueError):
            if method_token is not None:
                _method.reset(method_token)
            _request_id.reset(id_token)


def outbound_metadata(
    extra: Sequence[tuple[str, str]] = (),
) -> tuple[tuple[str, str], ...]:
    """Metadata for an outbound call: ``extra`` plus the current request id, if there is one."""
    current = _request_id.get()
    kept = tuple((key, value) for key, value in extra if key != REQUEST_ID_KEY)
    if current is None:
        return tuple(extra)
    return (*kept, (REQUEST_ID_KEY, current))


# ---------------------------------------------------------------- formatting

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "method"}
)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def __init__(self, service: str = "", instance: str = "") -> None:
        super().__init__()
        self._static = {
            key: value for key, value in (("service", service), ("id", instance)) if value
        }

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(self._static)
        request_id = getattr(record, "request_id", None)
        if not request_id or request_id == "-":  # "-": the text filter's "outside a call".
            request_id = _request_id.get()
        if request_id:
            document["request_id"] = request_id
        method = getattr(record, "method", None) or _method.get()
        if method:
            document["method"] = method
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in document:
                document[key] = _plain(value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, sort_keys=False)


class _RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute (``-`` outside a call) for text formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = _request_id.get() or "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(
    log_format: str,
    *,
    service: str = "",
    instance: str = "",
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as JSON lines or text.

    ``service`` ("registry", "node") and ``instance`` (e.g. the node id) are
    in every JSON line. Replaces the root logger's handlers; returns the new one.
    """
    if log_format not in LOG_FORMATS:
        raise InvalidArgument(
            f"setting log_format is {log_format!r}: use one of {', '.join(LOG_FORMATS)}"
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service, instance))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


# ---------------------------------------------------------------- server side

Behavior = Callable[..., Any]


def call_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status code name a finished call answered (after an outer ErrorInterceptor's work).

    ``error`` is what the handler raised: None (it returned), an AbortError
    (the code was set by ``abort``), a cancellation (CANCELLED), or anything
    else (UNKNOWN: it escaped every interceptor).
    """
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        if isinstance(error, asyncio.CancelledError):
            return "CANCELLED"
        return "UNKNOWN"
    try:
        code = context.code()
    except Exception:  # Not every context keeps it (tests' fakes); assume the handler's word.
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # Some grpc versions keep the numeric value.
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return str(status.name)
    return "OK" if error is None else "UNKNOWN"


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        name, value = item[0], item[1]
        if name == key and isinstance(value, str):
            return value
    return None


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return str(context.peer())
    except Exception:
        return ""


def access_level(method: str, code: str, seconds: float, traced: bool) -> int:
    """The level of a call's access line: INFO if it failed, was slow or is traced, else DEBUG.

    A traced call came with an ``x-request-id`` (someone follows it across
    servers); the nodes' routine polls come without one and would drown the
    log. INTERNAL and UNKNOWN are WARNING; health checks are always DEBUG.
    """
    if method.startswith(_QUIET_PREFIX):
        return logging.DEBUG
    if code in ("INTERNAL", "UNKNOWN"):
        return logging.WARNING
    if code != "OK" or traced or seconds >= SLOW_CALL_SECONDS:
        return logging.INFO
    return logging.DEBUG


def _finish(
    method: str,
    context: grpc.aio.ServicerContext[Any, Any],
    started: float,
    error: BaseException | None,
    *,
    traced: bool,
    peer: str,
) -> None:
    code = call_code(context, error)
    seconds = time.perf_counter() - started
    level = access_level(method, code, seconds, traced)
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "%s %s",
            method,
            code,
            extra={
                "grpc_code": code,
                "duration_ms": round(seconds * 1000, 3),
                "peer": peer,
            },
        )


def _echo(context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    with contextlib.suppress(Exception):  # A finished or fake context: nothing to echo to.
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


def _unary(behavior: Behavior, method: str, wanted: str | None) -> Behavior:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with request_scope(wanted, method) as request_id:
            traced = request_id == wanted
            _echo(context, request_id)
            # Read while the call is alive: context.peer() of a finished call can crash grpc.
            peer = _peer(context)
            started = time.perf_counter()
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as error:
                _finish(method, context, started, error, traced=traced, peer=peer)
                raise
            _finish(method, context, started, None, traced=traced, peer=peer)
            return result

    return handler


def _streaming(behavior: Behavior, method: str, wanted: str | None) -> Behavior:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        with request_scope(wanted, method) as request_id:
            traced = request_id == wanted
            _echo(context, request_id)
            peer = _peer(context)  # While the call is alive (see _unary).
            started = time.perf_counter()
            try:
                responses = behavior(request, context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:
                    for response in responses:
                        yield response
            except BaseException as error:
                _finish(method, context, started, error, traced=traced, peer=peer)
                raise
            _finish(method, context, started, None, traced=traced, peer=peer)

    return handler


class RequestIdInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Keeps each call's request id in the log context, echoes it, and logs the call's outcome.

    Put it first in the interceptor list (outermost), before the metrics and
    :class:`~provex.rpc.ErrorInterceptor`, so that everything the call logs
    carries the id. The handlers it wraps must be async (ErrorInterceptor's are).
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # no such method: grpc answers UNIMPLEMENTED
        method = str(handler_call_details.method)
        wanted = _metadata_value(handler_call_details.invocation_metadata, REQUEST_ID_KEY)
        return wrap_handler(
            handler,
            lambda behavior: _unary(behavior, method, wanted),
            lambda behavior: _streaming(behavior, method, wanted),
        )


# ---------------------------------------------------------------- client side


def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    current = _request_id.get()
    if current is None:
        return details
    metadata = grpc.aio.Metadata()
    for key, value in details.metadata or ():
        if key != REQUEST_ID_KEY:
            metadata.add(key, value)
    metadata.add(REQUEST_ID_KEY, current)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class OutboundRequestIdInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A channel interceptor: every call made while handling a request carries its request id.

    The node's channels (to the registry, to its peers) use it, so that no
    outbound call site has to remember :func:`outbound_metadata`.
    """

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)


def outbound_interceptors() -> list[Any]:
    """The interceptors of a channel a server calls out on: ``[OutboundRequestIdInterceptor()]``.

    For ``grpc.aio.secure_channel(..., interceptors=outbound_interceptors())``.
    """
    return [OutboundRequestIdInterceptor()]
