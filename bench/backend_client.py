"""CPU per backend call: httpx (the adapter's client before) vs aiohttp vs proxy_plugins/adapter/http1.

    .venv/bin/python -m bench.backend_client [--requests 200] [--streams 100] [--concurrency 16] [--reps 2]

Starts the provider simulator (tests/simulator, its own process) on 127.0.0.1 and, in this process
on uvloop (as the adapter runs), sends for each client: `--requests` non-streaming chat completions
one at a time, `--requests` more with `--concurrency` in flight, and `--streams` streamed chat
completions (3 content chunks each, read event by event) one at a time. Each client is used as the
adapter uses it (pooled keep-alive connections, connect/read timeouts, a total timeout on posts,
the same headers). The figure is `time.process_time()` of this process only (the simulator's CPU is
not counted) divided by the number of calls, the minimum over `--reps` rounds (the machine is
shared: the minimum is the least disturbed round). Bounded load: 4 clients x reps x
(2 x requests + streams) calls, all to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import msgspec
import uvloop

from core.snapshot import BackendRecord
from proxy_plugins.adapter import http1
from proxy_plugins.adapter.backends import Backends, SseParser
from tests.simulator.server import SimulatorProcess

KEY_ENV = "NX_BENCH_SIM_KEY"
BODY = msgspec.json.encode({"model": "sim-chat", "messages": [{"role": "user", "content": "hello there"}]})
STREAM_BODY = msgspec.json.encode({"model": "sim-chat", "stream": True,
                                   "messages": [{"role": "user", "content": "hello there"}]})
READ, CONNECT = 30.0, 5.0


class Client:
    """post(body) -> bytes and stream(body) -> number of SSE events, as the adapter calls them."""

    name = ""

    async def post(self, body: bytes) -> bytes:
        raise NotImplementedError

    async def stream(self, body: bytes) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def _headers(stream: bool) -> dict[str, str]:
    return {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json",
            "authorization": f"Bearer {os.environ[KEY_ENV]}"}


class HttpxClient(Client):
    name = "httpx 0.28 (before)"

    def __init__(self, base: str) -> None:
        self.c = httpx.AsyncClient(
            base_url=base + "/", trust_env=False, follow_redirects=False, timeout=httpx.Timeout(READ, connect=CONNECT),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30))

    async def post(self, body: bytes) -> bytes:
        async with asyncio.timeout(READ):
            r = await self.c.post("chat/completions", content=body, headers=_headers(False))
        assert r.status_code == 200
        return r.content

    async def stream(self, body: bytes) -> int:
        req = self.c.build_request("POST", "chat/completions", content=body, headers=_headers(True))
        r = await self.c.send(req, stream=True)
        n, parser = 0, SseParser()
        try:
            async for chunk in r.aiter_bytes():
                n += len(parser.feed(chunk))
        finally:
            await r.aclose()
        return n

    async def aclose(self) -> None:
        await self.c.aclose()


try:  # not a dependency of the platform: `pip install aiohttp==3.14.5` to compare with it
    import aiohttp
except ImportError:  # pragma: no cover
    aiohttp = None


class AiohttpClient(Client):
    name = f"aiohttp {aiohttp.__version__}" if aiohttp is not None else "aiohttp"

    def __init__(self, base: str) -> None:
        self.base = base
        self.s = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT, sock_read=READ), trust_env=False)

    async def post(self, body: bytes) -> bytes:
        async with asyncio.timeout(READ), self.s.post(f"{self.base}/chat/completions", data=body,
                                                      headers=_headers(False)) as r:
            assert r.status == 200
            return await r.read()

    async def stream(self, body: bytes) -> int:
        n, parser = 0, SseParser()
        async with self.s.post(f"{self.base}/chat/completions", data=body, headers=_headers(True)) as r:
            async for chunk in r.content.iter_any():
                n += len(parser.feed(chunk))
        return n

    async def aclose(self) -> None:
        await self.s.close()


class Http1Client(Client):
    name = "http1.Pool (asyncio+httptools)"

    def __init__(self, base: str) -> None:
        self.p = http1.Pool(base, connect_timeout=CONNECT, read_timeout=READ)

    async def post(self, body: bytes) -> bytes:
        async with asyncio.timeout(READ):
            r = await self.p.request("POST", "chat/completions", body, _headers(False))
            try:
                data = await r.read()
            finally:
                r.close()
        assert r.status == 200
        return data

    async def stream(self, body: bytes) -> int:
        r = await self.p.request("POST", "chat/completions", body, _headers(True))
        n, parser = 0, SseParser()
        try:
            async for chunk in r.chunks():
                n += len(parser.feed(chunk))
        finally:
            r.close()
        return n

    async def aclose(self) -> None:
        await self.p.aclose()


class BackendsClient(Client):
    name = "Backends (adapter, on http1)"

    def __init__(self, base: str) -> None:
        self.b = Backends()
        self.rec = BackendRecord(id="sim", protocol="openai", base_url=base, api_key_env=KEY_ENV,
                                 timeout_ms=int(READ * 1000), connect_timeout_ms=int(CONNECT * 1000))

    async def post(self, body: bytes) -> bytes:
        return (await self.b.post(self.rec, "chat/completions", body)).body

    async def stream(self, body: bytes) -> int:
        n = 0
        async with self.b.stream(self.rec, "chat/completions", body) as events:
            async for _ in events:
                n += 1
        return n

    async def aclose(self) -> None:
        await self.b.aclose()


async def _cpu(n: int, run: Callable[[], Awaitable[Any]], concurrency: int = 1) -> float:
    """us of CPU per call for n calls, `concurrency` at a time."""
    async def worker(count: int) -> None:
        for _ in range(count):
            await run()

    start = time.process_time()
    share = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(worker(c) for c in share))
    return (time.process_time() - start) / n * 1e6


async def _measure(base: str, args: argparse.Namespace) -> dict[str, list[float]]:
    makers: list[Callable[[str], Client]] = [HttpxClient, AiohttpClient, Http1Client, BackendsClient]
    if aiohttp is None:
        print("aiohttp is not installed: its row is skipped (pip install aiohttp==3.14.5)")
        makers.remove(AiohttpClient)
    best: dict[str, list[float]] = {}
    for rep in range(args.reps):
        for make in makers if rep % 2 == 0 else makers[::-1]:
            client = make(base)
            try:
                for _ in range(20):  # warm up: connections open, code paths hot
                    await client.post(BODY)
                assert await client.stream(STREAM_BODY) >= 3
                row = [await _cpu(args.requests, lambda c=client: c.post(BODY)),
                       await _cpu(args.requests, lambda c=client: c.post(BODY), args.concurrency),
                       await _cpu(args.streams, lambda c=client: c.stream(STREAM_BODY))]
            finally:
                await client.aclose()
            old = best.get(client.name)
            best[client.name] = row if old is None else [min(a, b) for a, b in zip(old, row, strict=True)]
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    sim = SimulatorProcess().start()
    os.environ[KEY_ENV] = sim.api_key
    try:
        best = uvloop.run(_measure(sim.url + "/v1", args))
    finally:
        sim.stop()
    base = best[HttpxClient.name]
    print(f"us of CPU per call in the client process (min of {args.reps} rounds; ratio = httpx / this)")
    print(f"{'client':<32} {'post c=1':>14} {f'post c={args.concurrency}':>14} {'stream c=1':>14}")
    for name, row in best.items():
        cells = [f"{v:7.0f} {b / v:4.1f}x" for v, b in zip(row, base, strict=True)]
        print(f"{name:<32} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}")


if __name__ == "__main__":
    main()
