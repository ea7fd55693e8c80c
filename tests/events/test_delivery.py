"""The delivery job in-process, with an injected clock, a real database and real HTTP receivers."""

from __future__ import annotations

import asyncio
import datetime
import time

import standardwebhooks
from sqlalchemy import text

from core.db import now_ms, write_tx
from core.events import backoff
from core.events.endpoints import Scope, rotate_secret
from core.events.log import ReplayRequest, replay
from tests.events.conftest import PEPPER, Rig
from tests.events.receiver import Received, Receiver, Reply


def failing_first(k: int, status: int = 500) -> object:
    async def reply(n: int, _: Received) -> Reply:
        return Reply(status=status) if n <= k else Reply()
    return reply


async def test_recovery_after_k_failures_delivers_once_more_same_id(rig: Rig) -> None:
    k = 3
    async with Receiver(failing_first(k)) as rx:  # type: ignore[arg-type]
        endpoint_id, secret = await rig.endpoint(rx.url)
        event_id = await rig.event()
        await rig.tick()
        for _ in range(k):
            status, _, next_at, _ = await rig.delivery(endpoint_id)
            assert status == "pending" and next_at is not None
            rig.clock.now = int(next_at)
            await rig.tick()
        assert (await rig.delivery(endpoint_id))[:2] == ("succeeded", k + 1)
        rig.clock.now += 7 * 24 * 3600 * 1000  # nothing more, however long we wait
        await rig.tick()
    assert len(rx.received) == k + 1
    assert {r.headers["webhook-id"] for r in rx.received} == {event_id}
    assert len({r.headers["webhook-timestamp"] for r in rx.received}) == k + 1  # new timestamp per attempt
    assert len({r.body for r in rx.received}) == 1
    last = rx.received[-1]
    wh = standardwebhooks.Webhook(secret)
    # The signature covers the attempt's own (injected-clock) timestamp: recompute it with the library.
    expected = wh.sign(event_id, _ts(last.headers), last.body.decode())
    assert expected in last.headers["webhook-signature"].split(" ")


def _ts(headers: dict[str, str]) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=datetime.UTC)


async def test_backoff_follows_documented_schedule_then_gives_up(rig: Rig) -> None:
    async with Receiver(failing_first(10**6, status=503)) as rx:  # type: ignore[arg-type]
        endpoint_id, _ = await rig.endpoint(rx.url)
        await rig.event()
        await rig.tick()
        for expected in backoff.SCHEDULE_S:
            status, _, next_at, _ = await rig.delivery(endpoint_id)
            assert status == "pending" and next_at is not None
            gap = int(next_at) - rig.clock.now
            assert expected * 1000 <= gap <= expected * 1000 * (1 + backoff.JITTER) + 1
            rig.clock.now = int(next_at) - 1
            await rig.tick()  # not due yet: no attempt
            rig.clock.now = int(next_at)
            await rig.tick()
        status, attempts, next_at, error = await rig.delivery(endpoint_id)
    assert (status, attempts, next_at) == ("failed", backoff.MAX_ATTEMPTS, None)
    assert error is not None and "HTTP 503" in error
    assert len(rx.received) == backoff.MAX_ATTEMPTS
    async with rig.db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT attempt, status_code, response_excerpt FROM webhook_attempts "
                                        "ORDER BY attempt"))).all()
    assert [r[0] for r in rows] == list(range(1, backoff.MAX_ATTEMPTS + 1))
    assert {r[1] for r in rows} == {503} and rows[0][2] == "ok"


async def test_retry_after_is_honoured(rig: Rig) -> None:
    async def reply(n: int, _: Received) -> Reply:
        return Reply(status=429, headers={"retry-after": "3600"}) if n == 1 else Reply()
    async with Receiver(reply) as rx:
        endpoint_id, _ = await rig.endpoint(rx.url)
        await rig.event()
        await rig.tick()
        _, _, next_at, _ = await rig.delivery(endpoint_id)
        assert next_at is not None and int(next_at) - rig.clock.now >= 3600 * 1000
        rig.clock.now += 60 * 1000  # the schedule alone would have retried by now
        await rig.tick()
        assert len(rx.received) == 1


