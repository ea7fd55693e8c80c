"""Findings 4, 5 and 6 of issue 12: served work is charged whatever happens to its settlement.

- a stream that outlives its hold's first expiry is charged in full: the adapter renews the hold
  while the stream is live (finding 4);
- a stream delivered while the database is unreachable is charged once it returns, by the
  adapter's settler, from the journal of what it sent (finding 5);
- a stream cut by a kill -9 of its adapter is charged what it delivered, by the next adapter's
  settler, even after its hold expired meanwhile (finding 6).

The platform runs with short leases (hold grace 1 s past the simulator backend's 5 s timeout,
renewals every 0.5 s, the settler every 0.5 s), so each case takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from control_plane.supervisor import _wait_healthy
from core.db import make_engine
from tests.faults.metering_support import assert_books, debit, eventually, tenant
from tests.harness import ROOT, Platform, pg_admin_dsn
from tests.inference.helpers import chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform, start_sim_platform

pytestmark = [pytest.mark.faults]

LEASES = {"NX_HOLD_GRACE_SECONDS": "1", "NX_HOLD_RENEW_SECONDS": "0.5", "NX_JOURNAL_SETTLE_SECONDS": "0.5"}
BOUND_S = 120
"""Each case's bound in time (the waits inside are bounded more tightly)."""


@pytest.fixture(scope="module")
async def leased() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform(env=LEASES)
    try:
        yield running
    finally:
        await running.stop()


def _content(event: Any) -> bool:
    return bool(isinstance(event, dict) and event.get("choices") and event["choices"][0]["delta"].get("content"))


async def _hold_status(sp: SimPlatform, org: str) -> list[str]:
    engine = make_engine(sp.platform.s)
    try:
        async with engine.connect() as conn:
            return [str(r[0]) for r in await conn.execute(text(
                "SELECT status FROM ledger_holds WHERE org_id = :o"), {"o": org})]
    finally:
        await engine.dispose()


async def test_a_stream_that_outlives_its_hold_is_charged_in_full(leased: SimPlatform) -> None:
    """The hold expires 6 s after it is placed (5 s backend timeout + 1 s grace); the stream lasts
    ~9 s (its timeout is between chunks). Before the fix the worker expired the hold mid-stream
    and settlement refused it: charge 0."""
    async with asyncio.timeout(BOUND_S):
        org, key = await tenant(leased)
        prompt = f"[[sim chunks=90 chunk_ms=100]] long {marker()}"
        async with leased.platform.client(key) as c, \
                c.stream("POST", "/v1/chat/completions", json=chat_body(prompt, stream=True)) as r:
            events, comments, done = await read_sse(r)
        assert done, events[-3:]
        meta = final_metadata(comments)
        b = await assert_books(leased, org, requests=1, debits=[debit(meta)])
        [u] = b.usage
        assert (u.status, u.output_tokens) == (200, 90) and u.cost_nanos > 0, u


@contextlib.contextmanager
def _sqlite_locked(path: str) -> Iterator[None]:
    """The database unreachable for writing: another process holds SQLite's exclusive lock."""
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        db.close()


