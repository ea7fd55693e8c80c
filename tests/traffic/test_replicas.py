"""Three sidecar replicas and two Envoys sharing Redis: request limits do not leak by the replica
count, and a revoked key is refused by every replica within the documented bound.

The measured figures are printed (run with -s) and recorded in docs/traffic-control.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from control_plane.envoy_config import render_bootstrap
from control_plane.supervisor import Child, _wait_healthy, envoy_binary
from core.settings import load_settings
from tests.harness import Platform, free_port, free_port_run
from tests.traffic.test_rate_limits_edge import new_key

REDIS_URL = os.environ.get("NX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REVOCATION_BOUND_S = 1.0


@pytest.fixture(scope="module")
async def replicated() -> AsyncIterator[tuple[Platform, list[str]]]:
    base = free_port_run(6)  # three sidecars, then their three access-log ports
    p = await Platform(extra_env={"REDIS_URL": REDIS_URL, "NX_SIDECAR_PROCESSES": "3",
                                  "NX_SIDECAR_PORT": str(base), "NX_SIDECAR_LOG_PORT": str(base + 3)}).start()
    # A second Envoy with its own listener and admin port, same sidecars and routes.
    env2 = {**p.env, "NX_EDGE_PORT": str(free_port()), "NX_ENVOY_ADMIN_PORT": str(free_port()),
            "NX_OPERATOR_PORT": str(free_port())}
    s2 = load_settings(env2)
    boot2 = p.s.envoy_dir / "second" / "bootstrap.json"
    boot2.parent.mkdir()
    import msgspec

    boot2.write_bytes(msgspec.json.encode(render_bootstrap(s2)))
    envoy2 = Child("envoy-2", [envoy_binary(), "-c", str(boot2), "--concurrency", "1", "--log-level", "warn",
                               "--use-dynamic-base-id"], f"http://127.0.0.1:{s2.envoy_admin_port}/ready")
    envoy2.proc = await asyncio.create_subprocess_exec(*envoy2.argv)
    await _wait_healthy(envoy2)
    try:
        yield p, [p.edge, f"http://127.0.0.1:{s2.edge_port}"]
    finally:
        envoy2.proc.terminate()
        await envoy2.proc.wait()
        await p.stop()


async def test_request_limit_holds_across_replicas(replicated: tuple[Platform, list[str]]) -> None:
    platform, edges = replicated
    limit, burst = 20, 90
    key = await new_key(platform, name="shared-limit", rate_limits={"rpm": limit})
    clients = [httpx.AsyncClient(base_url=e, headers={"authorization": f"Bearer {key}"}, timeout=30)
               for e in edges]
    try:
        results = await asyncio.gather(*(clients[i % 2].get("/v1/models") for i in range(burst)))
    finally:
        for c in clients:
            await c.aclose()
    admitted = sum(r.status_code == 200 for r in results)
    refused = sum(r.status_code == 429 for r in results)
    print(f"\nreplicas: 3 sidecars x 2 envoys, burst {burst}, limit {limit}: admitted {admitted}, "
          f"refused {refused}, overshoot {admitted - limit}")
    assert admitted + refused == burst
    assert admitted == limit  # zero overshoot: one Lua script decides for every replica


async def _check(port: int, key: str) -> int:
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(f"http://127.0.0.1:{port}/authz/v1/models",
                        headers={"authorization": f"Bearer {key}", "x-nx-client-ip": "127.0.0.1"})
    return r.status_code


async def test_revocation_reaches_every_replica(replicated: tuple[Platform, list[str]]) -> None:
    platform, _ = replicated
    key = await new_key(platform, name="to-revoke")
    ports = platform.s.sidecar_ports
    assert [await _check(p, key) for p in ports] == [200, 200, 200]  # every replica has it cached
    assert platform.boot is not None
    async with platform.admin() as admin:
        keys = (await admin.get(f"/api/orgs/{platform.boot.org_id}/keys")).json()["data"]
        key_id = next(k["id"] for k in keys if key.startswith(k["prefix"]))
        started = time.monotonic()
        r = await admin.post(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}/revoke")
        assert r.status_code == 200
    pending = set(ports)
    seen: dict[int, float] = {}
    while pending and time.monotonic() - started < REVOCATION_BOUND_S:
        for port in list(pending):
            if await _check(port, key) == 401:
                seen[port] = time.monotonic() - started
                pending.discard(port)
        await asyncio.sleep(0.01)
    print(f"\nrevocation seen by replicas after (s): {sorted(round(v, 4) for v in seen.values())}")
    assert not pending, f"replicas {pending} still accept a key revoked {REVOCATION_BOUND_S}s ago"


async def test_revocation_through_redis_alone(replicated: tuple[Platform, list[str]]) -> None:
    """What a sidecar on another node experiences: no HTTP call reaches it, only the Redis message."""
    import redis.asyncio as aioredis

    from control_plane.domain.keys import revoke_key
    from core.db import make_engine, write_tx

    platform, _ = replicated
    key = await new_key(platform, name="redis-only")
    ports = platform.s.sidecar_ports
    assert [await _check(p, key) for p in ports] == [200, 200, 200]
    assert platform.boot is not None
    async with platform.admin() as admin:
        keys = (await admin.get(f"/api/orgs/{platform.boot.org_id}/keys")).json()["data"]
    key_id = next(k["id"] for k in keys if key.startswith(k["prefix"]))
    engine = make_engine(platform.s)
    try:
        async with write_tx(engine) as conn:
            await revoke_key(conn, platform.boot.org_id, key_id, actor="test")
    finally:
        await engine.dispose()
    assert [await _check(p, key) for p in ports] == [200, 200, 200]  # still cached: nobody told them
    client = aioredis.from_url(REDIS_URL)
    started = time.monotonic()
    await client.publish("nx:invalidate", f'{{"key_ids":["{key_id}"],"config":false}}')
    await client.aclose()
    pending = set(ports)
    while pending and time.monotonic() - started < REVOCATION_BOUND_S:
        pending = {p for p in pending if await _check(p, key) != 401}
        await asyncio.sleep(0.01)
    assert not pending
