"""Fixtures for the migration tests: an empty database of the kind NX_TEST_DATABASE names (a SQLite
file, or a PostgreSQL database created for the test and dropped after it), and what tests read from
a database: its rows, its schema, its reconciliation."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.db import make_engine, read_tx
from core.ledger import ReconcileReport, reconcile
from core.migrations.connect import Db, connect
from core.migrations.introspect import Shape, shape
from core.settings import Settings, load_settings
from tests.harness import create_pg_database, drop_pg_database, use_postgres


@dataclass
class EmptyDb:
    env: dict[str, str]
    settings: Settings
    data_dir: Path

    @property
    def url(self) -> str:
        return self.settings.effective_database_url


async def new_database() -> tuple[EmptyDb, tempfile.TemporaryDirectory[str], str | None]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-migrations-")
    env = {"NX_DATA_DIR": tmp.name}
    pg_name = None
    if use_postgres():
        pg_name, env["DATABASE_URL"] = await create_pg_database()
    return EmptyDb(env, load_settings(env), Path(tmp.name)), tmp, pg_name


@pytest.fixture
async def empty() -> AsyncIterator[EmptyDb]:
    db, tmp, pg_name = await new_database()
    try:
        yield db
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


@pytest.fixture
async def other_empty() -> AsyncIterator[EmptyDb]:
    """A second empty database (a fresh install to compare with, a restore target)."""
    db, tmp, pg_name = await new_database()
    try:
        yield db
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


async def shape_of(url: str) -> Shape:
    db = await connect(url)
    try:
        return await shape(db)
    finally:
        await db.close()


async def _columns(db: Db, table: str) -> list[str]:
    if db.dialect == "sqlite":
        return [str(r[1]) for r in await db.query(f"PRAGMA table_info({table})")]
    return [str(r[0]) for r in await db.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ? ORDER BY ordinal_position", table)]


async def columns_of(url: str) -> dict[str, list[str]]:
    """Every table's columns (schema_migrations aside)."""
    db = await connect(url)
    try:
        tables = [t for t in (k.split(" ", 1)[1] for k in await shape(db) if k.startswith("table "))
                  if t != "schema_migrations"]
        return {t: await _columns(db, t) for t in sorted(tables)}
    finally:
        await db.close()


async def rows_of(url: str, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows, restricted to `columns`, in a stable order."""
    db = await connect(url)
    try:
        out = {}
        for table, cols in columns.items():
            rows = await db.query(f"SELECT {', '.join(cols)} FROM {table}")
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        await db.close()


async def reconcile_all(settings: Settings) -> ReconcileReport:
    engine = make_engine(settings)
    try:
        async with read_tx(engine) as conn:
            return await reconcile(conn)
    finally:
        await engine.dispose()
