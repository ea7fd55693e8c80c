"""With Redis unreachable the documented behaviour holds: rate limits fail open (logged and
counted in /metrics), replay protection and money checks are unaffected (both live in the
database; a nonce that cannot be recorded still refuses the request)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from nx_client.signing import sign_headers
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
    failures = next(int(float(line.split()[-1])) for line in metrics.splitlines()
                    if line.startswith("nx_ratelimit_store_failures_total"))
    assert failures >= 3


async def test_replay_protection_does_not_depend_on_redis(no_redis: Platform) -> None:
    key, secret = await signed_key(no_redis)
    signature = sign_headers(secret, "GET", "/v1/models", b"")
    async with no_redis.client(key) as c:
        first = await c.get("/v1/models", headers=signature)
        replayed = await c.get("/v1/models", headers=signature)
    assert first.status_code == 200, first.text
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "nonce_reused"
