"""Streaming lane: time to first event, inter-event gaps and stalls at 1, 64 and 256 concurrent
streams, direct to the simulator, through plain Envoy and through the full pipeline.

The simulator paces events at `CHUNK_MS`; a stall is a gap over 10x that pace. Each stream is a
closed loop: a connection opens the next stream as soon as its last one ended.
"""

from __future__ import annotations

from typing import Any

from bench.gate import Meter, wait_quiet
from bench.lane_overhead import targets
from bench.stack import MODEL, start_stack
from bench.tools import chat_body, loadgen

__all__ = ["CHUNKS", "CHUNK_MS", "FIRST_BYTE_MS", "run"]

FIRST_BYTE_MS = 5
CHUNK_MS = 25
CHUNKS = 16
STALL_MS = 10 * CHUNK_MS
CONCURRENCY = (1, 64, 256)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


async def run(quick: bool) -> dict[str, Any]:
    duration = 4.0 if quick else 10.0
    body = chat_body(MODEL, stream=True, first_byte_ms=FIRST_BYTE_MS, chunk_ms=CHUNK_MS, chunks=CHUNKS,
                     max_tokens=64)
    stack = await start_stack(plain_envoy=True, platform=True)
    try:
        pids = stack.pids()
        results: dict[str, dict[str, Any]] = {}
        for name, (url, headers) in targets(stack).items():
            results[name] = {}
            loadgen(url, body, headers, duration=1, concurrency=2, stream=True)  # warm up
            for c in CONCURRENCY:
                gate = wait_quiet()
                with Meter(pids) as meter:
                    r = loadgen(url, body, headers, duration=duration, concurrency=c, stream=True,
                                stall_ms=STALL_MS)
                r["cpu"], r["gate"] = meter.result, gate
                results[name][str(c)] = r
                print(f"  {name:12s} c={c:3d}: {r['rate']:.0f} streams/s ttft p50 {r['ttft_ms']['p50']} "
                      f"p99 {r['ttft_ms']['p99']} | gap p50 {r['gap_ms']['p50']} p99 {r['gap_ms']['p99']} "
                      f"max {r['gap_ms']['max']} | stalls {r['stalls']} | statuses {r['statuses']} "
                      f"errors {r['errors']}", flush=True)
        summary: dict[str, Any] = {}
        for name in results:
            if name == "direct":
                continue
            summary[name] = {}
            for level in map(str, CONCURRENCY):
                t, d = results[name][level], results["direct"][level]
                summary[name][level] = {
                    "added_ttft_p50_ms": _delta(t["ttft_ms"]["p50"], d["ttft_ms"]["p50"]),
                    "added_ttft_p99_ms": _delta(t["ttft_ms"]["p99"], d["ttft_ms"]["p99"]),
                    "gap_p99_ms": t["gap_ms"]["p99"], "gap_max_ms": t["gap_ms"]["max"],
                    "stalls": t["stalls"], "direct_stalls": d["stalls"], "streams_per_s": t["rate"],
                    "failed": t["requests"] - t["ok"] + t["errors"]}
        return {"first_byte_ms": FIRST_BYTE_MS, "chunk_ms": CHUNK_MS, "chunks": CHUNKS,
                "stall_threshold_ms": STALL_MS, "duration_s": duration, "targets": results,
                "summary": summary, "pids": pids}
    finally:
        await stack.stop()
