"""With REDIS_URL, every adapter process shares the route targets' health (health.py)."""

from __future__ import annotations

import json
import os
import secrets
import time

import httpx
import msgspec
import redis.asyncio as aioredis

from tests.harness import eventually, free_port_run
from tests.inference.helpers import chat_body
from tests.inference.support import start_sim_platform
from tests.routing.conftest import CHEAP, put_route

REDIS_URL = os.environ.get("NX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = "nx:route-health"


async def test_adapters_share_target_health_through_redis() -> None:
    adapter_port = free_port_run(2)
    sp = await start_sim_platform(env={"REDIS_URL": REDIS_URL, "NX_ADAPTER_PROCESSES": "2",
                                       "NX_ADAPTER_PORT": str(adapter_port), "NX_ROUTE_EJECT_AFTER": "1"})
    tag = secrets.token_hex(4)  # the hash outlives the run: this run's targets are its own
    bad, good = f"rd/bad-{tag}", f"rd/good-{tag}"
    redis = aioredis.from_url(REDIS_URL)
    try:
        async with sp.platform.admin() as a:
            for model_id, backend in ((bad, "sim"), (good, "sim")):
                r = await a.post("/api/models", json={
                    "id": model_id, "display_name": model_id, "backend": backend, "upstream_name": model_id,
                    "kind": "text", "context_window": 8192, "max_output_tokens": 64, "price": CHEAP})
                assert r.status_code == 201, r.text
        await put_route(sp, f"shared-{tag}", targets=[{"model": bad}, {"model": good, "priority": 1}])
        async with sp.platform.client() as c:
            r = await c.post("/v1/chat/completions", json=chat_body(f"[[sim model={bad} status=500]]",
                                                                     f"shared-{tag}"))
            assert r.status_code == 200, r.text
            assert bad in (await redis.hget(KEY, bad) or b"").decode(), "an adapter's failure is in Redis"
            async with sp.platform.admin() as a:
                view = (await a.get("/api/routes/health")).json()
            assert view["source"] == "redis" and {h["target"]: h for h in view["data"]}[bad]["state"] == "ejected"
            # An ejection written to Redis is honoured by every adapter within about a second.
            await redis.hset(KEY, bad, msgspec.json.encode({"target": bad, "ejections": 1,
                                                            "ejected_until": time.time() + 60}))

            tried: list[list[str]] = []

            async def everyone_skips() -> bool:
                tried.clear()
                for _ in range(8):  # Envoy spreads them over both adapters
                    r = await c.post("/v1/chat/completions", json=chat_body("hi", f"shared-{tag}"))
                    tried.append([x["target"] for x in json.loads(r.headers["x-route-attempts"])])
                return all(t == [good] for t in tried)

            try:
                await eventually(everyone_skips, "both adapters skip the target ejected in Redis", timeout=20)
            except AssertionError as e:  # say what each adapter saw, for a failure on a busy machine
                views = []
                async with httpx.AsyncClient(timeout=5) as h:
                    for port in (adapter_port, adapter_port + 1):
                        views.append((await h.get(f"http://127.0.0.1:{port}/internal/route-health")).text)
                stored = await redis.hget(KEY, bad)
                raise AssertionError(f"{e}; last attempts {tried}; in Redis {stored!r}; adapters {views}") from None
    finally:
        await redis.hdel(KEY, bad, good)
        await redis.aclose()
        await sp.stop()
