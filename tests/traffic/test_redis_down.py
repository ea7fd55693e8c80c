"""With Redis unreachable the documented behaviour holds: rate limits fail open (logged and
counted in /metrics), replay protection fails closed, money checks are unaffected."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from nx_client.signing import SignedRequests
from tests.harness import Platform, free_port
from tests.traffic.test_rate_limits_edge import new_key
from tests.traffic.test_replay_protection import signed_key


@pytest.fixture(scope="module")
async def no_redis() -> AsyncIterator[Platform]:
    # A port nothing listens on: every Redis call fails at once.
    p = await Platform(extra_env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).start()
    try:
        yield p
    finally:
        await p.stop()


async def test_rate_limits_fail_open_and_are_counted(no_redis: Platform) -> None:
    key = await new_key(no_redis, name="open", rate_limits={"rpm": 1})
    async with no_redis.client(key) as c:
        statuses = [(await c.get("/v1/models")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # over the limit, but the limiter cannot count: admitted
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(f"{no_redis.s.sidecar_url}/metrics")).text
    failures = next(int(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("nx_ratelimit_store_failures_total"))
    assert failures >= 3


async def test_replay_protection_fails_closed(no_redis: Platform) -> None:
    key, secret = await signed_key(no_redis)
    async with httpx.AsyncClient(base_url=no_redis.edge, auth=SignedRequests(secret),
                                 headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.get("/v1/models")
    assert r.status_code == 503 and r.json()["error"]["code"] == "signature_check_unavailable"
