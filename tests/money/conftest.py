"""Fixtures for the money tests: a real database (SQLite file or a fresh PostgreSQL database, as
NX_TEST_DATABASE says) with the schema applied, and fresh tenants on demand.

The ledger functions are exercised directly on that database, on many connections at once where
concurrency matters; the operator API and CLI tests use the real platform (`platform` fixture).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import apply_schema, make_engine, now_ms, write_tx
from core.ids import new_id
from core.settings import load_settings
from tests.harness import create_pg_database, drop_pg_database, use_postgres

MODEL = "test/text"
UNPRICED = "test/unpriced"
# $3 / $1.50 / $12 per million tokens: 3000, 1500 and 12000 nano-dollars per token.
PRICE = (3_000_000_000, 1_500_000_000, 12_000_000_000)


@dataclass(frozen=True)
class Tenant:
    org_id: str
    project_id: str
    key_id: str


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[AsyncEngine]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-money-")
    pg_name = None
    env = {"NX_DATA_DIR": tmp.name}
    if use_postgres():
        pg_name, env["DATABASE_URL"] = await create_pg_database()
    settings = load_settings(env)
    # Pool large enough for the 60-way concurrency tests on PostgreSQL.
    eng = make_engine(settings) if settings.is_sqlite else make_engine(settings, pool_size=70, max_overflow=10)
    await apply_schema(eng)
    now = now_ms()
    async with write_tx(eng) as conn:
        await conn.execute(text("INSERT INTO backends (id, protocol, base_url, created_at, updated_at)"
                                " VALUES ('be_test', 'openai', 'http://127.0.0.1:9', :n, :n)"), {"n": now})
        for model in (MODEL, UNPRICED):
            await conn.execute(text(
                "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window,"
                " max_output_tokens, created_at, updated_at) VALUES (:m, :m, 'be_test', :m, 'text', 8192, 4096,"
                " :n, :n)"), {"m": model, "n": now})
        await add_price(conn, MODEL, 1, PRICE, effective_at=0)
    try:
        yield eng
    finally:
        await eng.dispose()
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


async def add_price(conn: object, model: str, version: int, price: tuple[int, int, int], effective_at: int) -> None:
    from sqlalchemy.ext.asyncio import AsyncConnection

    assert isinstance(conn, AsyncConnection)
    await conn.execute(text(
        "INSERT INTO price_cards (id, model_id, version, input_nanos_per_mtok, cached_input_nanos_per_mtok,"
        " output_nanos_per_mtok, effective_at, created_at) VALUES (:id, :m, :v, :i, :c, :o, :e, :e)"),
        {"id": new_id("price"), "m": model, "v": version, "i": price[0], "c": price[1], "o": price[2],
         "e": effective_at})


async def make_tenant(engine: AsyncEngine, *, key_budget: int | None = None,
                      project_budget: int | None = None) -> Tenant:
    t = Tenant(new_id("org"), new_id("proj"), new_id("key"))
    now = now_ms()
    async with write_tx(engine) as conn:
        await conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES (:o, 'T', :n)"),
                           {"o": t.org_id, "n": now})
        await conn.execute(text("INSERT INTO projects (id, org_id, name, monthly_budget_nanos, created_at)"
                                " VALUES (:p, :o, 'P', :b, :n)"),
                           {"p": t.project_id, "o": t.org_id, "b": project_budget, "n": now})
        await conn.execute(text(
            "INSERT INTO api_keys (id, org_id, prefix, key_hash, monthly_budget_nanos, created_at, updated_at)"
            " VALUES (:k, :o, 'nx', :h, :b, :n, :n)"),
            {"k": t.key_id, "o": t.org_id, "h": new_id("key"), "b": key_budget, "n": now})
    return t


@pytest.fixture
async def tenant(engine: AsyncEngine) -> Tenant:
    return await make_tenant(engine)
