"""Peers lane: LiteLLM proxy and the Portkey gateway next to the full pipeline, in one run, against
one simulator, with the same request and the same wrk load (c=1 latency, c=64 maximum rate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lane_overhead import measure_target, targets
from bench.peers import Peer, start_litellm, start_portkey
from bench.stack import MODEL, start_stack

__all__ = ["run"]

PIPELINE_FEATURES = ("API key (hashed lookup in the sidecar's snapshot), scopes, IP ranges, rate limits "
                     "(key/project/org; org plan raised so they never throttle), idempotency gate, money "
                     "hold in the database before the call, settlement + usage record + outbox event "
                     "committed before the last byte")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


async def run(quick: bool) -> dict[str, Any]:
    duration = 4.0 if quick else 10.0
    stack = await start_stack(platform=True)
    peers: list[Peer] = []
    try:
        work = Path(stack.tmp.name)
        starters: list[Callable[[], Peer]] = [
            lambda: start_litellm(stack.sim.url, stack.sim.api_key, MODEL, work),
            lambda: start_portkey(stack.sim.url, stack.sim.api_key, work)]
        for start in starters:
            try:
                peers.append(start())
            except Exception as exc:  # a peer that cannot start is reported, not fatal
                print(f"  peer failed to start: {exc}", flush=True)
        pids = stack.pids()
        for peer in peers:
            pids |= peer.pids()
        all_targets = targets(stack) | {p.name: (p.url, p.headers) for p in peers}
        results = {name: measure_target(name, url, headers, pids, duration)
                   for name, (url, headers) in all_targets.items()}
        ours = results["pipeline"]
        ratios = {}
        for peer in peers:
            theirs = results[peer.name]
            added_ours = ours["c1"]["p50"] - results["direct"]["c1"]["p50"]
            added_theirs = theirs["c1"]["p50"] - results["direct"]["c1"]["p50"]
            ratios[peer.name] = {
                "max_rate_ours_over_theirs": _ratio(ours["max_rate"]["rate"], theirs["max_rate"]["rate"]),
                "added_p50_theirs_over_ours": _ratio(added_theirs, added_ours),
                "p99_c1_theirs_over_ours": _ratio(theirs["c1"]["p99"], ours["c1"]["p99"])}
        features = {"pipeline": PIPELINE_FEATURES} | {p.name: p.features for p in peers}
        versions = {p.name: p.version for p in peers}
        return {"duration_s": duration, "targets": results, "ratios": ratios, "features": features,
                "versions": versions, "pids": pids}
    finally:
        for peer in peers:
            peer.stop()
        await stack.stop()
