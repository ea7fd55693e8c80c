"""Fixtures for the usage tests: a fresh real database (SQLite file or PostgreSQL database per
NX_TEST_DATABASE), tenants with several projects, keys and models, and usage produced through the
ledger itself (`place_hold` + `settle_hold`, the path real traffic takes).

Rollup watermarks are global to a database, so this package has its own database and every test
takes its records from `Clock.window()`: a fresh stretch of synthetic time later than anything
written before, so a watermark moved by one test never hides another test's records.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import apply_schema, make_engine, now_ms, write_tx
from core.ids import new_id
from core.ledger import Usage
from core.settings import load_settings
from tests.harness import create_pg_database, drop_pg_database, use_postgres

MODELS = ("test/alpha", "test/beta")
# nano-dollars per million tokens (input, cached input, output): odd figures so costs round.
PRICES = {"test/alpha": (3_000_000_007, 1_500_000_003, 12_000_000_011),
          "test/beta": (150_000_001, 75_000_000, 600_000_013)}
ENDPOINTS = ("responses", "chat", "embeddings")
DAY = 86_400_000


@dataclass(frozen=True)
class Org:
    org_id: str
    projects: tuple[str, ...]
    keys: tuple[str, ...]
    """keys[i] belongs to projects[i % len(projects)]; keys[0] is scoped to projects[0] only."""


@dataclass(frozen=True)
class Rec:
    """One request to produce: offset into a window, tenant indexes, outcome."""

    at: int
    key: int
    model: int
    endpoint: int
    status: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_ms: int | None


class Clock:
    """Hands out disjoint, increasing windows of synthetic time (unix ms), from 2031-01-01."""

    def __init__(self) -> None:
        self.next = 1_924_992_000_000

    def window(self, days: int) -> int:
        start = self.next
        self.next += (days + 1) * DAY
        return start


@pytest.fixture(scope="session")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[AsyncEngine]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-usage-")
    pg_name = None
    env = {"NX_DATA_DIR": tmp.name}
    if use_postgres():
        pg_name, env["DATABASE_URL"] = await create_pg_database()
    eng = make_engine(load_settings(env))
    await apply_schema(eng)
    now = now_ms()
    async with write_tx(eng) as conn:
        await conn.execute(text("INSERT INTO backends (id, protocol, base_url, created_at, updated_at)"
                                " VALUES ('be_test', 'openai', 'http://127.0.0.1:9', :n, :n)"), {"n": now})
        for model in MODELS:
            await conn.execute(text(
                "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window,"
                " max_output_tokens, created_at, updated_at)"
                " VALUES (:m, :m, 'be_test', :m, 'text', 8192, 4096, :n, :n)"), {"m": model, "n": now})
            price = PRICES[model]
            await conn.execute(text(
                "INSERT INTO price_cards (id, model_id, version, input_nanos_per_mtok,"
                " cached_input_nanos_per_mtok, output_nanos_per_mtok, effective_at, created_at)"
                " VALUES (:id, :m, 1, :i, :c, :o, 0, 0)"),
                {"id": new_id("price"), "m": model, "i": price[0], "c": price[1], "o": price[2]})
    try:
        yield eng
    finally:
        await eng.dispose()
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


async def make_org(engine: AsyncEngine, projects: int = 2, keys: int = 3, credit: int = 10**15) -> Org:
    org = Org(new_id("org"), tuple(new_id("proj") for _ in range(projects)),
              tuple(new_id("key") for _ in range(keys)))
    now = now_ms()
    async with write_tx(engine) as conn:
        await conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES (:o, 'U', :n)"),
                           {"o": org.org_id, "n": now})
        for i, p in enumerate(org.projects):
            await conn.execute(text(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES (:p, :o, :name, :n)"),
                {"p": p, "o": org.org_id, "name": f"P{i}", "n": now})
        for i, k in enumerate(org.keys):
            scoped = f'["{org.projects[0]}"]' if i == 0 else "[]"
            await conn.execute(text(
                "INSERT INTO api_keys (id, org_id, prefix, key_hash, projects, created_at, updated_at)"
                " VALUES (:k, :o, 'nx', :h, :pr, :n, :n)"),
                {"k": k, "o": org.org_id, "h": new_id("key"), "pr": scoped, "n": now})
        await ledger.grant(conn, org.org_id, credit, idempotency_key=new_id("req"), actor="test")
    return org


async def produce(engine: AsyncEngine, org: Org, base: int, recs: Sequence[Rec]) -> list[str]:
    """Hold and settle every request at its own time, through the ledger; returns the request ids."""
    ids = []
    async with write_tx(engine) as conn:
        for r in recs:
            request_id = new_id("req")
            at = base + r.at
            key = org.keys[r.key % len(org.keys)]
            await ledger.place_hold(
                conn, org_id=org.org_id, project_id=org.projects[r.key % len(org.projects)], key_id=key,
                request_id=request_id, model_id=MODELS[r.model % len(MODELS)],
                endpoint=ENDPOINTS[r.endpoint % len(ENDPOINTS)], backend_id="be_test",
                max_input_tokens=r.input_tokens, max_output_tokens=r.output_tokens,
                expires_at_ms=at + 60_000, client_ip="127.0.0.1", now=at)
            await ledger.settle_hold(conn, request_id, Usage(
                status=r.status, input_tokens=r.input_tokens, cached_tokens=r.cached_tokens,
                output_tokens=r.output_tokens, latency_ms=r.latency_ms), now=at)
            ids.append(request_id)
    return ids
