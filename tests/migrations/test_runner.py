"""The runner's contract: where a database stands, one transaction per migration, one upgrade however
many replicas start together, and no process of this code on a database older or newer than it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from core.migrations import MIGRATIONS_DIR, MigrationError, SchemaError, load_migrations, status, upgrade
from core.migrations.connect import connect
from core.migrations.verify import verify
from tests.harness import ROOT
from tests.migrations.conftest import EmptyDb, columns_of, reconcile_all
from tests.migrations.release_c1e677f import build_release_database


def with_extra(tmp: Path, *extra: tuple[str, str]) -> Path:
    """This code's migrations plus `extra` (slug, SQL), numbered after the last one."""
    directory = tmp / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    last = load_migrations()[-1].version
    for n, (slug, text) in enumerate(extra, start=last + 1):
        (directory / f"{n:04d}_{slug}.sql").write_text(text)
    return directory


async def count(url: str, sql: str) -> int:
    db = await connect(url)
    try:
        return int((await db.query(sql))[0][0])
    finally:
        await db.close()


async def test_an_empty_database_is_installed_with_every_migration_recorded(empty: EmptyDb) -> None:
    before = await status(empty.url)
    assert before.state == "empty" and "`nx init`" in str(before.problem)
    result = await upgrade(empty.url)
    assert result.installed and result.to_version == len(load_migrations())
    after = await status(empty.url)
    assert after.state == "current" and after.problem is None and after.pending == []
    assert {a.how for a in after.applied} == {"installed"}
    assert [a.checksum for a in after.applied] == [m.checksum for m in load_migrations()]
    assert await verify(empty.url) == []


async def test_a_release_database_must_be_upgraded_before_anything_runs_on_it(empty: EmptyDb) -> None:
    await build_release_database(empty.url)
    st = await status(empty.url)
    assert st.state == "unversioned" and "`nx db upgrade`" in str(st.problem)
    assert "`nx db backup`" in str(st.problem)


async def test_a_pending_migration_runs_once_in_order(empty: EmptyDb, tmp_path: Path) -> None:
    await upgrade(empty.url)
    newer = with_extra(tmp_path, ("add_note", "ALTER TABLE organizations ADD COLUMN note TEXT;"))
    behind = await status(empty.url, newer)
    assert behind.state == "behind" and behind.pending == [load_migrations(newer)[-1].name]
    assert "`nx db upgrade`" in str(behind.problem) and behind.pending[0] in str(behind.problem)
    with pytest.raises(SchemaError, match="nx db upgrade"):
        from core.migrations import require_current

        await require_current(empty.url, newer)
    result = await upgrade(empty.url, directory=newer)
    assert result.applied == behind.pending
    assert "note" in (await columns_of(empty.url))["organizations"]
    now = await status(empty.url, newer)
    assert now.state == "current" and now.applied[-1].how == "applied"


async def test_a_database_newer_than_the_code_is_refused(empty: EmptyDb, tmp_path: Path) -> None:
    await upgrade(empty.url, directory=with_extra(tmp_path, ("later", "CREATE TABLE later (id TEXT PRIMARY KEY);")))
    st = await status(empty.url)
    assert st.state == "ahead" and st.unknown and "newer than this code" in str(st.problem)
    with pytest.raises(SchemaError, match="newer than this code"):
        await upgrade(empty.url)


async def test_an_applied_migration_that_was_edited_is_refused(empty: EmptyDb, tmp_path: Path) -> None:
    await upgrade(empty.url)
    edited = with_extra(tmp_path)
    last = sorted(edited.glob("*.sql"))[-1]
    last.write_text(last.read_text() + "\n-- edited after its release\n")
    st = await status(empty.url, edited)
    assert st.state == "changed" and st.changed == [last.stem] and "never be edited" in str(st.problem)
    with pytest.raises(SchemaError):
        await upgrade(empty.url, directory=edited)


