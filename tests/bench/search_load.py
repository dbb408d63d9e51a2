"""The load client of the search benchmark, run in its own process.

``python tests/bench/search_load.py '<json spec>'`` sends a fixed mix of
queries to one node's operator port (mutual TLS, the operator certificate),
one call at a time, and prints one JSON line with every latency. Spec keys:

- ``target``, ``ca``, ``cert``, ``key``: the operator endpoint and PEM files;
- ``queries``: ``[{"label": str, "query": base64 of a serialized SearchQuery}]``;
- ``modes``: ``"search"`` (``OperatorService.Search``) and/or ``"federated"``
  (``OperatorService.FederatedSearch``, with ``peer_deadline_ms``);
- ``warmup_seconds``: the mix is sent once, unmeasured, for at most this long;
- ``max_queries`` (per mode) and ``seconds``: measuring stops when either is
  reached (the latter checked after every query);
- ``timeout``: per call, in seconds;
- ``peer_deadline_ms``: of ``FederatedSearch``.

Measuring goes round after round over the mix, each round in its own
shuffled order (so that a round cut short by the time limit is an unbiased
sample of the mix); with two modes, each query goes to both, one right after
the other, so that they see the same queries under the same conditions.
The answer::

    {"rounds": int, "queries": int, "seconds": float,
     "modes": {mode: {"latencies_ms": [[query index, ms], ...], "errors": int,
                      "error_samples": [str], "hits": int,
                      "answered_min": int, "unanswered": int}}}
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from provex.v1 import market_pb2, node_pb2, node_pb2_grpc


def _channel(spec: dict[str, Any]) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        Path(spec["ca"]).read_bytes(),
        Path(spec["key"]).read_bytes(),
        Path(spec["cert"]).read_bytes(),
    )
    return grpc.aio.secure_channel(spec["target"], credentials)


class _Mode:
    """The calls and figures of one mode."""

    def __init__(
        self, name: str, stub: node_pb2_grpc.OperatorServiceStub, spec: dict[str, Any]
    ) -> None:
        self.name = name
        self.stub = stub
        self.timeout = float(spec.get("timeout", 60.0))
        self.deadline_ms = int(spec.get("peer_deadline_ms", 0))
        self.latencies: list[list[float]] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.hits = 0
        self.answered_min: int | None = None
        self.unanswered = 0

    async def call(self, index: int, query: market_pb2.SearchQuery, measured: bool) -> None:
        started = time.perf_counter()
        try:
            if self.name == "search":
                found = await self.stub.Search(
                    node_pb2.SearchRequest(query=query), timeout=self.timeout
                )
                hits = len(found.hits)
                answered, unanswered = 1, 0
            else:
                merged = await self.stub.FederatedSearch(
                    node_pb2.FederatedSearchRequest(query=query, peer_deadline_ms=self.deadline_ms),
                    timeout=self.timeout,
                )
                hits = len(merged.hits)
                answered, unanswered = len(merged.answered), len(merged.unanswered)
        except grpc.aio.AioRpcError as error:
            if measured:
                self.errors += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{error.code().name}: {error.details()}")
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        if measured:
            self.latencies.append([index, round(elapsed_ms, 3)])
            self.hits += hits
            self.unanswered += unanswered
            if self.answered_min is None or answered < self.answered_min:
                self.answered_min = answered

    def result(self) -> dict[str, Any]:
        return {
            "latencies_ms": self.latencies,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "hits": self.hits,
            "answered_min": self.answered_min or 0,
            "unanswered": self.unanswered,
        }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then measure shuffled rounds of the query mix until a limit is reached."""
    queries = [
        market_pb2.SearchQuery.FromString(base64.b64decode(item["query"]))
        for item in spec["queries"]
    ]
    max_queries = int(spec["max_queries"])
    seconds = float(spec["seconds"])
    warmup_seconds = float(spec.get("warmup_seconds", 30.0))
    async with _channel(spec) as channel:
        stub = node_pb2_grpc.OperatorServiceStub(channel)
        modes = [_Mode(name, stub, spec) for name in spec["modes"]]
        started = time.perf_counter()
        for index, query in enumerate(queries):
            if time.perf_counter() - started >= warmup_seconds:
                break
            for mode in modes:
                await mode.call(index, query, measured=False)
        started = time.perf_counter()
        sent = 0
        rounds = 0
        while sent < max_queries and time.perf_counter() - started < seconds:
            order = list(range(len(queries)))
            random.Random(rounds).shuffle(order)
            for index in order:
                for mode in modes:
                    await mode.call(index, queries[index], measured=True)
                sent += 1
                if sent >= max_queries or time.perf_counter() - started >= seconds:
                    break
            rounds += 1
        elapsed = time.perf_counter() - started
    return {
        "rounds": rounds,
        "queries": sent,
        "seconds": round(elapsed, 3),
        "modes": {mode.name: mode.result() for mode in modes},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
