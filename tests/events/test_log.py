"""The delivery log tells the whole truth: pages say when there is more, and an attempt is on
record from the moment it starts, even if the worker dies before it ends (issue 20, findings 2, 5)."""

from __future__ import annotations

import asyncio
import random

from core.events.attempts import INTERRUPTED
from core.events.delivery import LEASE_MS, Dispatcher
from core.events.endpoints import Scope
from core.events.log import DeliveryView, list_deliveries
from tests.events.conftest import PEPPER, Rig
from tests.events.receiver import Received, Receiver, Reply


async def _log(rig: Rig, endpoint_id: str, limit: int = 20, after: str | None = None
               ) -> tuple[list[DeliveryView], bool]:
    async with rig.db.engine.connect() as conn:
        return await list_deliveries(conn, Scope(rig.db.org_id), endpoint_id, limit, after, None)


async def test_delivery_log_says_when_there_is_more(rig: Rig) -> None:
    async with Receiver() as rx:
        endpoint_id, _ = await rig.endpoint(rx.url)
        for i in range(3):
            await rig.event(f"key_{i}")
        await rig.tick()
    page, more = await _log(rig, endpoint_id, limit=2)
    assert len(page) == 2 and more is True
    rest, more = await _log(rig, endpoint_id, limit=2, after=page[-1].id)
    assert len(rest) == 1 and more is False
    whole, more = await _log(rig, endpoint_id, limit=3)
    assert [d.id for d in whole] == [d.id for d in page + rest] and more is False


async def test_attempt_cut_short_by_a_worker_crash_is_logged(rig: Rig) -> None:
    hang = asyncio.Event()

    async def reply(n: int, _: Received) -> Reply:
        if n == 1:
            await hang.wait()  # the first attempt is in the air when its worker dies
        return Reply()
    async with Receiver(reply) as rx:
        try:
            endpoint_id, _ = await rig.endpoint(rx.url)
            event_id = await rig.event()
            doomed = Dispatcher(rig.db.settings, rig.db.engine, PEPPER, clock=rig.clock, rng=random.Random(1))
            await doomed()
            await rx.wait_for(1)
            [delivery], _ = await _log(rig, endpoint_id)
            [running] = delivery.attempts
            assert (running.attempt, running.status_code, running.latency_ms, running.error) == (1, None, None, None)
            assert delivery.attempt_count == 1 and delivery.status == "pending"
            # SIGKILL, in-process: the send is abandoned and nothing after it runs.
            for task in list(doomed.tasks):
                task.cancel()
            await asyncio.gather(*doomed.tasks, return_exceptions=True)
            await doomed.client.aclose()
            rig.clock.now += LEASE_MS + 1  # the lease runs out; another worker takes the delivery
            await rig.tick()
            await rx.wait_for(2)
        finally:
            hang.set()
    [delivery], _ = await _log(rig, endpoint_id)
    assert delivery.event_id == event_id and delivery.status == "succeeded" and delivery.attempt_count == 2
    cut, done = delivery.attempts
    assert (cut.attempt, cut.status_code, cut.latency_ms, cut.error) == (1, None, None, INTERRUPTED)
    assert (done.attempt, done.status_code, done.error) == (2, 200, None) and done.latency_ms is not None
    assert {r.headers["webhook-id"] for r in rx.received} == {event_id}
