"""Findings 8 and 9 of issue 12: what the sidecar takes for a request (concurrency slot, money
hold, Idempotency-Key claim) is given back when the request ends, whoever ends it; expiry is the
last resort, in seconds.

- an adapter outage (killed with requests in flight, 503s while it is down) leaves no slot behind:
  the busy organization is served again within seconds of the adapter's return, with the limiter
  in memory and in Redis (where slots also outlive a sidecar restart) (finding 8);
- 503s from Envoy and client timeouts do not strand a small wallet's money (finding 9).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.faults.lease_support import kill, limited_key, open_holds, revive, unshortened_holds
from tests.faults.metering_support import assert_books, eventually, tenant
from tests.inference.helpers import chat_body, marker
from tests.inference.support import SimPlatform, start_sim_platform

pytestmark = [pytest.mark.faults]

REDIS_URL = os.environ.get("NX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", params=["memory", "redis"])
async def sp(request: pytest.FixtureRequest) -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform(env={"REDIS_URL": REDIS_URL} if request.param == "redis" else {})
    try:
        yield running
    finally:
        await running.stop()


async def _served(c: httpx.AsyncClient, served: list[int]) -> bool:
    r = await c.post(CHAT, json=chat_body(f"again {marker()}", max_tokens=16))
    assert r.status_code in (200, 402, 429, 503), r.text
    if r.status_code == 200:
        served.append(1)
    return r.status_code == 200


async def test_an_adapter_outage_leaves_no_concurrency_slot_behind(sp: SimPlatform) -> None:
    org, _ = await tenant(sp)
    key = await limited_key(sp.platform, org, concurrent=3)
    # Slower than any test step, below the backend's 5 s timeout: in flight when the adapter dies.
    needle = marker()
    slow = chat_body(f"[[sim first_byte_ms=4500]] busy {needle}", max_tokens=16)
    served: list[int] = []
    async with sp.platform.client(key, timeout=60) as c:
        inflight = [asyncio.create_task(c.post(CHAT, json=slow)) for _ in range(3)]

        async def running() -> bool:
            return len(sp.sim.requests(needle)) == 3

        await eventually(running, "the three slow requests reach the backend")
        busy = await c.post(CHAT, json=chat_body(f"probe {marker()}", max_tokens=16))
        assert busy.status_code == 429 and "concurrent requests" in busy.text, busy.text
        await kill(sp.platform, "adapter")  # lost with the adapter: no finish report ever comes
        assert [r.status_code for r in await asyncio.gather(*inflight)] == [503] * 3

        async def refused_by_envoy() -> bool:  # admitted, then 503: no adapter to reach
            r = await c.post(CHAT, json=chat_body(f"down {marker()}", max_tokens=16))
            assert r.status_code in (429, 503), r.text
            return r.status_code == 503

        # The killed requests' slots come back with Envoy's access log (flushed every 0.2 s), and
        # so do those of the requests Envoy refuses while the adapter is down.
        for _ in range(5):
            await eventually(refused_by_envoy, "the slots of ended requests are released", timeout=5)
        if "REDIS_URL" in sp.platform.extra_env:
            # Killed, the sidecar loses the log entries in its socket (ended.py): their holds would
            # live out their full expiry. Wait until it has read every one of this organization's.
            async def log_read() -> bool:
                return await unshortened_holds(sp.platform, org) == 0

            await eventually(log_read, "the sidecar has read the log entry of every ended request", timeout=10)
            await kill(sp.platform, "sidecar")  # slots in Redis outlive the sidecar
            await revive(sp.platform, "sidecar")
        await revive(sp.platform, "adapter")
        # Before: 429 "concurrent requests (key limit 3)" for the slots' 15-minute lease.
        await eventually(lambda: _served(c, served), "the busy organization is served again", timeout=5)

    async def no_open_hold() -> bool:  # the killed requests' holds: the successor's grace, then expired
        return await open_holds(sp.platform, org) == 0

    await eventually(no_open_hold, "no hold outlives its short lease", timeout=30)
    await assert_books(sp, org, requests=len(served))


async def test_503s_and_client_timeouts_do_not_strand_a_small_wallets_money(sp: SimPlatform) -> None:
    # One request's hold (~2.3 M nano-dollars for 1,000 output tokens) fits; two do not.
    credit = 3_000_000
    org, key = await tenant(sp, credit_nanos=credit)
    body = chat_body(f"small {marker()}", max_tokens=1000)
    served: list[int] = []
    async with sp.platform.client(key, timeout=30) as c:
        await kill(sp.platform, "adapter")
        assert (await c.post(CHAT, json=body)).status_code == 503

        async def released() -> bool:
            return await open_holds(sp.platform, org) == 0

        # Before: the 503's hold stayed open ~305 s (its backend's timeout + 5 min), reserving the wallet.
        await eventually(released, "the 503's hold is released", timeout=3)
        await revive(sp.platform, "adapter")
        # Before: 402 insufficient_quota for ~305 s, the 503's hold still reserving the wallet.
        await eventually(lambda: _served(c, served), "the wallet serves again after a 503", timeout=5)

        slow = chat_body(f"[[sim first_byte_ms=1500]] slow {marker()}", max_tokens=1000)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up; the request runs to its end
            await c.post(CHAT, json=slow, timeout=0.3)
        await eventually(lambda: _served(c, served), "the wallet serves again after a client timeout",
                         timeout=10)
    await assert_books(sp, org, requests=len(served) + 1, credit=credit)
