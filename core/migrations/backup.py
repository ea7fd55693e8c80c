"""`nx db backup`: a consistent copy of a running database.

SQLite: the online backup API (`sqlite3.Connection.backup`), which copies a consistent snapshot
while the platform keeps reading and writing (in WAL mode readers never block the writer). The
copy is switched to a rollback journal so it is one self-contained file, checked with
`PRAGMA quick_check`, and renamed into place only when complete.
PostgreSQL: `pg_dump --format=custom` (restore with `pg_restore`, docs/operations.md); the
password goes to pg_dump through its environment, never on its command line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["BackupError", "backup_name", "backup_postgres", "backup_sqlite"]


class BackupError(RuntimeError):
    pass


def backup_name(label: str, suffix: str = ".db") -> str:
    return f"nx-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{label}{suffix}"


def _fresh(dest: Path) -> Path:
    if dest.exists():
        raise BackupError(f"{dest} exists; a backup never overwrites a file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(dest.name + ".partial")


def backup_sqlite(source: str, dest: Path) -> Path:
    partial = _fresh(dest)
    partial.unlink(missing_ok=True)
    # The copy holds every organization's data: private from its first byte.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(source, timeout=5.0)
    out = sqlite3.connect(partial, isolation_level=None)
    try:
        src.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")
        verdict = out.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy of {source} failed its integrity check: {verdict}")
    finally:
        out.close()
        src.close()
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    partial.rename(dest)
    return dest


def backup_postgres(dsn: str, dest: Path, pg_dump: str | None = None) -> Path:
    """`pg_dump` (the one given, else the one on PATH; it must be at least as new as the server) of
    the database at `dsn` (postgresql://...), in its custom format."""
    pg_dump = pg_dump or shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed here; run it where it is: "
                          "pg_dump --format=custom --file=<backup.dump> <database url>")
    partial = _fresh(dest)
    parts = urlsplit(dsn)
    env = dict(os.environ)
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = netloc.replace(f":{parts.password}@", "@", 1)
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    done = subprocess.run([pg_dump, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={url}"],
                          env=env, capture_output=True, text=True, check=False, timeout=24 * 3600)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    partial.chmod(0o600)
    partial.rename(dest)
    return dest
