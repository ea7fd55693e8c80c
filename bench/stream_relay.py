"""What relaying a streamed chat completion costs the adapter: `python -m bench.stream_relay`.

Starts the bench stack (provider simulator + the full platform, `bench/stack.py`) and runs bounded,
closed-loop batches of streamed chat completions, each through the pipeline and direct to the
simulator:

- CPU: 300 streams at 16 in flight with 32 text chunks, then the same with 2 chunks. The adapter's
  utime+stime (`/proc/<pid>/stat`) per stream, and per chunk as the difference of the two runs
  divided by the difference in chunks, so the per-stream fixed cost (set-up, settlement) does not
  leak into the per-chunk figure.
- latency: 12 streams one at a time, 160 at 16 in flight, then ~512 at 256 in flight, at the lane's pace (first byte
  5 ms, 16 chunks 25 ms apart): time to first event (TTFT) added vs direct, inter-event gaps, and the
  last gap (the final bytes, released only after the settlement commit) reported on its own so a
  stall there is told apart from a stall in the relay.

Loads run in a child process (this module with `--client`, on bench/loadgen.py's connections), so
the generator's CPU is not the adapter's. Bounded: request caps and a 25 s deadline per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.gate import wait_quiet
from bench.stack import MODEL, Stack, start_stack
from bench.tools import BENCH, chat_body, cpu_seconds

__all__ = ["main"]

FIRST_BYTE_MS = 5
CHUNK_MS = 25
STALL_MS = 10 * CHUNK_MS
LEVELS = ((1, 12), (16, 160), (256, 256))
"""(streams in flight, streams): a closed loop overshoots its cap by up to the concurrency."""


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)


def _client(args: argparse.Namespace) -> None:
    """Child process: one closed-loop batch; prints a JSON summary with the last gap split out."""
    from bench import loadgen

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ns = argparse.Namespace(url=args.url, body_file=args.body_file, header=args.header, rate=0.0,
                            concurrency=args.concurrency, max_conns=512, duration=25.0,
                            max_requests=args.max_streams, timeout=30.0, stream=True, stall_ms=STALL_MS)
    runner = loadgen.Runner(ns)
    t0 = time.perf_counter()
    asyncio.run(runner.closed_loop())
    wall = time.perf_counter() - t0
    ok = [r for r in runner.results if r.status == 200 and r.events]
    ttft = [(r.events[0] - r.due) * 1000 for r in ok]
    gaps = [(b - a) * 1000 for r in ok for a, b in zip(r.events[:-1], r.events[1:-1], strict=False)]
    last = [(r.events[-1] - r.events[-2]) * 1000 for r in ok if len(r.events) > 1]
    out = {"streams": len(runner.results), "ok": len(ok), "errors": runner.errors,
           "events": sum(len(r.events) for r in ok), "wall_s": round(wall, 2),
           "ttft_ms": {"p50": _pct(ttft, 50), "p99": _pct(ttft, 99), "max": _pct(ttft, 100)},
           "gap_ms": {"p50": _pct(gaps, 50), "p99": _pct(gaps, 99), "max": _pct(gaps, 100)},
           "last_gap_ms": {"p50": _pct(last, 50), "p99": _pct(last, 99), "max": _pct(last, 100)},
           "stalls": sum(g > STALL_MS for g in gaps), "last_stalls": sum(g > STALL_MS for g in last)}
    print(json.dumps(out))


def _batch(url: str, headers: dict[str, str], body: Path, concurrency: int, streams: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.stream_relay", "--client", "--url", url, "--body-file", str(body),
            "--concurrency", str(concurrency), "--max-streams", str(streams)]
    argv += [a for k, v in headers.items() for a in ("--header", f"{k}: {v}")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=BENCH.parent,
                         env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _adapter_pid(stack: Stack) -> int:
    return next(pid for name, pid in stack.pids().items() if name.startswith("adapter"))


def _idle_rate(pid: int, seconds: float = 2.0) -> float:
    """CPU seconds per second the adapter spends with no request (config polling, timers): taken
    off every figure below, so a longer batch is not charged for its extra idle time."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after = cpu_seconds(pid)
    assert before is not None and after is not None
    return (after - before) / (time.monotonic() - t0)


