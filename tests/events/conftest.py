"""Fixtures for the events tests: a migrated database (SQLite file or a fresh PostgreSQL database,
following NX_TEST_DATABASE) with one organization, used in-process with an injected clock (`rig`:
a dispatcher on that clock and helpers to create endpoints and events)."""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import apply_schema, make_engine, now_ms, write_tx
from core.events import record_event
from core.events.catalog import KeyRevoked
from core.events.delivery import Dispatcher
from core.events.endpoints import EndpointCreate, Scope, create_endpoint
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


PEPPER = "test-pepper"


class Clock:
    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> int:
        return self.now


@dataclass
class Rig:
    db: Db
    clock: Clock
    dispatcher: Dispatcher

    async def endpoint(self, url: str, types: list[str] | None = None) -> tuple[str, str]:
        view = await create_endpoint(self.db.engine, self.db.settings, PEPPER, Scope(self.db.org_id),
                                     EndpointCreate(url=url, event_types=types or ["*"]), "test")
        assert isinstance(view.secret, str)
        return view.id, view.secret

    async def event(self, key_id: str = "key_1", name: str = "ci") -> str:
        async with write_tx(self.db.engine) as conn:
            event_id = await record_event(conn, self.db.org_id, "key.revoked", KeyRevoked(
                key_id=key_id, prefix="nx-abc", name=name, revoked_at=1, revoked_by="admin"))
        assert event_id is not None
        return event_id

    async def tick(self) -> None:
        await self.dispatcher()
        await self.dispatcher.drain()

    async def delivery(self, endpoint_id: str) -> tuple[str, int, int | None, str | None]:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(text("SELECT status, attempts, next_attempt_at, last_error FROM "
                                           "webhook_deliveries WHERE endpoint_id = :e"),
                                      {"e": endpoint_id})).one()
        return str(row[0]), int(row[1]), row[2], row[3]

    async def endpoint_state(self, endpoint_id: str) -> tuple[int, str | None]:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(text("SELECT enabled, disabled_reason FROM webhook_endpoints "
                                           "WHERE id = :e"),
                                      {"e": endpoint_id})).one()
        return int(row[0]), row[1]


@pytest.fixture
async def rig(db: Db) -> AsyncIterator[Rig]:
    clock = Clock()
    dispatcher = Dispatcher(db.settings, db.engine, PEPPER, clock=clock, rng=random.Random(7))
    try:
        yield Rig(db, clock, dispatcher)
    finally:
        await dispatcher.aclose()
