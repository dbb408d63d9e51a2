"""The console's HTTPS server: mutual TLS, who may look, the page and its JSON endpoints.

An aiohttp server in the registry's event loop, on ``console_listen``. TLS
asks for a client certificate from the federation CA but does not demand one
in the handshake, so that a browser without one gets a page saying what is
missing instead of a bare handshake failure. Every request is then identified
by :class:`registry.services.common.Authorizer` from that verified certificate,
exactly as on the federation port, and must be an admin, auditor or supervisor
(:func:`registry.authz.require_overseer`): no certificate is 401, a node's (or
an unknown admin's) 403, each with a page (or, under ``/api/``, a JSON
``{"error": ...}``) saying what to do.

Routes (all GET; the console is read-only): ``/`` the page, ``/static/*`` its
script, style sheet and icon (shipped in the package, no CDN), and
``/api/{whoami,directory,checkpoint,catalog,statistics,frozen,overdue}``
(:mod:`registry.console.views`). Every response carries a strict
Content-Security-Policy (scripts, styles and fetches from this origin only;
no inline script, no framing), ``nosniff`` and ``no-store``.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509

from provex import pki
from provex.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    Unauthenticated,
)
from provex.identity import AUTH_CONTEXT_PEM_CERT
from registry.authz import Caller, require_overseer
from registry.console import views
from registry.console.views import ConsoleSources, Json
from registry.services.common import Authorizer

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HTTP_STATUS: tuple[tuple[type[ProvexError], int], ...] = (
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (InvalidArgument, 400),
)
_CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("provex.caller", Caller)

View = Callable[[ConsoleSources, Caller], Awaitable[Json]]
_API: Mapping[str, View] = {
    "directory": views.directory,
    "checkpoint": views.checkpoint,
    "catalog": views.catalog,
    "statistics": views.statistics,
    "frozen": views.frozen,
    "overdue": views.overdue,
}


@dataclass(frozen=True)
class _PeerCertificate:
    """The verified TLS client certificate of one request, as the Authorizer reads it."""

    pems: tuple[bytes, ...]

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {AUTH_CONTEXT_PEM_CERT: self.pems}


def _peer_certificate(request: web.Request) -> _PeerCertificate:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return _PeerCertificate(())
    return _PeerCertificate((pki.cert_to_pem(x509.load_der_x509_certificate(der)),))


def _status_of(error: ProvexError) -> int:
    for kind, status in _HTTP_STATUS:
        if isinstance(error, kind):
            return status
    return 500


_REFUSAL_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Provex console: {title}</title>
<link rel="icon" href="/static/favicon.svg"><link rel="stylesheet" href="/static/console.css">
</head><body><main class="refusal"><h1>{title}</h1><p>{message}</p>
<p>The supervision console is for the registry's admins, auditors and provincial supervisors.
Present the client certificate that
<code>provex-registry admin add NAME --role admin|auditor|supervisor</code> wrote to
<code>&lt;state&gt;/admins/NAME/</code> (cert.pem, key.pem; import them into the browser,
e.g. as a PKCS#12 file made with <code>openssl pkcs12 -export</code>).</p></main></body></html>
"""


def _refusal(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=status)
    title = {401: "client certificate needed", 403: "not allowed"}.get(status, "refused")
    page = _REFUSAL_PAGE.format(title=html.escape(title), message=html.escape(message))
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def _make_app(sources: ConsoleSources, authorizer: Authorizer) -> web.Application:
    @web.middleware
    async def identify(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/static/favicon.svg":
            return await handler(request)  # Browsers ask for it even on a refusal page.
        try:
            caller = await authorizer.caller(_peer_certificate(request))
            require_overseer(caller, "The supervision console")
            request[_CALLER_KEY] = caller
            return await handler(request)
        except ProvexError as error:
            status = _status_of(error)
            if status == 500:
                log.exception("console request %s failed", request.path)
                return _refusal(request, 500, "the registry could not answer; see its log")
            return _refusal(request, status, str(error))

    async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(_SECURITY_HEADERS)

    async def page(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"}
        )

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        content_type = _STATIC_TYPES.get(path.suffix)
        if "/" in name or content_type is None or not path.is_file():
            return _refusal(request, 404, f"no such file: {name}")
        return web.FileResponse(path, headers={"Content-Type": content_type})

    async def api(request: web.Request) -> web.StreamResponse:
        caller = request[_CALLER_KEY]
        what = request.match_info["what"]
        if what == "whoami":
            return web.json_response(views.whoami(caller))
        view = _API.get(what)
        if view is None:
            known = ", ".join(f"/api/{name}" for name in ("whoami", *_API))
            raise NotFound(f"no console endpoint /api/{what}; the endpoints are {known}")
        return web.json_response(await view(sources, caller))

    app = web.Application(middlewares=[identify])
    app.on_response_prepare.append(add_headers)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/{what}", api)
    return app


def tls_context(ca_pem: bytes, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Server TLS asking for (not demanding) a client certificate from the federation CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass
class Console:
    """A running console: its address, and how to stop it."""

    runner: web.AppRunner
    address: str

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (up to the grace given at start)."""
        await self.runner.cleanup()


async def start_console(
    listen: str,
    sources: ConsoleSources,
    authorizer: Authorizer,
    context: ssl.SSLContext,
    *,
    grace: float = 10.0,
) -> Console:
    """Listen on ``listen`` ("host:port", port 0 = any) and serve the console.

    On stop, in-flight requests get ``grace`` seconds to finish.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise InvalidArgument(f"console_listen {listen!r} is not host:port (e.g. 127.0.0.1:7402)")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port_text)))
    except OSError as error:
        sock.close()
        raise InvalidArgument(f"console_listen {listen}: cannot listen there ({error})") from None
    port = sock.getsockname()[1]
    runner = web.AppRunner(_make_app(sources, authorizer), access_log=log, shutdown_timeout=grace)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return Console(runner, f"{shown}:{port}")
