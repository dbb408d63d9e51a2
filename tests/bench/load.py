"""The load client of the benchmarks, run in its own process.

``python tests/bench/load.py '<json spec>'`` runs one measurement and prints
one JSON line ``{"mode", "count", "seconds", "rate", "errors"}``. Modes:

- ``echo``: unary calls to the echo server (tests/bench/echo.py);
- ``unary``: ``RegisterDataset`` calls to a registry;
- ``bulk``: one ``RegisterDatasets`` stream per connection.

Spec keys: mode, target, ca, cert, key, seconds, in_flight, holder, category,
prefix (unique idempotency-key prefix), streams and chunk (bulk).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from provex.v1 import common_pb2, dataset_pb2, registry_pb2, registry_pb2_grpc

ECHO_METHOD = "/bench.Echo/Echo"
PAYLOAD = b"x" * 600  # about the size of a registration request


def registration(spec: dict[str, Any], number: int) -> registry_pb2.RegisterDatasetRequest:
    """A valid, unique registration request."""
    key = f"{spec['prefix']}-{number}"
    holder = spec["holder"]
    return registry_pb2.RegisterDatasetRequest(
        idempotency_key=key,
        dataset=dataset_pb2.DatasetDescription(
            holder=holder,
            title=f"城市道路交通流量 {number} / road traffic flow {number}",
            description="Hourly traffic counts at signalised intersections, anonymised.",
            categories=[spec["category"]],
            personal_info=common_pb2.PersonalInfoProfile(individuals=0),
            content_digest=hashlib.sha256(key.encode()).digest(),
            size_bytes=1_000_000 + number,
            record_count=10_000,
            lawful_source="collected by the municipal traffic authority's own sensors",
            rights=dataset_pb2.DataRights(
                resource_holder=holder, processing_user=holder, product_operator=holder
            ),
            language="zh",
        ),
    )


async def _timed(seconds: float, in_flight: int, call: Any) -> tuple[int, int, float]:
    done = errors = 0
    started = time.perf_counter()
    deadline = started + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                await call(next(counter))
                done += 1
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done, errors, time.perf_counter() - started


def _channel(spec: dict[str, Any]) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        Path(spec["ca"]).read_bytes(),
        Path(spec["key"]).read_bytes(),
        Path(spec["cert"]).read_bytes(),
    )
    return grpc.aio.secure_channel(spec["target"], credentials)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement as described by ``spec``."""
    mode, seconds, in_flight = spec["mode"], float(spec["seconds"]), int(spec["in_flight"])
    async with _channel(spec) as channel:
        if mode == "echo":
            echo = channel.unary_unary(ECHO_METHOD)

            async def call(number: int) -> None:
                await echo(PAYLOAD, timeout=30)

            done, errors, elapsed = await _timed(seconds, in_flight, call)
        elif mode == "unary":
            stub = registry_pb2_grpc.CertificateServiceStub(channel)

            async def call(number: int) -> None:
                await stub.RegisterDataset(registration(spec, number), timeout=30)

            done, errors, elapsed = await _timed(seconds, in_flight, call)
        elif mode == "bulk":
            done, errors, elapsed = await _bulk(channel, spec, seconds)
        else:
            raise SystemExit(f"unknown mode {mode}")
    return {
        "mode": mode,
        "count": done,
        "errors": errors,
        "seconds": elapsed,
        "rate": done / elapsed,
    }


async def _bulk(
    channel: grpc.aio.Channel, spec: dict[str, Any], seconds: float
) -> tuple[int, int, float]:
    """``streams`` RegisterDatasets streams, each with ``in_flight`` registrations unanswered.

    Registrations travel in chunks of ``chunk`` (one stream message each).
    """
    stub = registry_pb2_grpc.CertificateServiceStub(channel)
    streams = int(spec.get("streams", 2))
    chunk = int(spec.get("chunk", 250))
    started = time.perf_counter()
    deadline = started + seconds
    done = errors = 0

    async def one_stream(stream_number: int) -> None:
        nonlocal done, errors
        window = asyncio.Semaphore(max(1, int(spec["in_flight"]) // chunk))

        async def requests() -> AsyncIterator[registry_pb2.RegisterDatasetsRequest]:
            number = stream_number * 10**8
            while time.perf_counter() < deadline:
                await window.acquire()
                yield registry_pb2.RegisterDatasetsRequest(
                    registrations=[registration(spec, number + n) for n in range(chunk)]
                )
                number += chunk

        async for response in stub.RegisterDatasets(requests(), timeout=seconds + 60):
            window.release()
            for result in response.results:
                if result.HasField("certificate"):
                    done += 1
                else:
                    errors += 1

    await asyncio.gather(*(one_stream(n) for n in range(streams)))
    return done, errors, time.perf_counter() - started


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
