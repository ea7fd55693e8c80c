"""Applying one migration: its schema part in one transaction, then its batches, each in its own.

The schema part (everything above a line `-- nx: batches`) runs in one transaction together with
its `schema_migrations` row: applied whole or not at all. On SQLite it runs with foreign keys off
and `legacy_alter_table` on, so a table can be rebuilt and renamed into place (the documented way to
change a constraint there) even while other tables' triggers name it, and `PRAGMA
foreign_key_check` must come back empty before it commits.

Batches (the statements below that line) move data: each statement runs again and again, every run
in its own short transaction, until it changes no row, so a backfill of millions of rows never
holds a lock for long. A batch statement must change only rows not yet done (`... WHERE id IN
(SELECT id ... WHERE new IS NULL LIMIT 1000)`). The migration is recorded `backfilling` once its
schema part committed and `applied` when its last batch did; an upgrade stopped in between resumes
with the batches.
"""

from __future__ import annotations

import time

from core.migrations.connect import Db, SqliteDb
from core.migrations.files import Migration

__all__ = ["MigrationError", "apply", "record"]


class MigrationError(RuntimeError):
    """A migration failed; its transaction was rolled back and the later ones did not run."""


async def record(db: Db, migration: Migration, how: str, started: float) -> None:
    await db.execute(
        "INSERT INTO schema_migrations (version, name, checksum, how, applied_at, duration_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)", migration.version, migration.name, migration.checksum, how,
        int(time.time() * 1000), int((time.monotonic() - started) * 1000))


def _first_line(statement: str) -> str:
    return statement.strip().splitlines()[0][:80]


async def _schema_part(db: Db, migration: Migration, how: str, started: float) -> None:
    if isinstance(db, SqliteDb):
        await db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction, hence before BEGIN
        await db.execute("PRAGMA legacy_alter_table=ON")
    try:
        await db.begin()
        try:
            for number, statement in enumerate(migration.statements(db.dialect), start=1):
                try:
                    await db.execute(statement)
                except Exception as exc:
                    raise MigrationError(
                        f"migration {migration.name} failed at statement {number} ({_first_line(statement)}): "
                        f"{exc}; it was rolled back, nothing of it is applied") from exc
            if isinstance(db, SqliteDb):
                broken = await db.query("PRAGMA foreign_key_check")
                if broken:
                    raise MigrationError(f"migration {migration.name} leaves rows whose foreign keys point "
                                         f"nowhere (first: {broken[0]}); it was rolled back")
            await record(db, migration, how, started)
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
    finally:
        if isinstance(db, SqliteDb):
            await db.execute("PRAGMA legacy_alter_table=OFF")
            await db.execute("PRAGMA foreign_keys=ON")


async def apply(db: Db, migration: Migration, *, resume: bool = False) -> None:
    """Run `migration` (`resume`: its schema part is in, only its batches remain)."""
    started = time.monotonic()
    batches = migration.batches(db.dialect)
    if not resume:
        await _schema_part(db, migration, "backfilling" if batches else "applied", started)
    for number, statement in enumerate(batches, start=1):
        runs = 0
        while True:
            await db.begin()
            try:
                changed = await db.execute_count(statement)
                await db.commit()
            except Exception as exc:
                await db.rollback()
                raise MigrationError(
                    f"migration {migration.name}: batch statement {number} ({_first_line(statement)}) failed "
                    f"after {runs} committed runs: {exc}; its schema part and those runs stay applied; fix "
                    "the cause and run `nx db upgrade` again to resume") from exc
            runs += 1
            if changed == 0:
                break
    if batches:
        await db.begin()
        await db.execute("UPDATE schema_migrations SET how = 'applied', duration_ms = duration_ms + ?"
                         " WHERE version = ?", int((time.monotonic() - started) * 1000), migration.version)
        await db.commit()