async def test_a_failing_migration_leaves_nothing_behind(empty: EmptyDb, tmp_path: Path) -> None:
    await upgrade(empty.url)
    broken = with_extra(tmp_path, ("half", "CREATE TABLE half_done (id TEXT PRIMARY KEY);\n"
                                           "ALTER TABLE no_such_table ADD COLUMN x TEXT;\n"),
                        ("after", "CREATE TABLE after_broken (id TEXT PRIMARY KEY);"))
    with pytest.raises(MigrationError, match=r"_half failed at statement 2 .*rolled back"):
        await upgrade(empty.url, directory=broken)
    tables = await columns_of(empty.url)
    assert "half_done" not in tables and "after_broken" not in tables
    st = await status(empty.url, broken)
    assert st.state == "behind" and len(st.pending) == 2


REBUILD = """-- dialect: sqlite
CREATE TABLE memberships_new (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'billing', 'viewer')),
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, user_id)
);
-- dialect: sqlite
INSERT INTO memberships_new SELECT id, org_id, user_id, role, created_at FROM memberships;
-- dialect: sqlite
DROP TABLE memberships;
-- dialect: sqlite
ALTER TABLE memberships_new RENAME TO memberships;
"""


async def test_a_sqlite_table_rebuild_runs_and_may_not_leave_dangling_references(empty: EmptyDb,
                                                                                 tmp_path: Path) -> None:
    """The documented way to change a constraint on SQLite (create, copy, drop, rename) needs foreign
    keys off; the runner turns them off, and refuses to commit a migration that leaves a reference
    pointing nowhere."""
    if not empty.settings.is_sqlite:
        pytest.skip("a SQLite procedure")
    await build_release_database(empty.url)
    await upgrade(empty.url)
    members = await count(empty.url, "SELECT COUNT(*) FROM memberships")
    rebuilt = with_extra(tmp_path, ("rebuild_memberships", REBUILD))
    await upgrade(empty.url, directory=rebuilt)
    assert await count(empty.url, "SELECT COUNT(*) FROM memberships") == members
    dangling = with_extra(tmp_path / "2", ("rebuild_memberships", REBUILD),
                          ("dangling", "INSERT INTO memberships (id, org_id, user_id, role, created_at)"
                                       " VALUES ('mem_x', 'org_missing', 'user_missing', 'viewer', 0);"))
    with pytest.raises(MigrationError, match="foreign keys point nowhere"):
        await upgrade(empty.url, directory=dangling)
    assert await count(empty.url, "SELECT COUNT(*) FROM memberships WHERE id = 'mem_x'") == 0


async def test_a_sqlite_rebuild_of_a_ledger_table_keeps_its_guards(empty: EmptyDb, tmp_path: Path) -> None:
    """ledger_accounts is named by other tables' triggers (entries check the account's state); its
    rebuild must rename into place and leave the ledger exactly as guarded and reconciled as before."""
    if not empty.settings.is_sqlite:
        pytest.skip("a SQLite procedure")
    await build_release_database(empty.url)
    await upgrade(empty.url)
    db = await connect(empty.url)
    try:
        objects = await db.query("SELECT type, sql FROM sqlite_master WHERE tbl_name = 'ledger_accounts'"
                                 " AND sql IS NOT NULL ORDER BY type DESC")
    finally:
        await db.close()
    table = next(str(sql) for kind, sql in objects if kind == "table")
    # A table rebuilt by an earlier migration (0004) is named quoted: SQLite's RENAME writes it so.
    table = table.replace('CREATE TABLE "ledger_accounts"', "CREATE TABLE ledger_accounts", 1)
    statements = [table.replace("CREATE TABLE ledger_accounts", "CREATE TABLE ledger_accounts_new", 1),
                  "INSERT INTO ledger_accounts_new SELECT * FROM ledger_accounts", "DROP TABLE ledger_accounts",
                  "ALTER TABLE ledger_accounts_new RENAME TO ledger_accounts",
                  *(str(sql) for kind, sql in objects if kind != "table")]
    rebuild = "".join(f"-- dialect: sqlite\n{s};\n\n" for s in statements)
    await upgrade(empty.url, directory=with_extra(tmp_path, ("rebuild_ledger_accounts", rebuild)))
    assert await verify(empty.url) == []
    report = await reconcile_all(empty.settings)
    assert report.ok, report.drift
    db = await connect(empty.url)
    try:
        with pytest.raises(Exception, match="balance moves only with an entry"):
            await db.execute("UPDATE ledger_accounts SET balance = balance + 1 WHERE kind = 'wallet'")
    finally:
        await db.close()


