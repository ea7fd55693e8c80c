"""Memory lane: resident memory (VmRSS from /proc) of every process idle, at the frontier rate, and
after load (idle again), with non-streaming and streaming load.

The frontier rate is taken from today's overhead result when there is one, else `DEFAULT_RATE`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from bench.lane_overhead import UPSTREAM_MS, targets
from bench.lane_streaming import CHUNK_MS, CHUNKS
from bench.stack import MODEL, start_stack
from bench.tools import RESULTS, chat_body, loadgen, rss_mb

__all__ = ["run"]

DEFAULT_RATE = 100


def _frontier_rate() -> tuple[int, str]:
    """The day's frontier; when no rate met the limit, half the measured maximum (a rate the
    pipeline sustains, so memory is read under load rather than under a growing queue)."""
    found = sorted(RESULTS.glob("*-overhead.json"))
    if found:
        summary = json.loads(found[-1].read_text()).get("summary", {})
        if summary.get("frontier_rate"):
            return int(summary["frontier_rate"]), "frontier"
        top = summary.get("max_rate", {}).get("pipeline")
        if top:
            return max(10, int(top / 2)), "half the maximum rate (no rate met the frontier's limit)"
    return DEFAULT_RATE, "default"


def _rss(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: rss_mb(pid) for name, pid in pids.items()}


def _peak_during(pids: dict[str, int], work: Any) -> tuple[Any, dict[str, float | None]]:
    """Run `work()` while sampling RSS every 0.25 s; returns its result and each process's peak."""
    peak: dict[str, float | None] = dict.fromkeys(pids)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, value in _rss(pids).items():
                if value is not None and (peak[name] is None or value > (peak[name] or 0)):
                    peak[name] = value
            time.sleep(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = work()
    finally:
        stop.set()
        thread.join()
    return result, peak


async def run(quick: bool) -> dict[str, Any]:
    duration = 8.0 if quick else 30.0
    rate, why = _frontier_rate()
    stack = await start_stack(platform=True)
    try:
        pids = {k: v for k, v in stack.pids().items() if k != "simulator"} | {"simulator": stack.sim.proc.pid}  # type: ignore[union-attr]
        url, headers = targets(stack)["pipeline"]
        await asyncio.sleep(2)
        idle = _rss(pids)
        body = chat_body(MODEL, first_byte_ms=UPSTREAM_MS)
        load, at_frontier = _peak_during(pids, lambda: loadgen(url, body, headers, duration=duration, rate=rate))
        streams = chat_body(MODEL, stream=True, first_byte_ms=UPSTREAM_MS, chunk_ms=CHUNK_MS, chunks=CHUNKS)
        sload, streaming = _peak_during(pids, lambda: loadgen(url, streams, headers, duration=duration / 2,
                                                              concurrency=256, stream=True))
        await asyncio.sleep(5)
        after = _rss(pids)
        # A second round of the same load: growth from the first "after" to this one is a leak,
        # not the allocator's high-water mark.
        again, _ = _peak_during(pids, lambda: loadgen(url, body, headers, duration=duration, rate=rate))
        await asyncio.sleep(5)
        after_second = _rss(pids)
        print(f"  rate {rate}/s: {load['rate']} req/s statuses {load['statuses']}; 256 streams: "
              f"{sload['rate']} streams/s statuses {sload['statuses']}", flush=True)
        for name in pids:
            print(f"  {name:14s} idle {idle[name]} MB, frontier peak {at_frontier[name]} MB, "
                  f"256 streams peak {streaming[name]} MB, after {after[name]} MB, "
                  f"after a second round {after_second[name]} MB", flush=True)
        return {"rate": rate, "rate_from": why, "duration_s": duration, "rss_mb": {
            name: {"idle": idle[name], "at_frontier_peak": at_frontier[name], "streams_256_peak": streaming[name],
                   "after_load": after[name], "after_second_round": after_second[name]} for name in pids},
            "load": load, "stream_load": sload, "second_load": again, "pids": pids}
    finally:
        await stack.stop()
