"""A range replay covers every request: `request.completed` events that were never recorded (no
enabled endpoint subscribed when the request completed) are rebuilt from the usage records
(issue 20, finding 3). Requests go through the real ledger (hold, then settle)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from core import ledger
from core.db import now_ms, write_tx
from core.events.endpoints import EndpointUpdate, Scope, update_endpoint
from core.events.log import ReplayRequest, ReplayResult, replay
from core.ids import new_id
from core.ledger import Settlement, Usage
from tests.events.conftest import Db, Rig
from tests.events.receiver import Receiver

MODEL = "test/events"


async def _billing(db: Db) -> tuple[str, str]:
    """A priced model, an API key and credit for the test organization; returns (key id, card id)."""
    now, key_id, card_id = now_ms(), new_id("key"), new_id("price")
    async with write_tx(db.engine) as conn:
        await conn.execute(text("INSERT INTO backends (id, protocol, base_url, created_at, updated_at) "
                                "VALUES ('be_events', 'openai', 'http://127.0.0.1:9', :n, :n)"), {"n": now})
        await conn.execute(text(
            "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window, "
            "max_output_tokens, created_at, updated_at) VALUES (:m, :m, 'be_events', :m, 'text', 8192, 4096, "
            ":n, :n)"), {"m": MODEL, "n": now})
        await conn.execute(text(
            "INSERT INTO price_cards (id, model_id, version, input_nanos_per_mtok, cached_input_nanos_per_mtok, "
            "output_nanos_per_mtok, effective_at, created_at) VALUES (:id, :m, 1, 3000000000, 1500000000, "
            "12000000000, 0, 0)"), {"id": card_id, "m": MODEL})
        await conn.execute(text(
            "INSERT INTO api_keys (id, org_id, prefix, key_hash, created_at, updated_at) "
            "VALUES (:k, :o, 'nx', :h, :n, :n)"), {"k": key_id, "o": db.org_id, "h": new_id("key"), "n": now})
        await ledger.grant(conn, db.org_id, 10**15, idempotency_key=new_id("req"), actor="test")
    return key_id, card_id


async def _request(db: Db, key_id: str, tokens: int) -> tuple[Settlement, Usage]:
    request_id = new_id("req")
    usage = Usage(input_tokens=tokens, cached_tokens=tokens // 4, output_tokens=tokens // 2, latency_ms=tokens)
    async with write_tx(db.engine) as conn:
        await ledger.place_hold(conn, org_id=db.org_id, project_id=db.project_id, key_id=key_id,
                                request_id=request_id, model_id=MODEL, endpoint="chat", backend_id="be_events",
                                max_input_tokens=tokens, max_output_tokens=tokens, expires_at_ms=now_ms() + 60_000,
                                client_ip="127.0.0.1")
        return await ledger.settle_hold(conn, request_id, usage), usage


async def _enabled(rig: Rig, endpoint_id: str, enabled: bool) -> None:
    await update_endpoint(rig.db.engine, rig.db.settings, Scope(rig.db.org_id), endpoint_id,
                          EndpointUpdate(enabled=enabled), "test")


async def _replay(rig: Rig, endpoint_id: str, since: int) -> ReplayResult:
    async with write_tx(rig.db.engine) as conn:
        return await replay(conn, Scope(rig.db.org_id), endpoint_id, ReplayRequest(since=since))


async def _recorded(rig: Rig) -> int:
    async with rig.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM events WHERE type = 'request.completed'"))
                    ).scalar_one())


async def test_replay_rebuilds_request_completed_missed_while_the_only_subscriber_was_disabled(rig: Rig) -> None:
    since = now_ms() // 1000
    key_id, card_id = await _billing(rig.db)
    async with Receiver() as rx:
        endpoint_id, _ = await rig.endpoint(rx.url, ["request.completed"])
        live = await _request(rig.db, key_id, 100)
        rig.clock.now = now_ms()
        await rig.tick()
        await rx.wait_for(1)
        await _enabled(rig, endpoint_id, False)  # e.g. after a 410; requests keep completing
        missed = [await _request(rig.db, key_id, 200), await _request(rig.db, key_id, 300)]
        assert await _recorded(rig) == 1  # the premise: nothing was recorded for them
        await _enabled(rig, endpoint_id, True)
        first = await _replay(rig, endpoint_id, since)
        rig.clock.now = now_ms()
        await rig.tick()
        await rx.wait_for(4)
        again = await _replay(rig, endpoint_id, since)
        rig.clock.now = now_ms()
        await rig.tick()
        await rx.wait_for(7)
    assert (first.rebuilt, len(first.deliveries), first.has_more) == (2, 3, False)
    assert (again.rebuilt, len(again.deliveries)) == (0, 3)  # stored now: replayed, not rebuilt again
    assert await _recorded(rig) == 3
    bodies = [r.body for r in rx.received]
    assert sorted(bodies[1:4]) == sorted(bodies[4:7])  # the same bytes on every later replay
    assert bodies[0] in bodies[1:4]  # the live event is replayed as it was sent
    events = {e["data"]["request_id"]: e for e in map(json.loads, bodies[1:4])}
    for settlement, usage in (live, *missed):
        event = events[settlement.request_id]
        assert event["type"] == "request.completed" and event["project"] == rig.db.project_id
        assert event["created_at"] == event["data"]["completed_at"] or settlement is live[0]
        assert event["data"] == _expected(settlement, usage, key_id, card_id, rig.db.project_id,
                                          event["data"]["completed_at"])
    assert abs(events[missed[0][0].request_id]["data"]["completed_at"] - since) < 60


def _expected(s: Settlement, u: Usage, key_id: str, card_id: str, project_id: str,
              completed_at: int) -> dict[str, Any]:
    """The payload the live event carries (core/ledger/settle.py), field for field."""
    return {"request_id": s.request_id, "endpoint": "chat", "model": MODEL, "key_id": key_id,
            "project_id": project_id, "status_code": u.status, "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_tokens, "output_tokens": u.output_tokens, "cost_nanos": s.charged,
            "price_card_id": card_id, "latency_ms": u.latency_ms, "completed_at": completed_at}
