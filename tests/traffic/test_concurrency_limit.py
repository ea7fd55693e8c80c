"""Concurrent-request and token limits through the real edge, with the provider simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.harness import eventually
from tests.inference.helpers import chat_body, marker
from tests.inference.support import SimPlatform, start_sim_platform


@pytest.fixture(scope="module")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


async def limited_key(sp: SimPlatform, **limits: int) -> str:
    assert sp.platform.boot is not None
    async with sp.platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{sp.platform.boot.org_id}/keys",
                             json={"name": "limited", "rate_limits": limits})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


async def test_concurrency_limit_holds_under_100_parallel_requests(sp: SimPlatform) -> None:
    key = await limited_key(sp, concurrent=5)
    needle = marker()
    raw = json.dumps(chat_body(f"[[sim first_byte_ms=2500]] slow {needle}", max_tokens=16)).encode()
    async with sp.platform.client(key, timeout=60) as c:
        results = await asyncio.gather(*(c.post("/v1/chat/completions", content=raw,
                                                headers={"content-type": "application/json"})
                                         for _ in range(100)))
        statuses = [r.status_code for r in results]
        assert statuses.count(200) == 5, statuses
        refused = [r for r in results if r.status_code == 429]
        assert len(refused) == 95
        assert all("concurrent requests" in r.json()["error"]["message"] for r in refused)
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert len(sp.sim.requests(needle)) == 5

        # Finished requests give their slots back (the adapter reports to the sidecar).
        async def slot_free() -> bool:
            again = await c.post("/v1/chat/completions", json=chat_body(f"after {marker()}", max_tokens=16))
            return again.status_code == 200

        await eventually(slot_free, "a finished request gives its concurrency slot back", timeout=5)


async def test_token_limit_charges_the_estimate_then_the_actual(sp: SimPlatform) -> None:
    key = await limited_key(sp, tpm=3000)
    body = chat_body(f"tokens {marker()}", max_tokens=1000)  # estimate: body bytes + 256 + 1000
    # Estimated above the whole limit: always refused, so it takes nothing, and its headers show
    # what is left; it watches the correction arrive without changing what it watches.
    probe = chat_body(f"probe {'x' * 2000}", max_tokens=1000)
    async with sp.platform.client(key) as c:
        first = await c.post("/v1/chat/completions", json=body)
        assert first.status_code == 200
        estimate_left = int(first.headers["x-ratelimit-remaining-tokens"])
        assert first.headers["x-ratelimit-limit-tokens"] == "3000" and estimate_left < 3000 - 1000
        actual = int(first.headers["x-input-tokens"]) + int(first.headers["x-output-tokens"])

        async def corrected() -> bool:  # the finish report corrects the estimate to the actual usage
            refused = await c.post("/v1/chat/completions", json=probe)
            assert refused.status_code == 429, refused.text
            return int(refused.headers["x-ratelimit-remaining-tokens"]) == 3000 - actual

        await eventually(corrected, "the finish report replaces the estimate with the actual usage", timeout=5)
        second = await c.post("/v1/chat/completions", json=body)
    assert second.status_code == 200
    estimate = 3000 - estimate_left  # the same body gets the same estimate
    # Left after the second check: the limit minus the first's ACTUAL use minus the second's estimate.
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 3000 - actual - estimate
