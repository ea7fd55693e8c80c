"""Observability lane: the full pipeline's hot path with its metrics and traces off, with metrics
(the default), and with metrics and traces to a local OTLP receiver, sampled at 10 % and at 100 %,
in one run.

Each configuration is a fresh platform measured as the overhead lane measures the pipeline (c=1
latency, closed-loop maximum rate at c=64, CPU per request); the rounds alternate the order
(off, metrics, traces, then the reverse) so a drift of the shared machine does not fall on one
configuration, and the summary compares each configuration's mean with "off". Issue 19's goal: under
5 % of throughput and 0.2 ms at p50.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench.lane_overhead import measure_target, targets
from bench.observability_hooks import measure
from bench.stack import start_stack
from tests.observability.otlp import Receiver

__all__ = ["CONFIGS", "run"]

CONFIGS = ("off", "metrics", "traces_10pct", "traces_100pct")


def _env(config: str, receiver: Receiver) -> dict[str, str]:
    if config == "off":
        return {"NX_METRICS_ENABLED": "false"}
    if config == "metrics":
        return {}
    ratio = "0.1" if config == "traces_10pct" else "1.0"
    return {"NX_OTEL_ENDPOINT": receiver.url, "NX_TRACE_SAMPLE_RATIO": ratio}


async def _measure(config: str, receiver: Receiver, duration: float) -> dict[str, Any]:
    stack = await start_stack(platform=True, extra_env=_env(config, receiver))
    try:
        url, headers = targets(stack)["pipeline"]
        return measure_target(config, url, headers, stack.pids(), duration)
    finally:
        await stack.stop()


def _platform_cpu(result: dict[str, Any]) -> float:
    """CPU microseconds per request of the platform's processes at c=64 (the simulator left out):
    steadier than the rate on a shared machine, since it does not depend on what else runs."""
    return float(sum(v for k, v in result["max_rate"]["cpu_us_per_request"].items() if k != "simulator"))


async def run(quick: bool) -> dict[str, Any]:
    duration = 4.0 if quick else 8.0
    rounds = (CONFIGS, tuple(reversed(CONFIGS)))
    receiver = Receiver().start()
    measured: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    try:
        for order in rounds:
            for config in order:
                measured[config].append(await _measure(config, receiver, duration))
        spans = len(receiver.spans)
    finally:
        receiver.stop()
    means = {c: {"cpu_us": statistics.fmean(_platform_cpu(r) for r in runs),
                 "p50_ms": statistics.fmean(r["c1"]["p50"] for r in runs),
                 "p99_ms": statistics.fmean(r["c1"]["p99"] for r in runs),
                 "rate": statistics.fmean(r["max_rate"]["rate"] for r in runs)} for c, runs in measured.items()}
    off = means["off"]
    summary = {c: {"added_p50_ms": round(m["p50_ms"] - off["p50_ms"], 3),
                   "added_p99_ms": round(m["p99_ms"] - off["p99_ms"], 3),
                   "throughput_change_pct": round(100 * (m["rate"] / off["rate"] - 1), 2),
                   "cpu_us_per_request": round(m["cpu_us"], 1),
                   "cpu_change_pct": round(100 * (m["cpu_us"] / off["cpu_us"] - 1), 2),
                   "p50_ms": round(m["p50_ms"], 3), "rate": round(m["rate"], 1)} for c, m in means.items()}
    for c, s in summary.items():
        print(f"  {c:15s} p50 {s['p50_ms']:.3f} ms (added {s['added_p50_ms']:+.3f}) | {s['rate']:.0f} req/s "
              f"({s['throughput_change_pct']:+.1f} %) | {s['cpu_us_per_request']:.0f} us CPU/request "
              f"({s['cpu_change_pct']:+.1f} %)", flush=True)
    # The hooks' own CPU, in process (bench/observability_hooks.py; it runs its own event loop).
    hooks = await asyncio.to_thread(measure)
    for c, parts in hooks.items():
        print(f"  hooks {c:20s} {parts['total']:.1f} us CPU/request {parts}", flush=True)
    return {"duration_s": duration, "rounds": [list(r) for r in rounds], "targets": measured,
            "summary": summary, "spans_received": spans, "hooks_cpu_us": hooks,
            "goal": {"throughput_loss_pct_max": 5.0, "added_p50_ms_max": 0.2}}
