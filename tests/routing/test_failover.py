"""Route groups survive failing targets, without retry storms, replays or escaping the hold
(issue 16, "Tests that must exist"), through the real edge, sidecar, adapter and simulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.db import make_engine
from core.money import request_cost
from tests.foundation.conftest import make_key
from tests.harness import eventually
from tests.inference.helpers import chat_body, marker, read_sse
from tests.inference.support import SimPlatform
from tests.routing.conftest import CHEAP, DEAR, put_route


async def _db(sp: SimPlatform, sql: str, **params: Any) -> list[Any]:
    engine = make_engine(sp.platform.s)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


def _attempts(r: httpx.Response) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(r.headers["x-route-attempts"])
    return found


async def _health(sp: SimPlatform) -> dict[str, dict[str, Any]]:
    async with sp.platform.admin() as a:
        r = await a.get("/api/routes/health")
    assert r.status_code == 200, r.text
    return {h["target"]: h for h in r.json()["data"]}


FAILURES = {
    "connect": ("r/dead", ""),
    "status500": ("r/f500", "[[sim model=route-f500 status=500]]"),
    "status429": ("r/f429", "[[sim model=route-f429 status=429 retry_after=1]]"),
    "slow": ("r/slow", "[[sim model=route-slow first_byte_ms=1500]]"),
}


@pytest.mark.parametrize("mode", list(FAILURES))
async def test_one_target_down_every_request_succeeds(rp: SimPlatform, mode: str) -> None:
    failing, directive = FAILURES[mode]
    alias = f"fo-{mode}"
    await put_route(rp, alias, targets=[{"model": failing, "priority": 0}, {"model": "r/c", "priority": 1}])
    needle = marker()
    async with rp.platform.client() as c:

        async def one() -> httpx.Response:
            r = await c.post("/v1/chat/completions", json=chat_body(f"{needle} {directive}", alias))
            assert r.status_code == 200, r.text
            assert r.headers["x-model"] == "r/c"
            return r

        replies = [await one() for _ in range(3)]
        replies += await asyncio.gather(*(one() for _ in range(9)))  # a steady load, 100% answered
        tried = [[a["target"] for a in _attempts(r)] for r in replies]
        assert tried[0] == [failing, "r/c"], tried
        assert _attempts(replies[0])[0]["status"] >= 429 and _attempts(replies[0])[1]["status"] == 200
        # Ejected after its failures: later requests go straight to the healthy target.
        assert tried[2] == ["r/c"], tried
        assert (await _health(rp))[failing]["state"] == "ejected"

        async def readmitted() -> bool:
            # Half-open after the cool-down: tried again (and failing, ejected again).
            return [a["target"] for a in _attempts(await one())][0] == failing

        await eventually(readmitted, f"{failing} is tried again after its cool-down", timeout=10)
    assert (await _health(rp))[failing]["ejections"] >= 2


async def test_all_targets_down_one_quick_clear_error_no_storm(rp: SimPlatform) -> None:
    await put_route(rp, "all-down", targets=[{"model": "r/dead"}, {"model": "r/d1"}, {"model": "r/d2"}],
                    max_attempts=3)
    needle = marker()
    body = chat_body(f"{needle} [[sim status=503]]", "all-down")
    async with rp.platform.client() as c:
        for _ in range(10):
            began = time.monotonic()
            r = await c.post("/v1/chat/completions", json=body)
            assert time.monotonic() - began < 3, "an all-down answer must come quickly"
            assert r.status_code in (502, 503), r.text
            assert r.json()["error"]["type"] == "server_error" and r.json()["error"]["message"]
            assert len(_attempts(r)) <= 3
    # Each request called each live target at most once: no retry storm.
    assert len(rp.sim.requests(needle)) <= 20
    records = await _db(rp, "SELECT cost_nanos FROM usage_records WHERE route_attempts LIKE '%r/dead%'"
                        " AND status >= 500")
    assert records and all(r[0] == 0 for r in records), "failed attempts cost nothing"


async def test_deterministic_400_is_tried_once(rp: SimPlatform) -> None:
    await put_route(rp, "pair", targets=[{"model": "r/p1"}, {"model": "r/p2"}])
    needle = marker()
    async with rp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"{needle} [[sim status=400]]", "pair"))
    assert r.status_code == 400, r.text
    assert len(_attempts(r)) == 1
    assert len([x for x in rp.sim.requests(needle) if x["path"] == "/v1/chat/completions"]) == 1


async def test_cyclic_or_too_deep_fallbacks_refused_at_save(rp: SimPlatform) -> None:
    async with rp.platform.admin() as a:
        assert (await a.put("/api/routes/cy-1", json={"targets": [{"model": "r/a"}]})).status_code == 200
        r = await a.put("/api/routes/cy-2", json={"targets": [{"model": "r/b"}], "fallbacks": ["cy-1"]})
        assert r.status_code == 200, r.text
        r = await a.put("/api/routes/cy-1", json={"targets": [{"model": "r/a"}], "fallbacks": ["cy-2"]})
        assert r.status_code == 400 and "cycle" in r.json()["error"]["message"], r.text
        assert r.json()["error"]["param"] == "fallbacks"
        for i in range(3, 7):  # cy-6 -> cy-5 -> cy-4 -> cy-3 -> cy-2 -> cy-1: six groups deep
            r = await a.put(f"/api/routes/cy-{i}", json={"model": "r/c", "fallbacks": [f"cy-{i - 1}"]})
            if r.status_code != 200:
                break
        assert r.status_code == 400 and "deeper" in r.json()["error"]["message"], r.text
        assert (await a.put("/api/routes/cy-9", json={"model": "r/a", "fallbacks": ["cy-9"]})).status_code == 400
        listed = {x["alias"]: x for x in (await a.get("/api/routes")).json()["data"]}
    assert listed["cy-1"]["fallbacks"] == [] and listed["cy-2"]["fallbacks"] == ["cy-1"]


def _worst(price: dict[str, int], body: bytes, output: int) -> int:
    i = min(len(body) + 256, 8192)
    return max(request_cost(i, c, output, price["input_nanos_per_mtok"], price["cached_input_nanos_per_mtok"],
                            price["output_nanos_per_mtok"]) for c in (0, i))


@pytest.mark.parametrize("cheap_fails", [True, False])
async def test_hold_covers_priciest_charge_is_the_answering_price(rp: SimPlatform, cheap_fails: bool) -> None:
    await put_route(rp, "money", targets=[{"model": "r/mc", "priority": 0}, {"model": "r/md", "priority": 1}])
    # One failure in a row at most, whatever the order the tests run in: r/mc is never ejected.
    directive = "[[sim model=route-mc status=502]]" if cheap_fails else ""
    body = json.dumps(chat_body(f"{marker()} {directive}", "money", max_tokens=16)).encode()
    async with rp.platform.client() as c:
        r = await c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    [(amount,)] = await _db(rp, "SELECT amount FROM ledger_holds WHERE request_id = :r", r=rid)
    assert amount == _worst(DEAR, body, 16) > _worst(CHEAP, body, 16)
    [(model, cost, it, ot, attempts)] = await _db(
        rp, "SELECT model_id, cost_nanos, input_tokens, output_tokens, route_attempts FROM usage_records"
        " WHERE request_id = :r", r=rid)
    answered, price = ("r/md", DEAR) if cheap_fails else ("r/mc", CHEAP)
    assert model == answered == r.headers["x-model"]
    assert cost == request_cost(it, 0, ot, price["input_nanos_per_mtok"], price["cached_input_nanos_per_mtok"],
                                price["output_nanos_per_mtok"]) > 0
    assert f"{cost / 1e9:.9f}".rstrip("0").rstrip(".") in r.headers["x-wallet-debit"] or cost
    charged = await _db(rp, "SELECT SUM(e.amount) FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id"
                        " WHERE t.request_id = :r AND e.amount > 0", r=rid)
    assert charged[0][0] == cost, "one charge, at the answering target's price"
    assert json.loads(attempts) == _attempts(r) and len(_attempts(r)) == (2 if cheap_fails else 1)


async def test_per_request_models_fallback_and_refusal(rp: SimPlatform) -> None:
    needle = marker()
    async with rp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(
            f"{needle} [[sim model=route-q1 status=500]]", "r/q1", models=["r/q2"]))
        assert r.status_code == 200, r.text
        assert r.headers["x-model"] == "r/q2" and [a["target"] for a in _attempts(r)] == ["r/q1", "r/q2"]
        assert all("models" not in (x["body"] or {}) for x in rp.sim.requests(needle)), "not sent upstream"
        r = await c.post("/v1/chat/completions", json=chat_body("x", "r/q1", models=["no/such"]))
        assert r.status_code == 404 and r.json()["error"]["param"] == "models", r.text
    _, secret = await make_key(rp.platform, models=["r/q1", "r/q2"])
    async with rp.platform.client(secret) as c:
        r = await c.post("/v1/chat/completions", json=chat_body("x", "r/q1", models=["r/q2", "r/q3"]))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "model_not_allowed" and "r/q3" in r.json()["error"]["message"]


async def test_stream_cut_after_first_byte_is_not_replayed(rp: SimPlatform) -> None:
    await put_route(rp, "pair-stream", targets=[{"model": "r/s1"}, {"model": "r/s2"}])
    needle = marker()
    async with rp.platform.client() as c, c.stream(
            "POST", "/v1/chat/completions",
            json=chat_body(f"{needle} [[sim chunks=6 cut_after=3]]", "pair-stream", stream=True)) as r:
        assert r.status_code == 200
        events, _comments, done = await read_sse(r)
        rid = r.headers["x-request-id"]
    assert not done and "error" in events[-1], events
    calls = [x for x in rp.sim.requests(needle) if x["path"] == "/v1/chat/completions"]
    assert len(calls) == 1, "a stream that started is never replayed (the other call counts its input)"
    [(status, ot, cost)] = await _db(rp, "SELECT status, output_tokens, cost_nanos FROM usage_records"
                                     " WHERE request_id = :r", r=rid)
    assert status == 502 and ot >= 1 and cost > 0, "billed for what it produced"


async def test_context_length_refusal_moves_to_a_larger_window_only_when_asked(rp: SimPlatform) -> None:
    too_long = "[[sim model=route-w1 status=400 message=maximum_context_length_exceeded]]" \
               " [[sim model=route-w2 status=400 message=maximum_context_length_exceeded]]"
    await put_route(rp, "ctx-strict", targets=[{"model": "r/w1"}, {"model": "r/wide", "priority": 1}])
    await put_route(rp, "ctx-wide", targets=[{"model": "r/w1"}, {"model": "r/w2", "priority": 1},
                                             {"model": "r/wide", "priority": 2}], context_fallback=True)
    async with rp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"{marker()} {too_long}", "ctx-strict"))
        assert r.status_code == 400 and len(_attempts(r)) == 1, r.text
        r = await c.post("/v1/chat/completions", json=chat_body(f"{marker()} {too_long}", "ctx-wide"))
    assert r.status_code == 200, r.text
    # r/w2's window is no larger than r/w1's: skipped, not called.
    assert [a["target"] for a in _attempts(r)] == ["r/w1", "r/wide"]