def _measured(pid: int, idle: float, url: str, headers: dict[str, str], body: Path, concurrency: int,
              streams: int) -> dict[str, Any]:
    before, t0 = cpu_seconds(pid), time.monotonic()
    r = _batch(url, headers, body, concurrency, streams)
    after, wall = cpu_seconds(pid), time.monotonic() - t0
    assert before is not None and after is not None
    busy = max(0.0, after - before - idle * wall)
    r["adapter_cpu_s"] = round(busy, 3)
    r["adapter_us_per_stream"] = round(busy / max(1, r["ok"]) * 1e6, 1)
    return r


async def _run() -> dict[str, Any]:
    stack = await start_stack(platform=True)
    try:
        assert stack.platform is not None
        pipe = (f"{stack.platform.edge}/v1/chat/completions", {"authorization": f"Bearer {stack.key}"})
        direct = (f"{stack.sim.url}/v1/chat/completions", {"authorization": f"Bearer {stack.sim.api_key}"})
        paced = chat_body(MODEL, stream=True, first_byte_ms=FIRST_BYTE_MS, chunk_ms=CHUNK_MS, chunks=16,
                          max_tokens=64)
        _batch(*pipe, paced, 8, 32)  # warm up connections, caches and the key
        gate = wait_quiet(max_wait=5)
        pid = _adapter_pid(stack)
        idle = _idle_rate(pid)
        # chunk_ms=5 keeps these batches short; each chunk still reaches the adapter on its own.
        long, short = (_measured(pid, idle, *pipe, chat_body(MODEL, stream=True, first_byte_ms=FIRST_BYTE_MS,
                                                             chunk_ms=5, chunks=n, max_tokens=64), 16, 300)
                       for n in (32, 2))
        extra_events = long["events"] / max(1, long["ok"]) - short["events"] / max(1, short["ok"])
        per_chunk = (long["adapter_us_per_stream"] - short["adapter_us_per_stream"]) / max(1.0, extra_events)
        out: dict[str, Any] = {"gate": gate, "adapter_idle_cores": round(idle, 4), "cpu_32_chunks": long,
                               "cpu_2_chunks": short, "adapter_us_per_chunk": round(per_chunk, 1)}
        for level, streams in LEVELS:
            p = _measured(pid, idle, *pipe, paced, level, streams)
            d = _batch(*direct, paced, level, streams)
            added = None if p["ttft_ms"]["p50"] is None or d["ttft_ms"]["p50"] is None \
                else round(p["ttft_ms"]["p50"] - d["ttft_ms"]["p50"], 3)
            out[f"c{level}"] = {"pipeline": p, "direct": d, "added_ttft_p50_ms": added}
        return out
    finally:
        await stack.stop()


def _print(r: dict[str, Any]) -> None:
    print(f"adapter CPU: {r['cpu_32_chunks']['adapter_us_per_stream']:.0f} us/stream (32 chunks), "
          f"{r['cpu_2_chunks']['adapter_us_per_stream']:.0f} us/stream (2 chunks), "
          f"{r['adapter_us_per_chunk']:.1f} us per extra chunk")
    for level in (f"c{n}" for n, _ in LEVELS):
        for name in ("direct", "pipeline"):
            x = r[level][name]
            print(f"{level:>4} {name:8s} ok {x['ok']}/{x['streams']} ttft p50 {x['ttft_ms']['p50']} "
                  f"p99 {x['ttft_ms']['p99']} | gap p50 {x['gap_ms']['p50']} p99 {x['gap_ms']['p99']} "
                  f"max {x['gap_ms']['max']} | last gap p50 {x['last_gap_ms']['p50']} "
                  f"max {x['last_gap_ms']['max']} | stalls {x['stalls']}+{x['last_stalls']} (last)")
        print(f"{level:>4} added TTFT p50 {r[level]['added_ttft_p50_ms']} ms; adapter "
              f"{r[level]['pipeline']['adapter_us_per_stream']:.0f} us/stream")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="adapter stream relay cost (127.0.0.1 only, bounded)")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--body-file")
    p.add_argument("--header", action="append")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-streams", type=int, default=300)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = p.parse_args(argv)
    if args.client:
        _client(args)
        return
    t0 = time.monotonic()
    result = asyncio.run(_run())
    result["wall_s"] = round(time.monotonic() - t0, 1)
    _print(result)
    print(f"wall {result['wall_s']} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