@contextlib.asynccontextmanager
async def _database_down(platform: Platform) -> AsyncIterator[None]:
    """SQLite: locked (writes fail after the 5 s busy timeout). PostgreSQL: the platform's
    database refuses new connections and every connection to it is terminated."""
    if platform.s.is_sqlite:
        with _sqlite_locked(str(platform.s.data_path / "nx.db")):
            yield
        return
    name = platform._pg_name
    admin = await asyncpg.connect(pg_admin_dsn())
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        try:
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def test_a_stream_delivered_while_the_database_is_down_is_charged_when_it_returns(
        leased: SimPlatform) -> None:
    async with asyncio.timeout(BOUND_S):
        org, key = await tenant(leased)
        prompt = f"[[sim chunks=40 chunk_ms=50]] outage {marker()}"
        delivered = 0
        events: list[Any] = []
        async with leased.platform.client(key) as c, \
                c.stream("POST", "/v1/chat/completions", json=chat_body(prompt, stream=True)) as r:
            lines = r.aiter_lines()
            async for line in lines:
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    delivered += _content(events[-1])
                    if delivered == 5:
                        break
            async with _database_down(leased.platform):
                async for line in lines:
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        delivered += _content(events[-1])
                # The whole answer went out; its settlement failed (the client is told so).
                assert events[-1]["error"]["code"] == "billing_unavailable", events[-1]
                assert delivered == 40
                await asyncio.sleep(1.5)  # a few settler rounds fail against the outage too
        b = await assert_books(leased, org, requests=1)
        [u] = b.usage
        assert (u.status, u.output_tokens) == (200, 40) and u.cost_nanos > 0, u


async def test_a_stream_cut_by_an_adapter_crash_is_charged_what_it_delivered(leased: SimPlatform) -> None:
    """kill -9 of the adapter mid-stream; its hold expires while no adapter runs; the next
    adapter's settler charges the request from the dead adapter's journal, once."""
    async with asyncio.timeout(BOUND_S):
        org, key = await tenant(leased)
        prompt = f"[[sim chunks=400 chunk_ms=20]] crash {marker()}"
        adapter = next(ch for ch in leased.platform.started if ch.name.startswith("adapter"))
        assert adapter.proc is not None
        delivered, request_id = 0, ""
        with contextlib.suppress(httpx.HTTPError):
            async with leased.platform.client(key) as c, \
                    c.stream("POST", "/v1/chat/completions", json=chat_body(prompt, stream=True)) as r:
                request_id = r.headers["x-request-id"]
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        delivered += _content(json.loads(line[6:]))
                        if delivered == 20:
                            adapter.proc.kill()
                            await adapter.proc.wait()
        assert 20 <= delivered < 400

        async def expired() -> bool:
            return await _hold_status(leased, org) == ["expired"]

        await eventually(expired, "the crashed request's hold expires", timeout=30)
        # Reconcile sees what was served and not billed, from the dead adapter's journal.
        async with leased.platform.admin() as admin:
            report = (await admin.get("/api/ledger/reconcile", params={"org_id": org})).json()
        [drift] = report["drift"]
        assert (drift["check"], drift["subject"]) == ("served_vs_billed", request_id)
        assert drift["expected"] >= delivered, drift
        adapter.proc = await asyncio.create_subprocess_exec(*adapter.argv, env=leased.platform.env, cwd=str(ROOT))
        await _wait_healthy(adapter, timeout=60)
        b = await assert_books(leased, org, requests=1)
        [u] = b.usage
        assert u.status == 502 and delivered <= u.output_tokens <= delivered + 5 and u.input_tokens > 0, u
        assert await _hold_status(leased, org) == ["settled"]


async def test_a_background_response_that_outlives_its_hold_is_charged_in_full(leased: SimPlatform) -> None:
    """A background run is not renewed (no stream to the client): its hold expires at 6 s while the
    ~9 s run goes on; the run is charged at its end all the same (late settlement)."""
    async with asyncio.timeout(BOUND_S):
        org, key = await tenant(leased)
        prompt = f"[[sim chunks=90 chunk_ms=100]] long background {marker()}"
        async with leased.platform.client(key) as c:
            created = await c.post("/v1/responses", json={"model": "sim-chat", "input": prompt, "background": True})
            rid = created.json()["id"]

            async def completed() -> bool:
                return bool((await c.get(f"/v1/responses/{rid}")).json()["status"] == "completed")

            await eventually(completed, "the background response completes", timeout=40)
        b = await assert_books(leased, org, requests=2)  # the create request (nothing to charge) and the run
        [u] = [u for u in b.usage if u.request_id == rid]
        assert (u.status, u.output_tokens) == (200, 90) and u.cost_nanos > 0, u