BACKFILL = """ALTER TABLE organizations ADD COLUMN shout TEXT CHECK (shout IS NULL OR shout <> 'INITECH');
-- nx: batches
UPDATE organizations SET shout = UPPER(name)
WHERE id IN (SELECT id FROM organizations WHERE shout IS NULL ORDER BY name LIMIT 1);
"""


async def test_a_backfill_runs_in_batches_and_resumes_where_it_stopped(empty: EmptyDb, tmp_path: Path) -> None:
    """One organization per batch, each its own transaction: the third is refused (the CHECK stands in
    for any failure), the first two stay done; once the cause is fixed the upgrade resumes with the
    batches (the ALTER TABLE, which could not run twice, is not repeated)."""
    await build_release_database(empty.url)
    await upgrade(empty.url)
    newer = with_extra(tmp_path, ("shout", BACKFILL))
    with pytest.raises(MigrationError, match=r"batch statement 1 .* after 2 committed runs"):
        await upgrade(empty.url, directory=newer)
    assert await count(empty.url, "SELECT COUNT(*) FROM organizations WHERE shout IS NOT NULL") == 2
    stopped = await status(empty.url, newer)
    assert stopped.state == "behind" and stopped.backfilling == stopped.pending == [newer_name(newer)]
    db = await connect(empty.url)
    try:
        await db.execute("UPDATE organizations SET name = 'Initrode' WHERE name = 'Initech'")
    finally:
        await db.close()
    assert (await upgrade(empty.url, directory=newer)).applied == stopped.pending
    assert await count(empty.url, "SELECT COUNT(*) FROM organizations WHERE shout IS NULL") == 0
    done = await status(empty.url, newer)
    assert done.state == "current" and done.applied[-1].how == "applied"


def newer_name(directory: Path) -> str:
    return load_migrations(directory)[-1].name


UPGRADE = ("import asyncio, sys; from pathlib import Path; from core.migrations import upgrade;"
           " r = asyncio.run(upgrade(sys.argv[1], directory=Path(sys.argv[2]))); print(r.installed, r.applied)")


@pytest.mark.parametrize("start", ["empty", "release"])
async def test_replicas_starting_together_upgrade_once(start: str, empty: EmptyDb, tmp_path: Path) -> None:
    """Four processes upgrade at once; the migration added here fails if it ever runs twice."""
    if start == "release":
        await build_release_database(empty.url)
    newer = with_extra(tmp_path, ("not_twice", "ALTER TABLE organizations ADD COLUMN once_only TEXT;"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", UPGRADE, empty.url, str(newer), env=env,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
             for _ in range(4)]
    outs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1].decode()[-800:] for o in outs]
    did_work = [o[0].decode() for o in outs if "True" in o[0].decode() or "_not_twice" in o[0].decode()]
    assert len(did_work) == 1, [o[0].decode() for o in outs]
    n = len(load_migrations(newer))
    assert await count(empty.url, "SELECT COUNT(*) FROM schema_migrations") == n
    assert (await status(empty.url, newer)).state == "current"


@pytest.mark.parametrize("process", ["control_plane.worker", "proxy_plugins.sidecar.server"])
async def test_a_process_refuses_an_older_database_naming_the_command(process: str, empty: EmptyDb) -> None:
    await build_release_database(empty.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", process, env={**env, **empty.env,
                                                "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "refusing to start" in err.decode() and "`nx db upgrade`" in err.decode(), err.decode()


async def test_a_process_refuses_a_newer_database(empty: EmptyDb, tmp_path: Path) -> None:
    await upgrade(empty.url, directory=with_extra(tmp_path, ("later", "CREATE TABLE later (id TEXT PRIMARY KEY);")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "control_plane.serve",
                                                env={**env, **empty.env, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "newer than this code" in err.decode(), err.decode()


async def test_verify_reports_a_change_made_by_hand(empty: EmptyDb) -> None:
    await upgrade(empty.url)
    db = await connect(empty.url)
    try:
        await db.execute("CREATE INDEX by_hand ON users (name)")
    finally:
        await db.close()
    drift = await verify(empty.url)
    assert len(drift) == 1 and drift[0].startswith("extra index by_hand"), drift
