"""A small, bounded HTTP/1.1 load generator, run in its own process: `python -m bench.loadgen ...`.

Two shapes `wrk` cannot do:
- open loop at a fixed rate (wrk2-style): request i is due at start + i/rate and its latency is
  counted from that due time, so a stalled server is charged for the requests queued behind it
  (no coordinated omission);
- streams: the arrival time of every SSE event, for time to first event, gaps and stalls.

Raw asyncio protocols on uvloop with pre-built request bytes, so that the generator costs as little
CPU as possible on the shared cores. Bounded: a duration and a hard request cap; prints one JSON
object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from urllib.parse import urlsplit

__all__ = ["main"]

_now = time.perf_counter


class _Result:
    __slots__ = ("done", "due", "events", "status")

    def __init__(self, due: float) -> None:
        self.due = due
        self.status = 0
        self.done = 0.0
        self.events: list[float] = []


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time; parses Content-Length and chunked bodies."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future[None] | None = None
        self.result: _Result | None = None
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.head_done = False
        self.length = -1
        self.chunked = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def send(self, data: bytes, result: _Result) -> asyncio.Future[None]:
        assert self.transport is not None
        self._reset()
        self.result = result
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").lower()
            del self.buf[:end + 4]
            self.head_done = True
            assert self.result is not None
            self.result.status = int(head[9:12])
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
        if self.chunked:
            self._chunks()
        elif self.length >= 0 and len(self.buf) >= self.length:
            self._events(bytes(self.buf[:self.length]))
            self._finish()

    def _chunks(self) -> None:
        while True:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
            if len(self.buf) < line_end + 2 + size + 2:
                return
            payload = bytes(self.buf[line_end + 2:line_end + 2 + size])
            del self.buf[:line_end + 2 + size + 2]
            if size == 0:
                self._finish()
                return
            self._events(payload)

    def _events(self, payload: bytes) -> None:
        if not self.stream or self.result is None:
            return
        joined = self.tail + payload
        found = joined.count(b"data: ") - self.tail.count(b"data: ")
        self.tail = joined[-5:]
        t = _now()
        self.result.events.extend([t] * found)

    def _finish(self) -> None:
        assert self.result is not None and self.waiter is not None
        self.result.done = _now()
        if not self.waiter.done():
            self.waiter.set_result(None)


def _request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {parts.netloc}", "content-type: application/json",
             f"content-length: {len(body)}", *headers, "", ""]
    return parts.hostname or "127.0.0.1", parts.port or 80, "\r\n".join(lines).encode() + body


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        with open(args.body_file, "rb") as f:
            body = f.read()
        self.host, self.port, self.payload = _request(args.url, body, args.header or [])
        # `__N__` in the body becomes a per-request counter: distinct inputs defeat any cache.
        self.template = (body, args.header or []) if b"__N__" in body else None
        self.counter = 0
        self.args = args
        self.results: list[_Result] = []
        self.errors = 0
        self.idle: deque[_Conn] = deque()
        self.open_conns = 0
        self.slots = 0

    def _payload(self) -> bytes:
        if self.template is None:
            return self.payload
        self.counter += 1
        body = self.template[0].replace(b"__N__", str(self.counter).encode())
        return _request(self.args.url, body, self.template[1])[2]

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: _Conn(self.args.stream), self.host, self.port)
        self.open_conns += 1
        return proto

    async def _one(self, conn: _Conn | None, result: _Result) -> _Conn | None:
        try:
            if conn is None or conn.closed.done():
                conn = await self._connect()
            await asyncio.wait_for(conn.send(self._payload(), result), self.args.timeout)
            self.results.append(result)
            return conn
        except (TimeoutError, OSError, ConnectionError):
            self.errors += 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            return None

    async def closed_loop(self) -> None:
        deadline = _now() + self.args.duration

        async def worker() -> None:
            conn: _Conn | None = None
            while _now() < deadline and len(self.results) + self.errors < self.args.max_requests:
                conn = await self._one(conn, _Result(_now()))
            if conn is not None and conn.transport is not None:
                conn.transport.close()

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))

    async def open_loop(self) -> None:
        total = min(int(self.args.rate * self.args.duration), self.args.max_requests)
        start = _now() + 0.05
        backlog: deque[_Result] = deque()
        tasks: set[asyncio.Task[None]] = set()

        async def serve(conn: _Conn | None, result: _Result) -> None:
            while True:
                conn = await self._one(conn, result)
                if not backlog:
                    break
                result = backlog.popleft()
            if conn is not None:
                self.idle.append(conn)
            else:
                self.slots -= 1  # the connection died: its slot may be opened again

        for i in range(total):
            due = start + i / self.args.rate
            delay = due - _now()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            result = _Result(due)
            if self.idle:
                conn: _Conn | None = self.idle.popleft()
            elif self.slots < self.args.max_conns:
                conn, self.slots = None, self.slots + 1
            else:
                backlog.append(result)
                continue
            task = asyncio.create_task(serve(conn, result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def summarise(r: Runner, elapsed: float) -> dict[str, object]:
    ok = [x for x in r.results if x.status == 200]
    lat = [(x.done - x.due) * 1000 for x in ok]
    statuses: dict[str, int] = {}
    for x in r.results:
        statuses[str(x.status)] = statuses.get(str(x.status), 0) + 1
    out: dict[str, object] = {
        "requests": len(r.results), "ok": len(ok), "errors": r.errors, "statuses": statuses,
        "elapsed_s": round(elapsed, 3), "rate": round(len(ok) / elapsed, 1) if elapsed else 0,
        "latency_ms": _dist(lat),
        "connections": r.open_conns,
    }
    if r.args.stream:
        ttft = [(x.events[0] - x.due) * 1000 for x in ok if x.events]
        gaps = [(b - a) * 1000 for x in ok for a, b in zip(x.events, x.events[1:], strict=False)]
        stall_ms = r.args.stall_ms
        out["ttft_ms"] = {f"p{p}": _round(_pct(ttft, p)) for p in (50, 90, 99)}
        out["gap_ms"] = _dist(gaps)
        out["stalls"] = sum(1 for g in gaps if g > stall_ms)
        out["stall_threshold_ms"] = stall_ms
        out["events_per_stream"] = _round(sum(len(x.events) for x in ok) / len(ok)) if ok else 0
    return out


def _dist(values: list[float]) -> dict[str, float | None]:
    out = {f"p{p}": _round(_pct(values, p)) for p in (50, 90, 99, 99.9)}
    out["max"] = _round(max(values, default=None))
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    runner = Runner(args)
    t0 = _now()
    await (runner.open_loop() if args.rate else runner.closed_loop())
    elapsed = _now() - t0
    if args.trace:
        with open(args.trace, "w") as out:
            # Streams add every event's arrival (ms after the due time): where in a stream a stall is.
            out.writelines(f"{x.due - t0:.4f} {x.status} {(x.done - x.due) * 1000:.3f}"
                           + "".join(f" {(e - x.due) * 1000:.1f}" for e in x.events) + "\n"
                           for x in runner.results)
    return summarise(runner, elapsed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="bounded HTTP/1.1 load generator (127.0.0.1 only)")
    p.add_argument("--url", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append")
    p.add_argument("--rate", type=float, default=0.0, help="open loop at this many requests/s")
    p.add_argument("--concurrency", type=int, default=1, help="closed loop with this many connections")
    p.add_argument("--max-conns", type=int, default=512)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--stall-ms", type=float, default=250.0)
    p.add_argument("--trace", help="also write each request's due time (s from start), status and latency (ms)"
                   " to this file, one per line: where a high percentile comes from")
    args = p.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("loads go to 127.0.0.1 only")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
