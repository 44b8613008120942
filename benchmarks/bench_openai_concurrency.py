"""Throughput of the openai backend against a loopback server with fixed latency, by concurrency.

    python benchmarks/bench_openai_concurrency.py [--latency 0.2] [--requests 512]

For each concurrency c, sends N chat requests through one OpenAIBackend (one httpx.AsyncClient whose pool is
sized to c) and prints requests/s against the ideal c / latency, side by side in one run. It checks the httpx
pool slowdown reported above ~32 requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from synthagent.core.models import Message
from synthagent.core.protocols import ChatRequest
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.openai_backend import OpenAIBackend


async def run(base_url: str, concurrency: int, requests: int) -> float:
    backend = OpenAIBackend(model="bench", base_url=base_url, max_concurrency=concurrency, timeout_s=30)
    request = ChatRequest(messages=(Message("user", "hi"),))
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await backend.chat(request)

    await asyncio.gather(*[one() for _ in range(concurrency)])  # warm the connection pool
    start = time.perf_counter()
    await asyncio.gather(*[one() for _ in range(requests)])
    elapsed = time.perf_counter() - start
    await backend.aclose()
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32, 64, 128, 256])
    args = parser.parse_args()
    print(f"latency {args.latency * 1000:.0f} ms per request, {args.requests} requests per level (c=1: 20)")
    print(f"{'concurrency':>11} {'req/s':>8} {'ideal':>8} {'ratio':>6}")
    with ScriptedOpenAIServer(latency_s=args.latency) as server:
        for c in args.concurrency:
            n = 20 if c == 1 else max(args.requests, 2 * c)
            rate = asyncio.run(run(server.base_url, c, n))
            ideal = c / args.latency
            print(f"{c:>11} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.2f}")


if __name__ == "__main__":
    main()
