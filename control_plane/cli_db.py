"""`nx db ...`: the schema version, upgrades and backups (docs/operations.md).

    nx db status [--verify] [--json]   where the database stands; exit status 1 unless current
                                       (--verify: also compare it with a fresh install, object by object)
    nx db upgrade [--no-backup]        apply the pending migrations (SQLite: backup first, into
                                       <data>/backups/); `nx up` and `nx init` run this too
    nx db backup [--output PATH]       SQLite: online backup API; PostgreSQL: pg_dump --format=custom
                 [--pg-dump PATH]      (the pg_dump on PATH, or this one: as new as the server)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from core.migrations import SchemaStatus, status, upgrade
from core.migrations.backup import BackupError, backup_name, backup_postgres, backup_sqlite
from core.migrations.connect import dsn_of
from core.migrations.runner import MigrationError, SchemaError, UpgradeResult
from core.migrations.verify import verify
from core.settings import Settings

__all__ = ["add_db_commands", "describe_upgrade"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]


def add_db_commands(sub: Any) -> Dispatcher:
    cmds = sub.add_parser("db", help="schema version, upgrades, backups").add_subparsers(dest="action",
                                                                                          required=True)
    st = cmds.add_parser("status", help="the schema version and the migrations applied or pending")
    st.add_argument("--verify", action="store_true", help="also compare the schema with a fresh install")
    st.add_argument("--json", action="store_true")
    up = cmds.add_parser("upgrade", help="apply the pending migrations")
    up.add_argument("--no-backup", action="store_true", help="SQLite: skip the backup taken before upgrading")
    bk = cmds.add_parser("backup", help="a consistent copy of the database")
    bk.add_argument("--output", type=Path, help="the file to write (default: <data>/backups/nx-<time>-...)")
    bk.add_argument("--pg-dump", help="PostgreSQL: the pg_dump to run, as new as the server (default: on PATH)")

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return asyncio.run(_ACTIONS[args.action](args, settings))
        except (SchemaError, MigrationError, BackupError) as exc:
            print(f"nx: {exc}", file=sys.stderr)
            return 1

    return run


def _where(settings: Settings) -> str:
    url = settings.effective_database_url
    if settings.is_sqlite:
        return f"SQLite {dsn_of(url)}"
    return f"PostgreSQL {url.rsplit('@', 1)[-1]}"  # never the password


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def render_status(where: str, st: SchemaStatus) -> str:
    lines = [f"database: {where}",
             f"schema: version {st.version:04d}, this code {st.code_version:04d}: {st.state}"]
    lines += [f"  {a.name:<40} {a.how:<9} {_when(a.applied_at)} ({a.duration_ms} ms)" for a in st.applied]
    lines += [f"  {name:<40} pending" for name in st.pending]
    lines += [f"  {name:<40} applied here, unknown to this code" for name in st.unknown]
    lines += [f"  {name:<40} CHANGED since it was applied" for name in st.changed]
    if st.problem:
        lines.append(f"nx: {st.problem}")
    return "\n".join(lines)


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    st = await status(settings.effective_database_url)
    drift = await verify(settings.effective_database_url) if args.verify and st.state == "current" else []
    if args.json:
        out = {**msgspec.to_builtins(st), "problem": st.problem}
        if args.verify:
            out["differences"] = drift
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(out)).decode() + "\n")
    else:
        print(render_status(_where(settings), st))
        if args.verify and st.state == "current":
            print("verify: the schema equals a fresh install" if not drift else
                  "verify: the schema differs from a fresh install:\n  " + "\n  ".join(drift))
    return 0 if st.state == "current" and not drift else 1


def describe_upgrade(result: UpgradeResult) -> str | None:
    """One line for the operator, or None when there was nothing to do."""
    if result.installed:
        return f"nx: database installed from schema.sql at version {result.to_version:04d}"
    if not result.applied:
        return None
    backup = f"; backup taken first: {result.backup}" if result.backup else ""
    return (f"nx: database upgraded from version {result.from_version:04d} to {result.to_version:04d} "
            f"({', '.join(result.applied)}){backup}")


async def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.effective_database_url
    result = await upgrade(url, backup_dir=None if args.no_backup else settings.data_path / "backups")
    print(describe_upgrade(result) or f"nx: database already at version {result.to_version:04d}")
    drift = await verify(url)
    if drift:
        print("nx: the schema differs from a fresh install of this code:\n  " + "\n  ".join(drift),
              file=sys.stderr)
        return 1
    return 0


async def _backup(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.effective_database_url
    st = await status(url)
    label = f"v{st.version:04d}"
    if settings.is_sqlite:
        out = backup_sqlite(dsn_of(url), args.output or settings.data_path / "backups" / backup_name(label))
    else:
        dest = args.output or settings.data_path / "backups" / backup_name(label, ".dump")
        out = backup_postgres(dsn_of(url), dest, args.pg_dump)
    print(f"nx: backup of {_where(settings)} at schema version {st.version:04d} written to {out}")
    return 0


_ACTIONS = {"status": _status, "upgrade": _upgrade, "backup": _backup}
