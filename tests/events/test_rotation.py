"""Every secret a rotation replaces keeps signing until its own expiry, however many rotations
follow (issue 20, finding 4); deliveries carry one Standard Webhooks signature per live secret."""

from __future__ import annotations

import datetime

import pytest
import standardwebhooks

from core.db import now_ms, write_tx
from core.errors import ApiError
from core.events.backoff import ROTATION_OVERLAP_S
from core.events.endpoints import MAX_OLD_SECRETS, EndpointView, Scope, get_endpoint, rotate_secret
from tests.events.conftest import PEPPER, Rig
from tests.events.receiver import Received, Receiver

DAY_MS = ROTATION_OVERLAP_S * 1000


async def _rotate(rig: Rig, endpoint_id: str, at: int) -> EndpointView:
    async with write_tx(rig.db.engine) as conn:
        return await rotate_secret(conn, PEPPER, Scope(rig.db.org_id), endpoint_id, "test", now=at)


def _signed_with(secret: str, request: Received) -> bool:
    """Is one of the request's signatures made with `secret`? (Recomputed with the reference
    library; its verify() would also check the timestamp against the wall clock, not the test's.)"""
    stamp = datetime.datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=datetime.UTC)
    expected = standardwebhooks.Webhook(secret).sign(request.headers["webhook-id"], stamp, request.body.decode())
    return expected in request.headers["webhook-signature"].split(" ")


async def test_two_rotations_75s_apart_keep_the_original_secret_for_24h(rig: Rig) -> None:
    async with Receiver() as rx:
        endpoint_id, original = await rig.endpoint(rx.url)
        t0 = now_ms()
        second = (await _rotate(rig, endpoint_id, t0)).secret
        third_view = await _rotate(rig, endpoint_id, t0 + 75_000)
        third = third_view.secret
        assert isinstance(second, str) and isinstance(third, str)
        rig.clock.now = t0 + 80_000
        await rig.event("key_a")
        await rig.tick()
        # The original was replaced at t0 and signs until t0 + 24 h; the second until 75 s later.
        rig.clock.now = t0 + DAY_MS + 1_000
        await rig.event("key_b")
        await rig.tick()
        rig.clock.now = t0 + 75_000 + DAY_MS + 1_000
        await rig.event("key_c")
        await rig.tick()
    during, after_first, after_both = rx.received
    assert during.headers["webhook-signature"].count("v1,") == 3
    assert all(_signed_with(s, during) for s in (original, second, third))
    assert [_signed_with(s, after_first) for s in (original, second, third)] == [False, True, True]
    assert [_signed_with(s, after_both) for s in (original, second, third)] == [False, False, True]
    assert after_both.headers["webhook-signature"].count("v1,") == 1
    # The endpoint says when the last replaced secret stops signing.
    assert third_view.previous_secret_expires_at == (t0 + 75_000 + DAY_MS) // 1000


async def test_rotations_are_capped_not_cut_short(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint("http://127.0.0.1:9/hook")
    t0 = now_ms()
    for i in range(MAX_OLD_SECRETS):
        await _rotate(rig, endpoint_id, t0 + i)
    with pytest.raises(ApiError) as refused:
        await _rotate(rig, endpoint_id, t0 + MAX_OLD_SECRETS)
    assert refused.value.code == "conflict" and str((t0 + DAY_MS) // 1000) in refused.value.message
    # Once the oldest has expired, rotating works again (and the expired one is dropped).
    await _rotate(rig, endpoint_id, t0 + DAY_MS)
    async with rig.db.engine.connect() as conn:
        view = await get_endpoint(conn, Scope(rig.db.org_id), endpoint_id)
    assert view.previous_secret_expires_at == (t0 + 2 * DAY_MS) // 1000
