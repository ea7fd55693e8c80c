"""Failover lane: success rate and added latency with one of two targets failing, side by side with
LiteLLM's router and Portkey's fallback config, on the same simulator (docs/routing.md).

Scenarios, each at a fixed rate (open loop, bench/loadgen.py), for every system:
- `healthy`: two healthy targets (the baseline);
- `status500`: one target answers 500 to everything (a `[[sim model=... status=500]]` directive);
- `connect_refused`: one target's address refuses connections.
Ours: route groups with both targets at one priority (weighted 1:1), passive health on.
LiteLLM: one model group with two deployments, `num_retries: 2` (its router retries on another
deployment), cool-down after failures. Portkey: a `fallback` strategy config (bad target first).
Added latency is each system's p50/p99 in a scenario minus its own in `healthy`. Each measurement
follows 2 s of closed-loop warm-up on the same scenario (so a health check's first ejection, and
a peer's cold start, are outside the measured window; the success rate counts what follows).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from bench.peers import MASTER_KEY, _wait, ensure_litellm, ensure_portkey
from bench.stack import start_stack
from bench.tools import loadgen
from tests.harness import free_port

__all__ = ["run"]

RATE = 10
"""Requests per second: low enough that no gateway here is saturated (LiteLLM queues at 40/s on 2
shared cores), so added latency is failover, not queueing."""
UPSTREAM_MS = 5
GOOD, BAD = "sim-chat-upstream", "fo-bad500"
SCENARIOS = ("healthy", "status500", "connect_refused")


def _body(work: Path, model: str) -> Path:
    directive = f"[[sim first_byte_ms={UPSTREAM_MS} chunks=8]] [[sim model={BAD} status=500]]"
    path = work / f"failover-{model.replace('/', '_')}.json"
    path.write_text(json.dumps({"model": model, "max_tokens": 32,
                                "messages": [{"role": "user", "content": f"Say something short. {directive}"}]}))
    return path


def _measure(url: str, body: Path, headers: dict[str, str], duration: float) -> dict[str, Any]:
    loadgen(url, body, headers, duration=2.0, concurrency=2)  # warm: connections, caches, cool-downs
    r = loadgen(url, body, headers, duration=duration, rate=RATE)
    ok, sent = r["ok"], r["requests"] + r["errors"]
    return {"requests": sent, "success_rate": round(ok / max(1, sent), 4),
            "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"], "statuses": r["statuses"]}


async def _ours(stack: Any, dead: str) -> dict[str, str]:
    """Route groups per scenario; returns scenario -> public model name."""
    assert stack.platform is not None
    async with stack.platform.admin() as a:
        r = await a.post("/api/backends", json={"id": "fo_dead", "protocol": "openai", "base_url": f"{dead}/v1",
                                                "connect_timeout_ms": 500, "timeout_ms": 5000})
        assert r.status_code == 201, r.text
        price = {"input_nanos_per_mtok": 1_000_000_000, "cached_input_nanos_per_mtok": 500_000_000,
                 "output_nanos_per_mtok": 2_000_000_000}
        for model_id, backend, upstream in (("fo/good2", "sim", GOOD), ("fo/bad", "sim", BAD),
                                            ("fo/dead", "fo_dead", GOOD)):
            r = await a.post("/api/models", json={
                "id": model_id, "display_name": model_id, "backend": backend, "upstream_name": upstream,
                "kind": "text", "context_window": 8192, "max_output_tokens": 1024, "price": price})
            assert r.status_code == 201, r.text
        groups = {"healthy": ["sim/chat", "fo/good2"], "status500": ["fo/bad", "sim/chat"],
                  "connect_refused": ["fo/dead", "sim/chat"]}
        for name, targets in groups.items():
            r = await a.put(f"/api/routes/fo-{name.replace('_', '-')}",
                            json={"targets": [{"model": t} for t in targets]})
            assert r.status_code == 200, r.text
    return {name: f"fo-{name.replace('_', '-')}" for name in SCENARIOS}


def _litellm(sim: Any, dead: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = ensure_litellm()
    port = free_port()
    deployments = {"healthy": [(sim.url, GOOD), (sim.url, GOOD)], "status500": [(sim.url, BAD), (sim.url, GOOD)],
                   "connect_refused": [(dead, GOOD), (sim.url, GOOD)]}
    lines = ["model_list:"]
    for name, pairs in deployments.items():
        for base, upstream in pairs:
            lines += [f"  - model_name: fo-{name}", "    litellm_params:", f"      model: openai/{upstream}",
                      f"      api_base: {base}/v1", f"      api_key: {sim.api_key}", "      timeout: 5"]
    lines += ["router_settings:", "  routing_strategy: simple-shuffle", "  num_retries: 2", "  allowed_fails: 3",
              "  cooldown_time: 5", "general_settings:", f"  master_key: {MASTER_KEY}",
              "litellm_settings:", "  drop_params: true", "  num_retries: 2"]
    config = work / "litellm-failover.yaml"
    config.write_text("\n".join(lines) + "\n")
    log = work / "litellm-failover.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "2"], env=env, cwd=work, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    _wait(proc, f"http://127.0.0.1:{port}/health/liveliness", log)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def _portkey_config(sim: Any, dead: str, scenario: str) -> str:
    first = {"healthy": (sim.url, GOOD), "status500": (sim.url, BAD), "connect_refused": (dead, GOOD)}[scenario]
    targets = [{"provider": "openai", "api_key": sim.api_key, "custom_host": f"{base}/v1",
                "override_params": {"model": model}} for base, model in (first, (sim.url, GOOD))]
    return json.dumps({"strategy": {"mode": "fallback"}, "targets": targets})


def _portkey(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    script = ensure_portkey()
    port = free_port()
    log = work / "portkey-failover.log"
    proc = subprocess.Popen(["node", str(script), f"--port={port}", "--headless"], cwd=work,
                            env={**os.environ, "NODE_ENV": "production"}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    _wait(proc, f"http://127.0.0.1:{port}/", log)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def _added(rows: dict[str, dict[str, Any]]) -> None:
    base = rows.get("healthy")
    for row in rows.values():
        if base and row.get("p50_ms") is not None and base.get("p50_ms") is not None:
            row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
            row["added_p99_ms"] = round(row["p99_ms"] - base["p99_ms"], 3)


async def run(quick: bool) -> dict[str, Any]:
    duration = 5.0 if quick else 15.0
    stack = await start_stack(platform=True)
    procs: list[subprocess.Popen[bytes]] = []
    dead = f"http://127.0.0.1:{free_port()}"
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        work = Path(stack.tmp.name)
        names = await _ours(stack, dead)
        assert stack.platform is not None
        ours = {}
        for scenario in SCENARIOS:
            ours[scenario] = _measure(f"{stack.platform.edge}/v1/chat/completions", _body(work, names[scenario]),
                                      {"authorization": f"Bearer {stack.key}"}, duration)
            print(f"  pipeline {scenario:16s} {ours[scenario]}", flush=True)
        results["pipeline"] = ours
        try:
            proc, url = _litellm(stack.sim, dead, work)
            procs.append(proc)
            theirs = {}
            for scenario in SCENARIOS:
                theirs[scenario] = _measure(url, _body(work, f"fo-{scenario}"),
                                            {"authorization": f"Bearer {MASTER_KEY}"}, duration)
                print(f"  litellm  {scenario:16s} {theirs[scenario]}", flush=True)
            results["litellm"] = theirs
        except Exception as exc:  # a peer that cannot start is reported, not fatal
            print(f"  litellm failed: {exc}", flush=True)
        try:
            proc, url = _portkey(work)
            procs.append(proc)
            theirs = {}
            for scenario in SCENARIOS:
                headers = {"x-portkey-config": _portkey_config(stack.sim, dead, scenario)}
                theirs[scenario] = _measure(url, _body(work, GOOD), headers, duration)
                print(f"  portkey  {scenario:16s} {theirs[scenario]}", flush=True)
            results["portkey"] = theirs
        except (Exception, httpx.HTTPError) as exc:
            print(f"  portkey failed: {exc}", flush=True)
        for rows in results.values():
            _added(rows)
        return {"duration_s": duration, "rate_per_s": RATE, "upstream_ms": UPSTREAM_MS, "results": results,
                "pids": stack.pids()}
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await stack.stop()
