"""Overhead lane: the same non-streaming chat request direct, through plain Envoy, and through the
full pipeline. Added latency at concurrency 1 (wrk), maximum rate (wrk, closed loop), and the
frontier: the highest fixed rate (open loop, bench/loadgen.py) whose added p99 stays under 10 ms.
"""

from __future__ import annotations

from typing import Any

from bench.gate import Meter, wait_quiet
from bench.stack import MODEL, Stack, start_stack
from bench.stages import breakdown, scrape
from bench.tools import chat_body, loadgen, wrk

__all__ = ["UPSTREAM_MS", "measure_target", "metrics_urls", "run", "stages", "targets"]

UPSTREAM_MS = 5
"""The simulator's fixed time to answer (first_byte_ms): the same for every target."""
MAX_RATE_CONNECTIONS = 64
FRONTIER_LIMIT_MS = 10.0
RATES = (50, 100, 200, 300, 400, 600, 800, 1000, 1250, 1500, 2000, 2500, 3000, 4000)


def targets(stack: Stack) -> dict[str, tuple[str, dict[str, str]]]:
    sim_auth = {"authorization": f"Bearer {stack.sim.api_key}"}
    out = {"direct": (f"{stack.sim.url}/v1/chat/completions", sim_auth)}
    if stack.envoy is not None:
        out["plain_envoy"] = (f"{stack.envoy.url}/v1/chat/completions", sim_auth)
    if stack.platform is not None:
        out["pipeline"] = (f"{stack.platform.edge}/v1/chat/completions",
                           {"authorization": f"Bearer {stack.key}"})
    return out


def metrics_urls(stack: Stack) -> list[str]:
    """The Prometheus endpoints of the platform's sidecars and adapters."""
    assert stack.platform is not None and stack.platform.settings is not None
    s = stack.platform.settings
    return ([f"http://127.0.0.1:{p}/metrics" for p in s.sidecar_ports]
            + [f"http://127.0.0.1:{p}/metrics" for p in s.adapter_ports])


def stages(results: dict[str, Any], name: str = "pipeline") -> dict[str, Any] | None:
    """The c=1 stage breakdown of `name` (bench/stages.py), against the direct target's p50."""
    scraped = results[name]["c1"].pop("scrape", None)
    if scraped is None:
        return None
    return breakdown(scraped["before"], scraped["after"], added(results, name)["p50_ms"],
                     results["direct"]["c1"]["p50"])


def measure_target(name: str, url: str, headers: dict[str, str], pids: dict[str, int],
                   duration: float, metrics: list[str] | None = None) -> dict[str, Any]:
    """c=1 latency and the closed-loop maximum rate of one target, with CPU per request; given the
    platform's `metrics` endpoints, also their stage timings over the c=1 run (bench/stages.py)."""
    body = chat_body(MODEL, first_byte_ms=UPSTREAM_MS)
    wrk(url, body, headers, connections=4, duration=1)  # warm connections and caches
    gate1 = wait_quiet()
    before = scrape(metrics) if metrics else None
    c1 = wrk(url, body, headers, connections=1, duration=duration)
    if metrics and before is not None:
        c1["scrape"] = {"before": before, "after": scrape(metrics)}
    gate2 = wait_quiet()
    with Meter(pids) as meter:
        top = wrk(url, body, headers, connections=MAX_RATE_CONNECTIONS, duration=duration)
    top["cpu"] = meter.result
    top["cpu_us_per_request"] = meter.per_request_us(top["requests"], top["duration_us"] / 1e6)
    print(f"  {name:12s} c=1 p50 {c1['p50']:.2f} ms p99 {c1['p99']:.2f} ms | "
          f"c={MAX_RATE_CONNECTIONS} {top['rate']:.0f} req/s (errors {top['errors']}+{top['status_errors']}) "
          f"| machine {meter.result['machine_cores']} cores, other {meter.result['other_cores']}", flush=True)
    return {"c1": c1, "max_rate": top, "gates": [gate1, gate2]}


def frontier(url: str, headers: dict[str, str], baseline_p99: float, duration: float,
             max_rate: float) -> dict[str, Any]:
    """Step the fixed rate up until added p99 passes the limit, errors appear or the rate is not met."""
    body = chat_body(MODEL, first_byte_ms=UPSTREAM_MS)
    steps, best = [], 0.0
    for rate in RATES:
        if rate > max_rate * 1.3:
            break
        wait_quiet()
        r = loadgen(url, body, headers, duration=duration, rate=rate)
        p99 = r["latency_ms"]["p99"]
        added = None if p99 is None else round(p99 - baseline_p99, 3)
        ok = (added is not None and added <= FRONTIER_LIMIT_MS and r["errors"] == 0
              and r["ok"] == r["requests"] and r["rate"] >= 0.9 * rate)
        steps.append({"rate": rate, "achieved": r["rate"], "p50": r["latency_ms"]["p50"], "p99": p99,
                      "added_p99": added, "errors": r["errors"], "statuses": r["statuses"], "within": ok})
        print(f"  frontier {rate:5d}/s -> {r['rate']:.0f}/s p99 {p99} ms (added {added}) "
              f"statuses {r['statuses']} {'ok' if ok else 'OVER'}", flush=True)
        if not ok:
            break
        best = rate
    return {"limit_added_p99_ms": FRONTIER_LIMIT_MS, "baseline_p99_ms": baseline_p99, "rate": best,
            "steps": steps}


def added(results: dict[str, Any], name: str) -> dict[str, float]:
    d, t = results["direct"]["c1"], results[name]["c1"]
    return {"p50_ms": round(t["p50"] - d["p50"], 3), "p99_ms": round(t["p99"] - d["p99"], 3)}


async def run(quick: bool) -> dict[str, Any]:
    duration = 4.0 if quick else 10.0
    stack = await start_stack(plain_envoy=True, platform=True)
    try:
        pids = stack.pids()
        results: dict[str, Any] = {}
        for name, (url, headers) in targets(stack).items():
            metrics = metrics_urls(stack) if name == "pipeline" else None
            results[name] = measure_target(name, url, headers, pids, duration, metrics)
        stage_ms = stages(results)
        print(f"  stages at c=1 (ms): {stage_ms}", flush=True)
        # The frontier's baseline: the simulator's own p99 at a low fixed rate, same generator.
        url, headers = targets(stack)["direct"]
        base = loadgen(url, chat_body(MODEL, first_byte_ms=UPSTREAM_MS), headers, duration=duration, rate=50)
        url, headers = targets(stack)["pipeline"]
        front = frontier(url, headers, base["latency_ms"]["p99"], 3.0 if quick else 6.0,
                         results["pipeline"]["max_rate"]["rate"])
        summary = {
            "added_plain_envoy": added(results, "plain_envoy"), "added_pipeline": added(results, "pipeline"),
            "max_rate": {n: results[n]["max_rate"]["rate"] for n in results},
            "frontier_rate": front["rate"], "stages_c1": stage_ms,
        }
        return {"upstream_ms": UPSTREAM_MS, "duration_s": duration, "targets": results,
                "frontier": front, "frontier_baseline": base, "summary": summary, "pids": pids}
    finally:
        await stack.stop()
