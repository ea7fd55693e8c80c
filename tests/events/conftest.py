"""Fixtures for the events tests: a migrated database (SQLite file or a fresh PostgreSQL database,
following NX_TEST_DATABASE) with one organization, used in-process with an injected clock."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import apply_schema, make_engine, now_ms, write_tx
from core.ids import new_id
from core.settings import Settings, load_settings
from tests.harness import create_pg_database, drop_pg_database, use_postgres


@dataclass
class Db:
    engine: AsyncEngine
    settings: Settings
    org_id: str
    project_id: str


@pytest.fixture
async def db() -> AsyncIterator[Db]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-events-")
    env = {"NX_DATA_DIR": tmp.name, "NX_WEBHOOKS_ALLOW_HTTP": "true", "NX_WEBHOOKS_ALLOW_PRIVATE": "true"}
    pg_name = None
    if use_postgres():
        pg_name, env["DATABASE_URL"] = await create_pg_database()
    settings = load_settings(env)
    engine = make_engine(settings)
    await apply_schema(engine)
    org, proj = new_id("org"), new_id("proj")
    async with write_tx(engine) as conn:
        await conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES (:o, 'acme', :n)"),
                           {"o": org, "n": now_ms()})
        await conn.execute(text("INSERT INTO projects (id, org_id, name, created_at) "
                                "VALUES (:p, :o, 'p', :n)"),
                           {"p": proj, "o": org, "n": now_ms()})
    try:
        yield Db(engine, settings, org, proj)
    finally:
        await engine.dispose()
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()
