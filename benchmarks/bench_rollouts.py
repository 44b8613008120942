"""P2: rollouts per second against a loopback OpenAI-compatible server with fixed latency, by concurrency and
worker processes, side by side with the ideal (concurrency / (latency x model calls per rollout)).

    python benchmarks/bench_rollouts.py [--latency 0.2] [--levels 1 8 64 256] [--workers 1 2 3 4]

Each rollout is a real one through the engine (``JobRunner``: LangGraph agent loop, a private SQLite database
copy, the rule-based user, the ``openai`` backend over HTTP): the model first calls a tool, then answers, and
the user ends the conversation, so 2 model calls per rollout. Every level runs with one process (executor
``local``: the single-process ceiling) and, at the levels in ``--multi-levels``, with ``process`` executors
of ``--workers`` worker processes (warm: workers are started and have built their components before the
clock starts). The server is a lean asyncio HTTP/1.1 server in its own process (its replies depend only on
whether the conversation already holds a tool result), so the measurement is the client's; ``--servers N``
runs N server processes on one port (SO_REUSEPORT) if one saturates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}
ANSWER = {"role": "assistant", "content": "All done, thank you."}


def _payload(message: dict[str, Any]) -> bytes:
    body = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "model": "bench",
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _serve(port: int, latency: float, ready: Any) -> None:
    tool_reply, answer_reply = _payload(TOOL_CALL), _payload(ANSWER)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = 0
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    if line in (b"\r\n", b"\n"):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                await asyncio.sleep(latency)
                has_tool = b'"role": "tool"' in body or b'"role":"tool"' in body
                writer.write(answer_reply if has_tool else tool_reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _consume(executor: Any, runner: Any, jobs: list[Any], concurrency: int) -> list[Any]:
    out = []
    async for _, result in executor.map(runner, jobs, concurrency=concurrency):
        out.append(result)
    return out


async def measure(base_url: str, root: Path, executor: str, workers: int, concurrency: int, rollouts: int,
                  tasks: list[Any]) -> tuple[float, int]:
    from synthagent.core.config import load_config
    from synthagent.core.engine import JobRunner
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    overrides = [f"executor={executor}", "llm.backend=openai", "llm.model=bench", f"llm.base_url={base_url}",
                 f"plugins.openai.max_concurrency={concurrency}", "plugins.openai.max_retries=0",
                 "llm.timeout_s=60", "simulate.retries=0", f"simulate.concurrency={concurrency}"]
    if executor == "process":
        overrides.append(f"plugins.process.workers={workers}")
    pipeline = Pipeline(load_config(None, overrides), load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(root / f"{executor}-{workers}-{concurrency}-{time.monotonic_ns()}", resume=False)
    c = pipeline.components
    runner = JobRunner(pipeline.worker_spec(), "rollout", components=c)
    jobs = [(tasks[i % len(tasks)], i // len(tasks)) for i in range(rollouts)]
    try:
        await _consume(c.executor, runner, jobs[: max(2 * workers, min(concurrency, 64))], concurrency)  # warm
        start = time.perf_counter()
        results = await _consume(c.executor, runner, jobs, concurrency)
        elapsed = time.perf_counter() - start
    finally:
        for comp in (c.executor, c.llm):
            close = getattr(comp, "aclose", None)
            if close is not None:
                await close()
        pipeline.store.close()  # type: ignore[union-attr]
    bad = [r for r in results if isinstance(r, BaseException) or r.termination == "infra_error" or r.turns != 2]
    return rollouts / elapsed, len(bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 8, 64, 256])
    parser.add_argument("--multi-levels", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--rounds", type=float, default=4.0, help="rollouts per level = rounds x concurrency")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    servers = []
    for _ in range(args.servers):
        ready = ctx.Event()
        proc = ctx.Process(target=_serve, args=(port, args.latency, ready), daemon=True)
        proc.start()
        ready.wait(30)
        servers.append(proc)
    base_url = f"http://127.0.0.1:{port}/v1"

    from synthagent.core.protocols import GenerationContext
    from synthagent.core.registry import load_plugins

    gen = load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}).registry("generator").get(
        "offline-domains").create({})

    async def make_tasks() -> list[Any]:
        return [t async for t in gen.generate(GenerationContext(count=200, seed=0))][:200]

    tasks = asyncio.run(make_tasks())
    calls = 2
    print(f"latency {args.latency * 1000:.0f} ms per model call, {calls} calls per rollout, {os.cpu_count()} CPUs, "
          f"{args.servers} server process(es); rollouts per level = {args.rounds:g} x concurrency (min 10); "
          f"median of {args.repeats}")
    print(f"{'concurrency':>11} {'executor':>18} {'rollouts/s':>11} {'ideal':>8} {'ratio':>6} {'failed':>6}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for c in args.levels:
                n = max(10, int(args.rounds * c))
                ideal = c / (args.latency * calls)
                variants = [("local", 1)] + [("process", w) for w in args.workers if c in args.multi_levels]
                for executor, workers in variants:
                    rates, bad = [], 0
                    for _ in range(args.repeats):
                        rate, failed = asyncio.run(measure(base_url, Path(tmp), executor, workers, c, n, tasks))
                        rates.append(rate)
                        bad += failed
                    rate = statistics.median(rates)
                    label = "local (1 process)" if executor == "local" else f"process x{workers}"
                    print(f"{c:>11} {label:>18} {rate:>11.1f} {ideal:>8.1f} {rate / ideal:>6.2f} {bad:>6}")
                    sys.stdout.flush()
    finally:
        for proc in servers:
            proc.terminate()
            proc.join(5)


if __name__ == "__main__":
    main()
