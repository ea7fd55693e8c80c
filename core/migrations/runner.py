"""Where a database stands against this code's migrations, and bringing it there.

- An empty database is installed from schema.sql (the whole current schema) and every migration is
  recorded as `installed`: schema.sql equals the release baseline plus every migration, which
  tests/migrations checks by introspection on both databases.
- A database made by release c1e677f or earlier has tables but no `schema_migrations`: it is at
  no version, and upgrading runs migration 0001 (that release's schema, idempotent) and the rest.
- Otherwise the pending migrations run in order, each in one transaction with its
  `schema_migrations` row (a failed migration leaves nothing behind, and the run stops there), then
  its data batches if it has any (core/migrations/apply.py).

Everything runs under one database-wide lock (PostgreSQL: an advisory lock; SQLite: a lock file),
and the state is read only once it is held: several replicas starting together upgrade once, the
others find the work done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from core.migrations.apply import MigrationError, apply, record
from core.migrations.connect import Db, SqliteDb, connect
from core.migrations.files import MIGRATIONS_DIR, SCHEMA_PATH, Migration, load_migrations, split_schema
from core.rows import columns, rows_as

__all__ = ["Applied", "MigrationError", "SchemaError", "SchemaStatus", "UpgradeResult", "exit_unless_current",
           "install_statements", "read_status", "require_current", "status", "upgrade"]

State = Literal["empty", "unversioned", "current", "behind", "ahead", "changed"]

# Kept by this module, not by schema.sql: it records schema.sql and the migrations themselves.
SCHEMA_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    how TEXT NOT NULL CHECK (how IN ('installed', 'applied', 'backfilling')),
    applied_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
)"""
UPGRADE_HINT = "run `nx db upgrade` (back the database up first: `nx db backup`, see docs/operations.md)"


class SchemaError(RuntimeError):
    """This code cannot run against the database as it stands; the message names what to do."""


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    name: str
    checksum: str
    how: str
    applied_at: int
    duration_ms: int


class SchemaStatus(msgspec.Struct, frozen=True, kw_only=True):
    dialect: str
    state: State
    version: int
    """The highest migration recorded in the database (0: none)."""
    code_version: int
    applied: list[Applied]
    pending: list[str]
    unknown: list[str]
    """Recorded in the database, absent from this code (a later release upgraded it)."""
    changed: list[str]
    """Recorded with another checksum than this code's file (an applied migration was edited)."""
    backfilling: list[str] = []
    """Applied, but their batches have not all run (an upgrade stopped there; pending too)."""

    @property
    def problem(self) -> str | None:
        """Why a process of this code must not start against the database, naming the command."""
        if self.state == "empty":
            return "the database holds no schema yet: run `nx init` (or `nx up`), which installs it"
        if self.state == "unversioned":
            return ("the database was made by a release before versioned migrations (it has no "
                    f"schema_migrations table): {UPGRADE_HINT}")
        if self.state == "behind":
            return (f"the database schema is at version {self.version:04d}, this code needs "
                    f"{self.code_version:04d} (pending: {', '.join(self.pending)}): {UPGRADE_HINT}")
        if self.state == "ahead":
            return (f"the database schema is at version {self.version:04d}, newer than this code "
                    f"({self.code_version:04d}; not known here: {', '.join(self.unknown)}): it was upgraded "
                    "by a later release. Run that release, or restore the backup taken before the upgrade")
        if self.state == "changed":
            return (f"migration {', '.join(self.changed)} differs from the one applied to this database "
                    "(checksum): an applied migration must never be edited; restore the file as released")
        return None


class UpgradeResult(msgspec.Struct, frozen=True, kw_only=True):
    installed: bool
    """An empty database was installed from schema.sql."""
    applied: list[str]
    from_version: int
    to_version: int
    backup: str | None


async def _tables(db: Db) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = await db.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {str(r[0]) for r in rows}


