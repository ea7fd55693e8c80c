"""(c) The platform, started on an operator's release-c1e677f database, upgrades it and serves through
the edge: the release's keys still authenticate (a revoked one is still refused), a request is held,
answered and charged, the books still reconcile to zero drift, and the webhook endpoint the release
left mid-rotation gets the request's event signed with both its secrets (the replaced one moved to
another table by migration 0002)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db import make_engine, read_tx
from core.migrations import status
from core.migrations.connect import connect
from core.settings import Settings
from nx_client.webhooks import verify
from tests.events.receiver import Receiver
from tests.harness import Platform
from tests.migrations.conftest import reconcile_all
from tests.migrations.release_c1e677f import KEY_SECRET, MODEL, ORG_A, PEPPER, build_release_database, release_key
from tests.migrations.release_c1e677f_data import (
    IDEMPOTENT_ANSWER,
    IDEMPOTENT_REQUEST,
    WEBHOOK_PREVIOUS_SECRET,
    WEBHOOK_SECRET,
)
from tests.simulator.server import SimulatorProcess

CATALOG = """
[[backends]]
id = "sim"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_SIM_KEY"
timeout_ms = 5000

[[models]]
id = "sim/chat"
display_name = "Simulated chat"
backend = "sim"
upstream_name = "sim-chat-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 1024
aliases = ["sim-chat"]
price = {{ input_nanos_per_mtok = 1_000_000_000, cached_input_nanos_per_mtok = 500_000_000, \
output_nanos_per_mtok = 2_000_000_000, effective_at = 2026-01-01 }}
"""


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def upgraded(receiver: Receiver) -> AsyncIterator[Platform]:
    async def release_database(settings: Settings) -> None:
        url = settings.effective_database_url
        await build_release_database(url)
        db = await connect(url)  # the operator's receiver, here on this machine
        try:
            await db.execute("UPDATE webhook_endpoints SET url = ? WHERE description = 'billing'", receiver.url)
        finally:
            await db.close()

    sim = SimulatorProcess().start()
    tmp = tempfile.TemporaryDirectory(prefix="nx-upgraded-")
    catalog = Path(tmp.name) / "catalog.toml"
    catalog.write_text(CATALOG.format(sim=sim.url))
    p = Platform(extra_env={"NX_CATALOG_PATH": str(catalog), "NX_TEST_SIM_KEY": sim.api_key,
                            "NX_KEY_PEPPER": PEPPER, "NX_WEBHOOKS_ALLOW_HTTP": "true",
                            "NX_WEBHOOKS_ALLOW_PRIVATE": "true"}, database=release_database)
    try:
        await p.start()
        yield p
    finally:
        await p.stop()
        sim.stop()
        tmp.cleanup()


async def _charges(settings: Settings) -> int:
    engine = make_engine(settings)
    try:
        async with read_tx(engine) as conn:
            return int((await conn.execute(text(
                "SELECT COUNT(*) FROM ledger_transactions WHERE org_id = :o AND kind = 'charge'"),
                {"o": ORG_A})).scalar_one())
    finally:
        await engine.dispose()


async def test_the_upgraded_platform_serves_and_bills_the_release_key(upgraded: Platform,
                                                                      receiver: Receiver) -> None:
    assert (await status(upgraded.s.effective_database_url)).state == "current"
    assert upgraded.boot is not None and upgraded.boot.org_id == ORG_A and upgraded.boot.secret is None
    before = await _charges(upgraded.s)
    async with upgraded.client(KEY_SECRET) as client:
        r = await client.post("/v1/chat/completions", json={
            "model": "sim-chat", "max_tokens": 16, "messages": [{"role": "user", "content": "after the upgrade"}]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "sim-chat" and r.headers["x-request-id"].startswith("req_")
    assert await _charges(upgraded.s) == before + 1
    report = await reconcile_all(upgraded.s)
    assert report.ok, report.drift
    [delivery] = await receiver.wait_for(1, timeout=60)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    for secret in (WEBHOOK_SECRET, WEBHOOK_PREVIOUS_SECRET):
        event = verify(secret, delivery.body, delivery.headers)
        assert event["type"] == "request.completed" and event["data"]["request_id"] == r.headers["x-request-id"]


async def test_the_release_keys_keep_their_state(upgraded: Platform) -> None:
    async with upgraded.client(release_key("revoked")) as client:
        revoked = await client.get("/v1/models")
    assert revoked.status_code == 401, revoked.text
    listed = {}
    for name, key in (("production", KEY_SECRET), ("globex", release_key("globex"))):
        async with upgraded.client(key) as client:
            r = await client.get("/v1/models")
        assert r.status_code == 200, r.text
        listed[name] = {m["id"] for m in r.json()["data"]}
    # The globex key was limited to one model by the release; the production key was not.
    assert {MODEL, "sim/embed"} <= listed["production"]
    assert MODEL in listed["globex"] and "sim/embed" not in listed["globex"]


async def test_an_answer_the_release_stored_is_replayed_for_its_idempotency_key(upgraded: Platform) -> None:
    before = await _charges(upgraded.s)
    async with upgraded.client(KEY_SECRET) as client:
        r = await client.post("/v1/chat/completions", content=IDEMPOTENT_REQUEST,
                              headers={"content-type": "application/json", "idempotency-key": "order-0"})
    assert r.status_code == 200, r.text
    assert r.content == IDEMPOTENT_ANSWER and r.headers["idempotent-replayed"] == "true"
    assert await _charges(upgraded.s) == before
