"""Sidecar CPU per ext_authz check: `python -m bench.sidecar_check [--requests N] [--connections C] [--edge]`.

Starts the platform as the lanes do (bench/stack.py) and sends a bounded number of ext_authz-shaped
requests straight to the sidecar's port (`POST /authz/v1/chat/completions`, the bench chat body, the
headers Envoy would send, a unique `req_` id each) over a few keep-alive connections. Reports the
sidecar's CPU per check (utime+stime from /proc/<pid>/stat over the run, minus its idle CPU over
the same wall time: the config_version poll) and the check's latency p50/p99.

With `--edge` the same count goes through Envoy to the simulator instead, so the sidecar's figure
also carries the adapter's `/internal/finish` reports.

The client is a few lines of asyncio over pre-built request bytes (no HTTP library), so the bench
process stays cheap next to the sidecar on a shared 2-core machine. Load is closed-loop and bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.stack import MODEL, start_stack
from bench.tools import chat_body, cpu_seconds

__all__ = ["main", "run"]


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request, read one response (content-length framed); the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def _request(path: str, port: int, key: str, body: bytes, request_id: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {key}\r\nx-nx-client-ip: 127.0.0.1\r\nx-request-id: {request_id}\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def _load(port: int, path: str, key: str, body: bytes, count: int, connections: int,
                tag: str) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_id = iter(range(count))

    async def worker() -> None:
        reader, writer = await _open(port)
        try:
            for i in next_id:
                request = _request(path, port, key, body, f"req_{tag}{i:08d}")
                t0 = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, statuses


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(requests: int, connections: int, edge: bool, profile: Path | None = None) -> dict[str, Any]:
    stack = await start_stack(platform=True)
    try:
        assert stack.platform is not None
        settings = stack.platform.s
        pid = next(p for n, p in stack.pids().items() if n.startswith("sidecar"))
        body = chat_body(MODEL).read_bytes()
        if edge:
            port, path = settings.edge_port, "/v1/chat/completions"
        else:
            port, path = settings.sidecar_port, "/authz/v1/chat/completions"
        tag = secrets.token_hex(4)
        await _load(port, path, stack.key, body, min(500, requests), connections, tag + "w")  # warm caches
        await asyncio.sleep(1.0)
        idle0, t_idle = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(3.0)
        idle1 = cpu_seconds(pid)
        assert idle0 is not None and idle1 is not None
        idle_rate = (idle1 - idle0) / (time.monotonic() - t_idle)
        spy = None
        if profile is not None:  # py-spy from bench/.venvs/tools (bench/lane_profile.py), raw stacks
            from bench.lane_profile import ensure_py_spy

            spy = subprocess.Popen([str(ensure_py_spy()), "record", "-p", str(pid), "-r", "500", "-f", "raw",
                                    "--nonblocking", "-o", str(profile)], stdout=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        latencies, statuses = await _load(port, path, stack.key, body, requests, connections, tag)
        wall = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=30)
        await asyncio.sleep(0.3 if edge else 0.0)  # the adapter's last finish reports
        cpu1 = cpu_seconds(pid)
        assert cpu0 is not None and cpu1 is not None
        raw_us = (cpu1 - cpu0) / requests * 1e6
        net_us = (cpu1 - cpu0 - idle_rate * wall) / requests * 1e6
        return {"target": "edge" if edge else "sidecar", "requests": requests, "connections": connections,
                "statuses": statuses, "rate": round(requests / wall, 1),
                "cpu_us_per_check": round(raw_us, 1), "cpu_us_per_check_net_of_idle": round(net_us, 1),
                "idle_cpu_ms_per_s": round(idle_rate * 1000, 2),
                "p50_ms": round(_quantile(latencies, 0.5), 3), "p99_ms": round(_quantile(latencies, 0.99), 3),
                "loadavg": os.getloadavg()}
    finally:
        await stack.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_check")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--edge", action="store_true", help="through Envoy and the adapter instead")
    parser.add_argument("--profile", type=Path, help="py-spy the sidecar during the run; raw stacks here")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.requests, args.connections, args.edge, args.profile))), flush=True)


if __name__ == "__main__":
    main()
