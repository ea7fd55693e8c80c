"""`nx db status`, `nx db upgrade` and `nx db backup` as an operator runs them; a backup restored into
a fresh database is the same database: same schema version, same rows, a ledger with zero drift."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg

from core.migrations import status
from tests.harness import ROOT, pg_admin_dsn
from tests.migrations.conftest import EmptyDb, columns_of, reconcile_all, rows_of
from tests.migrations.release_c1e677f import build_release_database
from tests.throwaway import _pg_bin


def nx(db: EmptyDb, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "control_plane.cli", *args], env={**env, **db.env,
                          "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


async def pg_tools() -> Path:
    """The directory of a pg_dump and pg_restore of the server's major version: the machine's, or
    the pinned server's own when the suite runs on a throwaway one (tests/throwaway.py)."""
    conn = await asyncpg.connect(pg_admin_dsn())
    try:
        server = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    candidates = [Path(p).parent for p in [shutil.which("pg_dump")] if p]
    with contextlib.suppress(RuntimeError):
        candidates.append(_pg_bin())
    for bindir in candidates:
        version = subprocess.run([str(bindir / "pg_dump"), "--version"], capture_output=True, text=True,
                                 check=False).stdout
        if (found := re.search(r"\) (\d+)", version)) and int(found.group(1)) == server:
            return bindir
    raise AssertionError(f"no pg_dump of the server's version ({server}) among {candidates}")


async def restore(backup: Path, target: EmptyDb) -> None:
    if target.settings.is_sqlite:
        shutil.copyfile(backup, target.data_dir / "nx.db")
        return
    dbname = target.env["DATABASE_URL"].rsplit("/", 1)[1]
    base = pg_admin_dsn().rsplit("/", 1)[0]
    done = subprocess.run([str(await pg_tools() / "pg_restore"), "--no-owner", "--exit-on-error",
                           f"--dbname={base}/{dbname}", str(backup)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr


async def test_status_upgrade_backup_and_restore(empty: EmptyDb, other_empty: EmptyDb) -> None:
    await build_release_database(empty.url)
    st = nx(empty, "db", "status")
    assert st.returncode == 1 and "unversioned" in st.stdout and "`nx db upgrade`" in st.stdout, st.stdout
    refused = nx(empty, "ledger", "reconcile")  # an operator command, on a schema not its code's
    assert refused.returncode == 2 and "`nx db upgrade`" in refused.stderr, refused.stderr

    up = nx(empty, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert "upgraded from version 0000" in up.stdout
    if empty.settings.is_sqlite:  # the SQLite upgrade backs up first, and says where
        assert "backup taken first" in up.stdout and list((empty.data_dir / "backups").glob("*pre-upgrade-v0000*"))
    st = nx(empty, "db", "status", "--verify")
    assert st.returncode == 0 and ": current" in st.stdout and "equals a fresh install" in st.stdout, st.stdout

    out = empty.data_dir / "elsewhere" / ("nx.db" if empty.settings.is_sqlite else "nx.dump")
    tools = [] if empty.settings.is_sqlite else ["--pg-dump", str(await pg_tools() / "pg_dump")]
    bk = nx(empty, "db", "backup", "--output", str(out), *tools)
    assert bk.returncode == 0 and str(out) in bk.stdout, bk.stderr
    assert out.stat().st_mode & 0o077 == 0, "a backup holds every tenant's data: owner-only"
    again = nx(empty, "db", "backup", "--output", str(out), *tools)
    assert again.returncode == 1 and "never overwrites" in again.stderr

    await restore(out, other_empty)
    assert (await status(other_empty.url)).state == "current"
    columns = await columns_of(empty.url)
    assert await rows_of(other_empty.url, columns) == await rows_of(empty.url, columns)
    report = await reconcile_all(other_empty.settings)
    assert report.ok and report.transactions > 0, report.drift
    verified = nx(other_empty, "db", "status", "--verify")
    assert verified.returncode == 0, verified.stdout


async def test_backup_names_its_schema_version_and_lands_in_the_data_directory(empty: EmptyDb) -> None:
    assert nx(empty, "init").returncode == 0
    tools = [] if empty.settings.is_sqlite else ["--pg-dump", str(await pg_tools() / "pg_dump")]
    bk = nx(empty, "db", "backup", *tools)
    assert bk.returncode == 0, bk.stderr
    [made] = list((empty.data_dir / "backups").iterdir())
    version = (await status(empty.url)).version
    assert f"-v{version:04d}" in made.name and str(made) in bk.stdout
