"""A plain grpc.aio echo server, the baseline the registry benchmarks are divided by.

Run as ``python tests/bench/echo.py serve CERT KEY CA`` it serves one unary
method (``/bench.Echo/Echo``, raw bytes) with mutual TLS on 127.0.0.1 port 0
and prints its port; the load client lives in ``tests/bench/load.py``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc

ECHO_METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve(cert: bytes, key: bytes, ca: bytes) -> None:
    """Serve the echo method until SIGTERM."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=ca,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(port, flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(1)


if __name__ == "__main__":
    _, command, cert_path, key_path, ca_path = sys.argv
    assert command == "serve"
    asyncio.run(
        serve(Path(cert_path).read_bytes(), Path(key_path).read_bytes(), Path(ca_path).read_bytes())
    )
