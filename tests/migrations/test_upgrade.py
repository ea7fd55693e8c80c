"""An operator's database from release c1e677f, upgraded: the schema is a fresh install's, every row is
still there, the ledger reconciles to zero drift (on the database NX_TEST_DATABASE names)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from core.migrations import load_migrations, status, upgrade
from core.migrations.introspect import differences
from tests.migrations.conftest import EmptyDb, columns_of, reconcile_all, rows_of, shape_of
from tests.migrations.release_c1e677f import build_release_database

Rows = dict[str, list[tuple[Any, ...]]]


async def previous_webhook_secrets_moved(before: Rows, columns: dict[str, list[str]], url: str) -> None:
    """0002: each endpoint's replaced secret signs on from webhook_endpoint_secrets, same expiry."""
    c = columns["webhook_endpoints"]
    wanted = sorted((r[c.index("id")], r[c.index("previous_secret_enc")], r[c.index("previous_secret_expires_at")])
                    for r in before["webhook_endpoints"] if r[c.index("previous_secret_enc")] is not None)
    assert wanted, "the release data has an endpoint in the middle of a rotation"
    moved = await rows_of(url, {"webhook_endpoint_secrets": ["endpoint_id", "secret_enc", "expires_at"]})
    assert sorted(moved["webhook_endpoint_secrets"]) == wanted


# Columns of the release that a migration removed, each with the check of where its data went.
# A migration that drops a column without an entry here fails test_every_row_survives.
MOVED: dict[str, Callable[[Rows, dict[str, list[str]], str], Awaitable[None]]] = {
    "webhook_endpoints.previous_secret_enc": previous_webhook_secrets_moved,
    "webhook_endpoints.previous_secret_expires_at": previous_webhook_secrets_moved,
}


def project(rows: list[tuple[Any, ...]], columns: list[str], keep: list[str]) -> list[tuple[Any, ...]]:
    index = [columns.index(c) for c in keep]
    return sorted((tuple(r[i] for i in index) for r in rows), key=repr)


async def test_every_row_survives_and_the_ledger_reconciles(empty: EmptyDb, other_empty: EmptyDb) -> None:
    await build_release_database(empty.url)
    before_columns = await columns_of(empty.url)
    before = await rows_of(empty.url, before_columns)
    assert [t for t, rows in before.items() if not rows] == [], "the release data leaves a table empty"
    seeded = await reconcile_all(empty.settings)
    assert seeded.ok, seeded.drift
    assert (await status(empty.url)).state == "unversioned"

    result = await upgrade(empty.url, backup_dir=empty.data_dir / "backups")
    assert result.applied == [m.name for m in load_migrations()] and result.from_version == 0
    assert (result.backup is not None) == empty.settings.is_sqlite

    # (a) the schema a fresh install of this code has
    assert (await upgrade(other_empty.url)).installed
    drift = differences(await shape_of(other_empty.url), await shape_of(empty.url))
    assert not drift, "\n".join(drift)

    # (b) every row, every value, in every column the migrations kept
    after_columns = await columns_of(empty.url)
    dropped = {f"{t}.{c}" for t, cols in before_columns.items() for c in cols if c not in after_columns.get(t, [])}
    assert dropped == set(MOVED), f"columns dropped without a test of where their data went: {dropped - set(MOVED)}"
    kept = {t: [c for c in cols if c in after_columns.get(t, [])] for t, cols in before_columns.items()}
    after = await rows_of(empty.url, {t: cols for t, cols in kept.items() if cols})
    for table, cols in kept.items():
        assert after[table] == project(before[table], before_columns[table], cols), f"rows of {table} changed"
    for check in set(MOVED.values()):
        await check(before, before_columns, empty.url)
    report = await reconcile_all(empty.settings)
    assert report.ok, report.drift
    assert (report.accounts, report.transactions) == (seeded.accounts, seeded.transactions)

    # and a second upgrade has nothing to do
    again = await upgrade(empty.url, backup_dir=empty.data_dir / "backups")
    assert again.applied == [] and again.backup is None
    assert (await status(empty.url)).state == "current"