async def read_status(db: Db, migrations: Sequence[Migration]) -> SchemaStatus:
    tables = await _tables(db)
    applied: list[Applied] = []
    if "schema_migrations" in tables:
        applied = rows_as(Applied, await db.query(
            f"SELECT {columns(Applied)} FROM schema_migrations ORDER BY version"))
    known = {m.name: m for m in migrations}
    done = {a.name for a in applied if a.how != "backfilling"}
    unknown = [a.name for a in applied if a.name not in known]
    changed = [a.name for a in applied if a.name in known and known[a.name].checksum != a.checksum]
    pending = [m.name for m in migrations if m.name not in done]
    version = max((a.version for a in applied), default=0)
    state: State
    if not tables:
        state = "empty"
    elif "schema_migrations" not in tables:
        state = "unversioned"
    elif unknown:
        state = "ahead"
    elif changed:
        state = "changed"
    elif pending:
        state = "behind"
    else:
        state = "current"
    return SchemaStatus(dialect=db.dialect, state=state, version=version, code_version=migrations[-1].version,
                        applied=applied, pending=pending, unknown=unknown, changed=changed,
                        backfilling=[a.name for a in applied if a.how == "backfilling"])


async def status(url: str, directory: Path = MIGRATIONS_DIR) -> SchemaStatus:
    """Where the database at `url` (Settings.effective_database_url) stands; changes nothing."""
    migrations = load_migrations(directory)
    db = await connect(url)
    try:
        return await read_status(db, migrations)
    finally:
        await db.close()


async def require_current(url: str, directory: Path = MIGRATIONS_DIR) -> None:
    """Raise SchemaError unless the database is exactly at this code's version (process start)."""
    problem = (await status(url, directory)).problem
    if problem is not None:
        raise SchemaError(problem)


async def upgrade(url: str, *, directory: Path = MIGRATIONS_DIR, schema_path: Path = SCHEMA_PATH,
                  backup_dir: Path | None = None) -> UpgradeResult:
    """Install an empty database or apply the pending migrations, under the migration lock.

    `backup_dir`: on SQLite, copy the database there (online backup API) before the first
    migration runs; PostgreSQL is backed up by the operator with pg_dump (docs/operations.md)."""
    migrations = load_migrations(directory)
    db = await connect(url)
    try:
        await db.lock()
        before = await read_status(db, migrations)
        if before.state in ("ahead", "changed"):
            raise SchemaError(str(before.problem))
        if before.state == "empty":
            await _install(db, schema_path.read_text(), migrations)
            return UpgradeResult(installed=True, applied=[], from_version=0,
                                 to_version=migrations[-1].version, backup=None)
        backup = None
        if before.pending and backup_dir is not None and isinstance(db, SqliteDb):
            from core.migrations.backup import backup_name, backup_sqlite

            backup = str(backup_sqlite(db.path, backup_dir / backup_name(f"pre-upgrade-v{before.version:04d}")))
        if before.state == "unversioned":
            await _in_transaction(db, [SCHEMA_MIGRATIONS])
        for migration in migrations:
            if migration.name in before.pending:
                await apply(db, migration, resume=migration.name in before.backfilling)
        return UpgradeResult(installed=False, applied=before.pending, from_version=before.version,
                             to_version=migrations[-1].version, backup=backup)
    finally:
        await db.close()


async def _in_transaction(db: Db, statements: Sequence[str]) -> None:
    await db.begin()
    try:
        for statement in statements:
            await db.execute(statement)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise


async def install_statements(db: Db, schema: str, migrations: Sequence[Migration]) -> None:
    """schema.sql and the records saying it holds every migration, in the caller's transaction."""
    started = time.monotonic()
    await db.execute(SCHEMA_MIGRATIONS)
    for statement in split_schema(schema, db.dialect):
        await db.execute(statement)
    await db.execute("INSERT INTO config_version (id, version) VALUES (1, 1) ON CONFLICT (id) DO NOTHING")
    for migration in migrations:
        await record(db, migration, "installed", started)


async def _install(db: Db, schema: str, migrations: Sequence[Migration]) -> None:
    await db.begin()
    try:
        await install_statements(db, schema, migrations)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise


def exit_unless_current(url: str, process: str) -> None:
    """The first thing every long-running process does: refuse to start against a database older or
    newer than its code, with the message naming the command to run (a clean exit, status 1)."""
    import asyncio

    try:
        asyncio.run(require_current(url))
    except SchemaError as exc:
        raise SystemExit(f"nx {process}: refusing to start: {exc}") from None
