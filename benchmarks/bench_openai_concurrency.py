"""Throughput of the openai backend against a loopback server with fixed latency, by concurrency.

    python benchmarks/bench_openai_concurrency.py [--latency 0.2] [--requests 512]

For each concurrency c, sends N chat requests through one OpenAIBackend (one httpx.AsyncClient whose pool is
sized to c) and prints requests/s against the ideal c / latency, side by side in one run. The scripted server
runs in a separate process (threads, one per connection). It checks the httpx pool slowdown reported above ~32
requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from typing import Any

from synthagent.core.models import Message
from synthagent.core.protocols import ChatRequest
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.openai import OpenAIBackend


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


async def run_raw(base_url: str, concurrency: int, requests: int) -> float:
    """The same requests over raw asyncio streams (HTTP/1.1 keep-alive, one connection per worker): the baseline
    that tells the client's cost from the server's."""
    import json
    from urllib.parse import urlparse

    url = urlparse(base_url)
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    counter = iter(range(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        while next(counter, None) is not None:
            writer.write(head + body)
            await writer.drain()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return requests / (time.perf_counter() - start)


def _serve(latency: float, queue: Any, stop: Any) -> None:
    with ScriptedOpenAIServer(latency_s=latency) as server:
        queue.put(server.base_url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32, 64, 128, 256])
    args = parser.parse_args()
    print(f"latency {args.latency * 1000:.0f} ms per request, {args.requests} requests per level (c=1: 20)")
    print(f"{'concurrency':>11} {'backend req/s':>14} {'raw asyncio':>12} {'ideal':>8} {'backend/ideal':>14} "
          f"{'backend/raw':>12}")
    # the server runs in its own process, so the measurement is the client's (one process, one event loop)
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(args.latency, queue, stop), daemon=True)
    proc.start()
    base_url = queue.get(timeout=60)
    try:
        for c in args.concurrency:
            n = 20 if c == 1 else max(args.requests, 2 * c)
            rate = asyncio.run(run(base_url, c, n))
            raw = asyncio.run(run_raw(base_url, c, n))
            ideal = c / args.latency
            print(f"{c:>11} {rate:>14.1f} {raw:>12.1f} {ideal:>8.1f} {rate / ideal:>14.2f} {rate / raw:>12.2f}")
    finally:
        stop.set()
        proc.join(timeout=10)


if __name__ == "__main__":
    main()