async def test_410_disables_endpoint_at_once(rig: Rig) -> None:
    async with Receiver(failing_first(10**6, status=410)) as rx:  # type: ignore[arg-type]
        endpoint_id, _ = await rig.endpoint(rx.url)
        await rig.event()
        await rig.tick()
        assert (await rig.delivery(endpoint_id))[0] == "failed"
        enabled, reason = await rig.endpoint_state(endpoint_id)
        assert enabled == 0 and reason is not None and "410" in reason
        await rig.event("key_2")
        rig.clock.now += 3600 * 1000
        await rig.tick()
    assert len(rx.received) == 1
    async with rig.db.engine.connect() as conn:
        audited = (await conn.execute(text("SELECT COUNT(*) FROM audit_log WHERE action = "
                                           "'webhook_endpoint.disabled' AND target = :e"),
                                      {"e": endpoint_id}))
        assert audited.scalar_one() == 1


async def test_redirect_is_a_failure_and_not_followed(rig: Rig) -> None:
    async with Receiver() as target:
        async def reply(_: int, __: Received) -> Reply:
            return Reply(status=302, headers={"location": target.url})
        async with Receiver(reply) as rx:
            endpoint_id, _ = await rig.endpoint(rx.url)
            await rig.event()
            await rig.tick()
            status, attempts, _, error = await rig.delivery(endpoint_id)
    assert (status, attempts, error) == ("pending", 1, "HTTP 302")
    assert len(rx.received) == 1 and target.received == []


async def test_continued_failure_disables_after_window(rig: Rig) -> None:
    async with Receiver(failing_first(10**6)) as rx:  # type: ignore[arg-type]
        endpoint_id, _ = await rig.endpoint(rx.url)
        start = rig.clock.now
        while rig.clock.now - start < backoff.DISABLE_AFTER_S * 1000:
            await rig.event(f"key_{rig.clock.now}")
            await rig.tick()
            assert (await rig.endpoint_state(endpoint_id))[0] == 1
            rig.clock.now += 12 * 3600 * 1000
        await rig.event("key_last")
        await rig.tick()
        enabled, reason = await rig.endpoint_state(endpoint_id)
    assert enabled == 0 and reason == "every delivery attempt failed for 5 days"


async def test_slow_endpoint_does_not_hold_up_another(rig: Rig) -> None:
    release = asyncio.Event()

    async def stuck(_: int, __: Received) -> Reply:
        await release.wait()
        return Reply()
    async with Receiver(stuck) as slow, Receiver() as fast:
        await rig.endpoint(slow.url)
        await rig.endpoint(fast.url)
        for i in range(10):
            await rig.event(f"key_{i}")
        async def ticks() -> None:  # like the worker: a tick starts sends and does not wait for them
            while True:
                await rig.dispatcher()
                await asyncio.sleep(0.05)
        ticking = asyncio.create_task(ticks())
        try:
            await fast.wait_for(10)  # every fast delivery arrives while the slow ones are held open
        finally:
            ticking.cancel()
        bound = rig.dispatcher.per_endpoint
        assert slow.in_flight == bound and slow.max_in_flight == bound
        release.set()
        await rig.dispatcher.drain()
        while len(slow.received) < 10:
            await rig.tick()
    assert len(fast.received) == 10 and len(slow.received) == 10
    async with rig.db.engine.connect() as conn:
        left = await conn.execute(text("SELECT COUNT(*) FROM webhook_deliveries "
                                       "WHERE status <> 'succeeded'"))
        assert left.scalar_one() == 0


async def test_replay_sends_stored_payload_and_rotation_signs_twice(rig: Rig) -> None:
    async with Receiver() as rx:
        endpoint_id, old_secret = await rig.endpoint(rx.url)
        event_id = await rig.event(name="before")
        await rig.tick()
        # The key is renamed afterwards; a replay must still carry the historical payload.
        async with write_tx(rig.db.engine) as conn:
            scope = Scope(rig.db.org_id)
            rotated = await rotate_secret(conn, PEPPER, scope, endpoint_id, "test")
            result = await replay(conn, scope, endpoint_id, ReplayRequest(event_id=event_id))
        assert len(result.deliveries) == 1
        rig.clock.now = now_ms()
        await rig.tick()
    first, again = rx.received
    assert again.body == first.body and b'"name":"before"' in again.body
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == event_id
    assert again.headers["webhook-signature"].count("v1,") == 2
    assert isinstance(rotated.secret, str) and rotated.previous_secret_expires_at is not None
    for secret in (old_secret, rotated.secret):
        standardwebhooks.Webhook(secret).verify(again.body, again.headers)
    assert abs(int(again.headers["webhook-timestamp"]) - time.time()) < 300
