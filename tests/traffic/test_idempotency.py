"""Idempotency keys through the real edge: a retry never runs or bills twice."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from core import idempotency
from core.db import make_engine, write_tx
from tests.inference.helpers import chat_body, marker
from tests.inference.support import SimPlatform, start_sim_platform
from tests.money.test_edge_billing import balance, statement, tenant


@pytest.fixture(scope="module")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


def charges(rows: list[dict[str, object]]) -> int:
    return sum(1 for row in rows if int(str(row["amount"])) < 0)


async def test_fifty_concurrent_retries_run_once_and_bill_once(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    needle = marker()
    raw = json.dumps(chat_body(f"[[sim first_byte_ms=800]] once {needle}")).encode()
    headers = {"idempotency-key": f"k-{needle}", "content-type": "application/json"}
    async with sp.platform.client(key, timeout=60) as c:
        results = await asyncio.gather(*(c.post("/v1/chat/completions", content=raw, headers=headers)
                                         for _ in range(50)))
        statuses = [r.status_code for r in results]
        assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}, statuses
        originals = [r for r in results if r.status_code == 200 and "idempotent-replayed" not in r.headers]
        assert len(originals) == 1
        for r in results:
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "idempotency_key_in_use"
            elif "idempotent-replayed" in r.headers:
                assert r.content == originals[0].content
        # After completion: the stored answer, byte for byte, and no second charge.
        again = await c.post("/v1/chat/completions", content=raw, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == originals[0].content
    assert again.headers["x-wallet-debit"] == originals[0].headers["x-wallet-debit"]
    assert again.headers["x-request-id"] != originals[0].headers["x-request-id"]
    assert len(sp.sim.requests(needle)) == 1
    assert charges(await statement(sp, org)) == 1


async def test_same_key_with_another_body_is_422(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 10**9)
    idem = {"idempotency-key": secrets.token_hex(8)}
    async with sp.platform.client(key) as c:
        first = await c.post("/v1/chat/completions", json=chat_body(f"a {marker()}"), headers=idem)
        other = await c.post("/v1/chat/completions", json=chat_body(f"b {marker()}"), headers=idem)
    assert first.status_code == 200
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


async def test_key_is_scoped_to_the_api_key(sp: SimPlatform) -> None:
    org, key_a = await tenant(sp, 10**9)
    async with sp.platform.admin() as admin:
        key_b = (await admin.post(f"/api/orgs/{org}/keys", json={"name": "b"})).json()["secret"]
    needle = marker()
    body, idem = chat_body(f"scoped {needle}"), {"idempotency-key": "shared-string"}
    async with sp.platform.client(key_a) as a, sp.platform.client(key_b) as b:
        ra = await a.post("/v1/chat/completions", json=body, headers=idem)
        rb = await b.post("/v1/chat/completions", json=body, headers=idem)
    assert ra.status_code == rb.status_code == 200
    assert "idempotent-replayed" not in rb.headers  # the other key never reads a's stored answer
    assert len(sp.sim.requests(needle)) == 2


async def test_stream_repeat_gets_the_whole_stored_stream(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 10**9)
    needle = marker()
    body = chat_body(f"stream once {needle}", stream=True)
    idem = {"idempotency-key": f"s-{needle}"}
    async with sp.platform.client(key) as c:
        first = await c.post("/v1/chat/completions", json=body, headers=idem)
        again = await c.post("/v1/chat/completions", json=body, headers=idem)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.content == first.content and again.content.endswith(b"data: [DONE]\n\n")
    assert len(sp.sim.requests(needle)) == 1


async def test_server_failure_gives_the_key_back(sp: SimPlatform) -> None:
    org, key = await tenant(sp, 10**9)
    needle = marker()
    idem = {"idempotency-key": f"f-{needle}"}
    async with sp.platform.client(key) as c:
        failed = await c.post("/v1/chat/completions", json=chat_body(f"[[sim status=503]] {needle}"), headers=idem)
        retried = await c.post("/v1/chat/completions", json=chat_body(f"[[sim status=503]] {needle}"), headers=idem)
    assert failed.status_code == retried.status_code == 502
    assert "idempotent-replayed" not in retried.headers and len(sp.sim.requests(needle)) == 2
    assert charges(await statement(sp, org)) == 0


async def test_invalid_keys_are_refused(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 10**9)
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/chat/completions", json=chat_body("x"), headers={"idempotency-key": "k" * 256})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"


async def test_crash_during_the_backend_call(sp: SimPlatform) -> None:
    """The adapter dies mid-request: nothing was charged, the key is busy until its lease ends,
    then a retry runs once and is billed once; the orphaned hold is released."""
    org, key = await tenant(sp, 10**9)
    needle = marker()
    raw = json.dumps(chat_body(f"[[sim first_byte_ms=3000]] crash {needle}")).encode()
    idem = {"idempotency-key": f"c-{needle}", "content-type": "application/json"}
    async with sp.platform.client(key, timeout=30) as c:
        pending = asyncio.create_task(c.post("/v1/chat/completions", content=raw, headers=idem))
        while not sp.sim.requests(needle):
            await asyncio.sleep(0.05)
        await sp.platform.restart("adapter", crash=True)
        crashed = await pending
        assert crashed.status_code >= 500
        assert charges(await statement(sp, org)) == 0
        busy = await c.post("/v1/chat/completions", content=raw, headers=idem)
        assert busy.status_code == 409
        engine = make_engine(sp.platform.s)
        try:  # fast-forward past the lease instead of waiting ten minutes
            async with write_tx(engine) as conn:
                await conn.execute(text("UPDATE idempotency_keys SET lease_expires_at = 0 WHERE idem_key = :k"),
                                   {"k": f"c-{needle}"})
        finally:
            await engine.dispose()
        retried = await c.post("/v1/chat/completions", content=raw, headers=idem)
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert charges(await statement(sp, org)) == 1
    held = (await balance(sp, org))["held_nanos"]
    assert held > 0  # the crashed request's hold waits for the worker's expiry, never charged


async def test_control_plane_post_is_idempotent(sp: SimPlatform) -> None:
    _, key = await tenant(sp, 10**9)
    idem = {"idempotency-key": secrets.token_hex(8)}
    body = {"url": "https://93.184.216.34/hook", "event_types": ["key.revoked"]}
    async with sp.platform.client(key) as c:
        first = await c.post("/v1/webhooks/endpoints", json=body, headers=idem)
        again = await c.post("/v1/webhooks/endpoints", json=body, headers=idem)
        listed = (await c.get("/v1/webhooks/endpoints")).json()["data"]
    assert first.status_code in (200, 201), first.text
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert len(listed) == 1


async def test_claims_expire_after_retention() -> None:
    """A reuse after 24 hours runs as new (checked at the domain level with an injected clock)."""
    from core.settings import load_settings
    from tests.harness import use_postgres

    if use_postgres():
        pytest.skip("domain-level clock test runs once, on SQLite")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(load_settings({"NX_DATA_DIR": tmp}))
        from core.db import apply_schema

        await apply_schema(engine)
        args = {"org_id": "org_x", "key_id": "key_x", "method": "POST", "path": "/v1/embeddings",
                "idem_key": "k", "body": b"{}", "request_id": "req_1"}
        async with write_tx(engine) as conn:
            first = await idempotency.claim(conn, **args, now=1_000)
            await idempotency.complete(conn, first.record_id, idempotency.StoredResponse(200, [], b"ok"))
            assert (await idempotency.claim(conn, **args, now=2_000)).outcome == "replay"
            later = await idempotency.claim(conn, **args, now=1_000 + idempotency.RETENTION_MS)
            assert later.outcome == "run"
            assert await idempotency.prune(conn, now=10 * idempotency.RETENTION_MS) == 1
        await engine.dispose()
