"""Money through the real edge: holds in the sidecar, settlement in the adapter, both databases.

Each test uses its own organization so wallets do not interfere.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.db import make_engine
from core.money import format_usd, request_cost
from proxy_plugins.sidecar.estimate import TEMPLATE_ALLOWANCE
from tests.inference.helpers import chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform, start_sim_platform

IN, CACHED, OUT = 1_000_000_000, 500_000_000, 2_000_000_000  # the simulator models' card (support.PRICE)


@pytest.fixture(scope="module")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


async def tenant(sp: SimPlatform, credit_nanos: int) -> tuple[str, str]:
    """A new organization with `credit_nanos` in its wallet and a key: (org id, key secret)."""
    async with sp.platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"t-{secrets.token_hex(4)}"})).json()["id"]
        if credit_nanos:
            r = await admin.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": credit_nanos},
                                 headers={"idempotency-key": secrets.token_hex(8)})
            assert r.status_code == 201, r.text
        key = (await admin.post(f"/api/orgs/{org}/keys", json={"name": "billing"})).json()["secret"]
    return org, key


async def balance(sp: SimPlatform, org: str) -> dict[str, Any]:
    async with sp.platform.admin() as admin:
        r = await admin.get(f"/api/orgs/{org}/ledger/balance")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def statement(sp: SimPlatform, org: str) -> list[dict[str, Any]]:
    async with sp.platform.admin() as admin:
        r = await admin.get(f"/api/orgs/{org}/ledger/statement")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows


async def assert_reconciled(sp: SimPlatform) -> None:
    async with sp.platform.admin() as admin:
        report = (await admin.get("/api/ledger/reconcile")).json()
    assert report["drift"] == [], report


def charge(r_headers: httpx.Headers | dict[str, str]) -> int:
    return request_cost(int(r_headers["x-input-tokens"]), 0, int(r_headers["x-output-tokens"]), IN, CACHED, OUT)


async def test_json_answer_is_charged_exactly_what_its_header_says(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"bill me {marker()}"))
    assert r.status_code == 200, r.text
    expected = charge(r.headers)
    assert expected > 0 and r.headers["x-wallet-debit"] == format_usd(expected)
    rows = await statement(sp, org)
    charges = [row for row in rows if row["amount"] < 0]
    assert [-row["amount"] for row in charges] == [expected]
    assert (await balance(sp, org))["wallet_nanos"] == 10**9 - expected
    await assert_reconciled(sp)


async def test_stream_final_event_carries_the_exact_charge(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    body = chat_body(f"stream me {marker()}", stream=True, stream_options={"include_usage": True})
    async with sp.platform.client(key) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events, comments, done = await read_sse(r)
    assert done
    meta = final_metadata(comments)
    assert meta["x-wallet-debit"] == format_usd(charge(meta))
    assert events[-1]["x_nx"]["x-wallet-debit"] == meta["x-wallet-debit"]
    assert (await balance(sp, org))["wallet_nanos"] == 10**9 - charge(meta)


async def test_stream_cut_midway_is_billed_for_what_was_produced(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    body = chat_body(f"[[sim chunks=6 cut_after=3]] cut {marker()}", stream=True)
    async with sp.platform.client(key) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events, comments, done = await read_sse(r)
    assert not done and "error" in events[-1]  # never a clean-looking truncated stream
    meta = final_metadata(comments)
    produced = int(meta["x-output-tokens"])
    assert produced >= 1
    assert (await balance(sp, org))["wallet_nanos"] == 10**9 - charge(meta) < 10**9


async def test_upstream_failure_charges_nothing_and_releases_the_hold(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"[[sim status=500]] {marker()}"))
    assert r.status_code == 502 and r.headers["x-wallet-debit"] == "0.00"
    bal = await balance(sp, org)
    assert bal["wallet_nanos"] == 10**9 and bal["held_nanos"] == 0


async def test_no_credit_is_refused_before_any_backend_call(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 0)
    needle = marker()
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/chat/completions", json=chat_body(needle))
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_quota"
    assert sp.sim.requests(needle) == []


async def test_concurrent_requests_never_overdraw_the_wallet(sp: SimPlatform) -> None:
    """60 requests at once, each holding the same maximum, against a wallet that affords 23 holds:
    exactly 23 run, the rest get 402, and the wallet ends at its credit minus the actual charges."""
    body = chat_body("[[sim first_byte_ms=1500]] concurrent " + "x" * 40, max_tokens=100)
    raw = json.dumps(body).encode()
    hold = request_cost(len(raw) + TEMPLATE_ALLOWANCE, 0, 100, IN, CACHED, OUT)
    affordable = 23
    org, key = await tenant(sp, hold * affordable + hold // 2)
    async with sp.platform.client(key, timeout=60) as c:
        results = await asyncio.gather(*(c.post("/v1/chat/completions", content=raw,
                                                headers={"content-type": "application/json"})
                                         for _ in range(60)))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == affordable, (statuses, [r.text for r in results if r.status_code >= 500][:2])
    assert statuses.count(402) == 60 - affordable
    spent = sum(charge(r.headers) for r in results if r.status_code == 200)
    bal = await balance(sp, org)
    assert bal["wallet_nanos"] == hold * affordable + hold // 2 - spent >= 0
    assert bal["held_nanos"] == 0
    await assert_reconciled(sp)


async def test_background_response_is_billed_when_the_worker_finishes_it(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/responses", json={"model": "sim-chat", "input": f"later {marker()}",
                                                "background": True})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "queued" and r.headers["x-wallet-debit"] == "0.00"
        response_id = r.json()["id"]
        for _ in range(200):
            final = (await c.get(f"/v1/responses/{response_id}")).json()
            if final["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
    assert final["status"] == "completed", final
    usage = final["usage"]
    cost = request_cost(usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"],
                        usage["output_tokens"], IN, CACHED, OUT)
    assert cost > 0
    for _ in range(50):  # the charge commits with the terminal event; allow the poll to race it
        bal = await balance(sp, org)
        if bal["wallet_nanos"] != 10**9:
            break
        await asyncio.sleep(0.05)
    assert bal["wallet_nanos"] == 10**9 - cost and bal["held_nanos"] == 0
    await assert_reconciled(sp)
    engine = make_engine(sp.platform.s)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT type, payload FROM events WHERE org_id = :o ORDER BY created_at"),
                                       {"o": org})).all()
    finally:
        await engine.dispose()
    events = {str(r[0]): json.loads(r[1]) for r in rows}
    assert events["response.queued"]["data"]["response_id"] == response_id
    done = events["response.completed"]["data"]
    assert done["response_id"] == response_id and done["usage"]["output_tokens"] == usage["output_tokens"]


async def test_models_show_latency_bands_from_real_traffic_only(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 10**9)
    async with sp.platform.client(key) as c:
        assert (await c.post("/v1/chat/completions", json=chat_body(f"timed {marker()}"))).status_code == 200
        served = (await c.get("/v1/models/sim-chat")).json()
        idle = (await c.get("/v1/models/sim/embed-fixed")).json()
    band = served["latency"]
    assert band is not None and band["samples"] >= 1 and 0 <= band["p50_ms"] <= band["p95_ms"]
    assert band["window"] == "1h"
    assert idle["latency"] is None  # never invented
