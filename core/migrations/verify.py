"""`nx db status --verify`: does the database's schema equal a fresh install of this code's?

The fresh install is built where it costs nothing to throw away: SQLite in a temporary file,
PostgreSQL in a scratch schema inside a transaction that is rolled back. Both are then compared by
introspection (core/migrations/introspect.py), which also catches a hand-made change an operator
applied outside the migrations.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from core.migrations.connect import SqliteDb, connect
from core.migrations.files import MIGRATIONS_DIR, SCHEMA_PATH, load_migrations
from core.migrations.introspect import Shape, differences, shape
from core.migrations.runner import install_statements

__all__ = ["fresh_shape", "verify"]


async def fresh_shape(url: str, *, directory: Path = MIGRATIONS_DIR, schema_path: Path = SCHEMA_PATH) -> Shape:
    """The shape a fresh install of schema.sql has on the database kind at `url`."""
    migrations = load_migrations(directory)
    schema = schema_path.read_text()
    if url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="nx-verify-") as tmp:
            scratch = SqliteDb(str(Path(tmp) / "fresh.db"))
            try:
                await install_statements(scratch, schema, migrations)
                return await shape(scratch)
            finally:
                await scratch.close()
    db = await connect(url)
    name = f"nx_verify_{secrets.token_hex(6)}"
    try:
        await db.begin()
        try:
            await db.execute(f"CREATE SCHEMA {name}")
            await db.execute(f"SET LOCAL search_path TO {name}")
            await install_statements(db, schema, migrations)
            return await shape(db)
        finally:
            await db.rollback()
    finally:
        await db.close()


async def verify(url: str, *, directory: Path = MIGRATIONS_DIR, schema_path: Path = SCHEMA_PATH) -> list[str]:
    """What differs between the database at `url` and a fresh install (empty: nothing)."""
    expected = await fresh_shape(url, directory=directory, schema_path=schema_path)
    db = await connect(url)
    try:
        return differences(expected, await shape(db))
    finally:
        await db.close()
