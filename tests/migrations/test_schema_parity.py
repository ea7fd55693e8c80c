"""CI's check that schema.sql never changes without a migration, on the database NX_TEST_DATABASE names.

A fresh install (schema.sql) and release c1e677f's schema taken through every migration must be the
same schema, compared object by object by introspection (tables, columns with their types, nullability
and defaults, constraints, indexes, triggers, functions). When this fails after a schema.sql change,
write the migration that makes it pass (docs/operations.md, "Changing the schema").
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.migrations import MIGRATIONS_DIR, SCHEMA_PATH, load_migrations, upgrade
from core.migrations.introspect import Shape, differences
from core.migrations.verify import fresh_shape
from tests.harness import drop_pg_database
from tests.migrations.conftest import EmptyDb, new_database, shape_of
from tests.migrations.release_c1e677f import RELEASE_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
# SHA-256 of `git show c1e677f:schema.sql`: migration 0001 below its note is that file, byte for byte.
RELEASE_SCHEMA_SHA256 = "920d06d6ab55ca40f7a70e777073694626c2d2d81ff11d42023b43bf45dc3a77"


async def release_through_migrations(db: EmptyDb) -> None:
    """Release c1e677f's schema as that release made it (no schema_migrations), then upgraded."""
    from core.migrations.connect import connect
    from core.migrations.files import split_schema

    conn = await connect(db.url)
    try:
        for statement in split_schema(RELEASE_SCHEMA.read_text(), conn.dialect):
            await conn.execute(statement)
    finally:
        await conn.close()
    result = await upgrade(db.url)
    assert not result.installed and result.from_version == 0


async def test_schema_sql_equals_the_release_schema_plus_every_migration(empty: EmptyDb,
                                                                        other_empty: EmptyDb) -> None:
    await release_through_migrations(empty)
    assert (await upgrade(other_empty.url)).installed
    drift = differences(await shape_of(other_empty.url), await shape_of(empty.url))
    assert not drift, ("schema.sql and the migrations disagree (a schema.sql change without its migration?):\n"
                       + "\n".join(drift))


def test_migration_0001_is_the_released_schema_byte_for_byte() -> None:
    text = RELEASE_SCHEMA.read_bytes()
    body = text[text.index(b"-- Canonical schema"):]
    assert hashlib.sha256(body).hexdigest() == RELEASE_SCHEMA_SHA256
    shown = subprocess.run(["git", "show", "c1e677f:schema.sql"], cwd=ROOT, capture_output=True, check=False)
    if shown.returncode == 0:  # a shallow clone may not have the release commit; the hash above still holds
        assert shown.stdout == body


def test_migration_files_are_numbered_and_named() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "0001_release_c1e677f"
    assert all(p.suffix == ".sql" or p.name == "README.md" for p in MIGRATIONS_DIR.iterdir())


# A schema.sql edit per kind of object: the comparison must see each one, or it could pass a change
# that has no migration. The anchors are chosen among the oldest, steadiest parts of the schema.
MUTATIONS = {
    "a new column": ("    version BIGINT NOT NULL\n);", "    version BIGINT NOT NULL,\n    note TEXT\n);"),
    "a dropped NOT NULL": ("    version BIGINT NOT NULL\n);", "    version BIGINT\n);"),
    "a changed CHECK": ("id INTEGER PRIMARY KEY CHECK (id = 1)", "id INTEGER PRIMARY KEY CHECK (id >= 1)"),
    "a changed default": ("plan TEXT NOT NULL DEFAULT 'default'", "plan TEXT NOT NULL DEFAULT 'free'"),
    "a changed index": ("ON api_keys (org_id, created_at)", "ON api_keys (org_id)"),
    "a new table": ("CREATE TABLE IF NOT EXISTS plans (",
                    "CREATE TABLE IF NOT EXISTS probe (id TEXT PRIMARY KEY);\nCREATE TABLE IF NOT EXISTS plans ("),
    "a changed trigger": ("is append-only", "is append only"),
    "a foreign key no longer deferred": (" DEFERRABLE INITIALLY DEFERRED", ""),
    "a new unique constraint": ("    name TEXT NOT NULL,\n    plan TEXT",
                                "    name TEXT NOT NULL UNIQUE,\n    plan TEXT"),
}


@pytest.fixture(scope="module")
async def scratch() -> AsyncIterator[tuple[str, Shape]]:
    """A database to build fresh installs in (inside a rolled-back transaction on PostgreSQL), and
    the shape of schema.sql as it is."""
    db, tmp, pg_name = await new_database()
    try:
        yield db.url, await fresh_shape(db.url)
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_the_comparison_sees_every_kind_of_change(mutation: str, scratch: tuple[str, Shape],
                                                        tmp_path: Path) -> None:
    anchor, replacement = MUTATIONS[mutation]
    schema = SCHEMA_PATH.read_text()
    assert anchor in schema, f"the anchor of {mutation!r} left schema.sql: pick another one"
    changed = tmp_path / "schema.sql"
    changed.write_text(schema.replace(anchor, replacement))
    url, expected = scratch
    drift = differences(expected, await fresh_shape(url, schema_path=changed))
    assert drift, f"{mutation} went unnoticed"
