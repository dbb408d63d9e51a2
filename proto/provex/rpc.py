"""Server plumbing every Provex server shares: error mapping, health, reflection, readiness.

- :class:`ErrorInterceptor` answers a :class:`provex.errors.ProvexError` with its
  status code and message, and anything else as INTERNAL *without* the
  exception text (the traceback goes to the log). It is the one place where
  domain errors become gRPC statuses.
- :func:`add_health_and_reflection` registers the gRPC health service and
  server reflection for the given services.
- :func:`error_for_rpc_error`: what a failed outbound call means, as a ProvexError.
- :func:`write_endpoints` / :func:`wait_for_endpoints`: the machine-readable
  readiness file ``<state>/run/endpoints.json`` (each port's actual address,
  and the CA certificate clients must trust).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from provex.errors import ProvexError, Unavailable, error_for_status

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"

Behavior = Callable[..., Any]


def _abort_args(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, ProvexError):
        return error.code, str(error)
    log.exception("unhandled error in a gRPC handler", exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def _wrap_unary_response(behavior: Behavior) -> Behavior:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            result = behavior(request_or_iterator, context)
            # Some servicers (grpc's own health service) are synchronous.
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort(*_abort_args(error))

    return handler


def _wrap_stream_response(behavior: Behavior) -> Behavior:
    async def handler(
        request_or_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            responses = behavior(request_or_iterator, context)
            if inspect.isasyncgen(responses):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort(*_abort_args(error))

    return handler


def wrap_handler(
    handler: Any,
    unary: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour wrapped: by ``unary`` when the call answers one
    response (unary-unary, stream-unary), by ``streaming`` when it answers a stream.

    What every server interceptor here does with the handler ``continuation`` gave it.
    """
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))  # type: ignore[no-any-return]
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=unary(handler.stream_unary))  # type: ignore[no-any-return]
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=streaming(handler.unary_stream))  # type: ignore[no-any-return]
    return handler._replace(stream_stream=streaming(handler.stream_stream))  # type: ignore[no-any-return]


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns ProvexError into its status code; hides every other exception as INTERNAL."""

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
        return wrap_handler(handler, _wrap_unary_response, _wrap_stream_response)


CallCheck = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]
"""``check(context)``: raise a ProvexError to refuse the call before its handler runs."""


def _checked(behavior: Behavior, check: CallCheck, streaming: bool) -> Behavior:
    if streaming:

        async def stream_handler(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            responses = behavior(request, context)
            if inspect.isasyncgen(responses):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response

        return stream_handler

    async def unary_handler(request: Any, context: Any) -> Any:
        await check(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary_handler


class CallerCheckInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Runs one caller check before every RPC of a server (health and reflection too).

    Put it after :class:`ErrorInterceptor` in the interceptor list, so that
    the check's refusals become their status codes.
    """

    def __init__(self, check: CallCheck) -> None:
        self._check = check

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
        check = self._check
        return wrap_handler(
            handler,
            lambda behavior: _checked(behavior, check, False),
            lambda behavior: _checked(behavior, check, True),
        )


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Iterable[str]
) -> health.HealthServicer:
    """Register health checking (every service SERVING) and reflection on ``server``."""
    names = list(service_names)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *names]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


async def announce_and_wait_for_signal(name: str, endpoints: Mapping[str, Any]) -> None:
    """Print a ready server's endpoints as one JSON line; return on SIGTERM or SIGINT."""
    print(json.dumps(dict(endpoints), sort_keys=True), flush=True)
    log.info("%s ready: %s", name, dict(endpoints))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("%s stopping", name)


def write_endpoints(state_dir: Path, endpoints: Mapping[str, Any]) -> Path:
    """Write ``<state>/run/endpoints.json`` atomically; return its path."""
    run = state_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    target = run / "endpoints.json"
    scratch = run / f".endpoints.{os.getpid()}.tmp"
    scratch.write_text(json.dumps(dict(endpoints), sort_keys=True) + "\n")
    os.replace(scratch, target)
    return target


def remove_endpoints(state_dir: Path) -> None:
    """Remove the readiness file when a server stops."""
    (state_dir / "run" / "endpoints.json").unlink(missing_ok=True)


async def wait_for_endpoints(state_dir: Path, poll_seconds: float = 0.05) -> dict[str, Any]:
    """Wait until ``<state>/run/endpoints.json`` exists and parses; bound it with a timeout."""
    path = state_dir / "run" / "endpoints.json"
    while True:
        try:
            document: dict[str, Any] = json.loads(path.read_text())
            return document
        except (FileNotFoundError, json.JSONDecodeError):
            await asyncio.sleep(poll_seconds)


_UNREACHABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)


def error_for_rpc_error(error: grpc.aio.AioRpcError, what: str) -> ProvexError:
    """The ProvexError an outbound call's failure means, its message naming the callee ``what``.

    A callee that could not be reached or did not answer in time is
    :class:`~provex.errors.Unavailable`; its own refusals keep their code.
    """
    code = error.code()
    details = error.details() or code.name
    if code in _UNREACHABLE:
        return Unavailable(f"{what} is unreachable ({code.name}: {details})")
    return error_for_status(code, f"{what}: {details}")


def raise_for_rpc_error(error: grpc.aio.AioRpcError, what: str) -> NoReturn:
    """Raise :func:`error_for_rpc_error` of ``error`` (without the gRPC traceback)."""
    raise error_for_rpc_error(error, what) from None
