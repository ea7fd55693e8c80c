"""Fair delivery scheduling: one endpoint's backlog delays only itself (issue 20, finding 1).

Latency is counted in worker ticks (the worker ticks every 0.25 s), not timed: the bound is on how
many ticks a healthy endpoint needs, whatever another endpoint has queued.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time

from sqlalchemy import text

from core.db import write_tx
from core.events.catalog import KeyRevoked
from core.events.delivery import Dispatcher
from core.events.outbox import encode_envelope
from core.ids import new_id
from tests.events.conftest import PEPPER, Rig
from tests.events.receiver import Received, Receiver, Reply

BACKLOG = 3000


async def backlog(rig: Rig, endpoint_id: str, n: int) -> None:
    """`n` deliveries for one endpoint, all due for up to an hour already (older than anything new)."""
    now = rig.clock.now
    events, deliveries = [], []
    for i in range(n):
        event_id = new_id("evt")
        data = KeyRevoked(key_id=f"key_{i}", prefix="nx-abc", name="old", revoked_at=1, revoked_by="admin")
        body = encode_envelope(event_id, rig.db.org_id, None, "key.revoked", data, now - 3_600_000)
        events.append({"id": event_id, "o": rig.db.org_id, "body": body.decode(), "at": now - 3_600_000})
        deliveries.append({"id": new_id("dlv"), "o": rig.db.org_id, "ep": endpoint_id, "ev": event_id,
                           "due": now - 3_600_000 + i})
    async with write_tx(rig.db.engine) as conn:
        await conn.execute(text("INSERT INTO events (id, org_id, type, payload, fanned_out, created_at) "
                                "VALUES (:id, :o, 'key.revoked', :body, 1, :at)"), events)
        await conn.execute(text(
            "INSERT INTO webhook_deliveries (id, org_id, endpoint_id, event_id, kind, status, attempts, "
            "next_attempt_at, created_at, updated_at) VALUES (:id, :o, :ep, :ev, 'event', 'pending', 0, "
            ":due, :due, :due)"), deliveries)


async def pending(rig: Rig, endpoint_id: str) -> int:
    async with rig.db.engine.connect() as conn:
        count = await conn.execute(text("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = :e "
                                        "AND status = 'pending'"), {"e": endpoint_id})
        return int(count.scalar_one())


async def settled(dispatcher: Dispatcher, endpoint_id: str, timeout: float = 15.0) -> None:
    """Wait until the endpoint's started attempts have finished and been recorded."""
    deadline = time.monotonic() + timeout
    while dispatcher.busy.get(endpoint_id, 0):
        assert time.monotonic() < deadline, f"attempts of {endpoint_id} did not finish"
        await asyncio.sleep(0.01)


async def test_thousands_due_at_a_stuck_endpoint_do_not_delay_a_healthy_one(rig: Rig) -> None:
    release = asyncio.Event()

    async def stuck(_: int, __: Received) -> Reply:
        await release.wait()
        return Reply()
    async with Receiver(stuck) as slow, Receiver() as fast:
        try:
            slow_id, _ = await rig.endpoint(slow.url, ["invoice.paid"])
            fast_id, _ = await rig.endpoint(fast.url, ["key.revoked"])
            await backlog(rig, slow_id, BACKLOG)
            for i in range(50):
                await rig.event(f"key_new_{i}")
            ticks = 0
            while len(fast.received) < 50 and ticks < 60:
                await rig.dispatcher()  # like the worker: starts sends, does not wait for them
                ticks += 1
                await settled(rig.dispatcher, fast_id)
            held = slow.in_flight
        finally:
            release.set()
            await rig.dispatcher.drain()
    per_endpoint = rig.dispatcher.per_endpoint
    assert len(fast.received) == 50
    # The healthy endpoint is limited by its own in-flight bound only, as if the backlog did not exist.
    assert ticks <= math.ceil(50 / per_endpoint)
    assert held == per_endpoint  # the stuck endpoint kept its own slots all along ...
    assert await pending(rig, slow_id) >= BACKLOG - per_endpoint  # ... and its backlog stayed


async def test_free_slots_are_shared_round_robin(rig: Rig) -> None:
    """With few slots, an endpoint failing fast through a long backlog gets its turn, not all of them."""
    dispatcher = Dispatcher(rig.db.settings, rig.db.engine, PEPPER, clock=rig.clock, rng=random.Random(7),
                            max_in_flight=4, per_endpoint=4)

    async def failing(_: int, __: Received) -> Reply:
        return Reply(status=500)
    try:
        async with Receiver(failing) as busy, Receiver() as fast:
            busy_id, _ = await rig.endpoint(busy.url, ["invoice.paid"])
            await rig.endpoint(fast.url, ["key.revoked"])
            await backlog(rig, busy_id, 2000)
            for i in range(12):
                await rig.event(f"key_new_{i}")
            ticks = 0
            while len(fast.received) < 12 and ticks < 20:
                await dispatcher()
                await dispatcher.drain()
                ticks += 1
    finally:
        await dispatcher.aclose()
    assert len(fast.received) == 12
    assert ticks == 6  # two of the four slots per tick: one per endpoint per round
    assert len(busy.received) == 12


async def test_a_freed_slot_goes_to_the_least_recently_served_endpoint(rig: Rig) -> None:
    """Every slot held by stuck endpoints: the first slot to free goes to the endpoint that waited."""
    dispatcher = Dispatcher(rig.db.settings, rig.db.engine, PEPPER, clock=rig.clock, rng=random.Random(7),
                            max_in_flight=4, per_endpoint=2)
    gates: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def gated(n: int, _: Received) -> Reply:
        await gates[n].wait()
        return Reply()
    stuck_gates: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def stuck(n: int, _: Received) -> Reply:
        await stuck_gates[n].wait()
        return Reply()
    try:
        async with Receiver(gated) as first, Receiver(stuck) as second, Receiver() as fast:
            try:
                first_id, _ = await rig.endpoint(first.url, ["invoice.paid"])
                second_id, _ = await rig.endpoint(second.url, ["invoice.paid"])
                fast_id, _ = await rig.endpoint(fast.url, ["key.revoked"])
                await backlog(rig, first_id, 100)
                await backlog(rig, second_id, 100)
                await dispatcher()
                await first.wait_for(2)
                await second.wait_for(2)
                await rig.event()  # every slot is held when the healthy endpoint's event comes
                await dispatcher()  # fans it out; no slot is free
                assert fast.received == [] and len(dispatcher.tasks) == 4
                gates[1].set()  # one slot frees
                await eventually_idle(dispatcher, first_id, 1)
                assert await dispatcher.dispatch() == 1
                await fast.wait_for(1)
                await settled(dispatcher, fast_id)
                assert first.in_flight == 1 and len(first.received) == 2
            finally:
                for gate in (*[gates[n] for n in range(1, 10)], *[stuck_gates[n] for n in range(1, 10)]):
                    gate.set()
                await dispatcher.drain()
    finally:
        await dispatcher.aclose()


async def eventually_idle(dispatcher: Dispatcher, endpoint_id: str, busy: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while dispatcher.busy.get(endpoint_id, 0) != busy:
        assert time.monotonic() < deadline, f"{endpoint_id} still has {dispatcher.busy[endpoint_id]} in flight"
        await asyncio.sleep(0.01)
