"""`nx export ...`: finance exports from the command line, the same streams as `/api/.../exports`.

    nx export usage  --org ORG --from 2025-01-01 [--to 2025-02-01] [--format csv|jsonl] [--out FILE]
    nx export ledger --org ORG --from ... [--to ...] [--account all|wallet|promo] [--format ...] [--out FILE]

`--from`/`--to`: unix seconds, a UTC date or an ISO 8601 date-time; the period is [from, to), `--to`
defaults to now. Rows go to `--out` (default: standard output) batch by batch; the totals (which
reconcile the export to the ledger to the nano-dollar) are printed as JSON on standard error, and the
exit status is 1 when they do not reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec
from sqlalchemy import text

from control_plane.usage import exports
from core.db import make_engine, now_ms
from core.errors import ApiError
from core.settings import Settings

__all__ = ["add_export_commands"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]


def add_export_commands(sub: Any) -> Dispatcher:
    cmds = sub.add_parser("export", help="finance exports: usage records, ledger statements").add_subparsers(
        dest="export", required=True)
    usage = cmds.add_parser("usage", help="usage records of a period (one row per request)")
    ledger = cmds.add_parser("ledger", help="every entry of the customer accounts, running balance")
    ledger.add_argument("--account", choices=["all", "wallet", "promo"], default="all")
    for p in (usage, ledger):
        p.add_argument("--org", required=True)
        p.add_argument("--from", dest="start", required=True, help="unix seconds, 2025-01-31 or ISO 8601")
        p.add_argument("--to", dest="end", help="exclusive; default now")
        p.add_argument("--format", choices=["csv", "jsonl"], default="csv")
        p.add_argument("--out", help="file to write (default: standard output)")

    def dispatch(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_run(args, settings))

    return dispatch


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lo, hi = exports.period(args.start, args.end, now_ms())
    except ApiError as exc:
        print(f"nx: {exc.message}", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    out: IO[bytes] = Path(args.out).open("wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    try:
        async with exports.snapshot(engine) as conn:
            if (await conn.execute(text("SELECT 1 FROM organizations WHERE id = :o"),
                                   {"o": args.org})).first() is None:
                print(f"nx: no organization {args.org!r}", file=sys.stderr)
                return 1
            if args.export == "usage":
                chunks = exports.export_usage(conn, args.org, lo, hi, args.format)
            else:
                chunks = exports.export_ledger(conn, args.org, lo, hi, args.format, args.account)
            async for chunk in chunks:
                out.write(chunk)
            totals: exports.UsageTotals | exports.LedgerTotals = (
                await exports.usage_totals(conn, args.org, lo, hi) if args.export == "usage"
                else await exports.ledger_totals(conn, args.org, lo, hi, args.account))
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
        await engine.dispose()
    sys.stderr.write(msgspec.json.format(msgspec.json.encode(totals)).decode() + "\n")
    return 0 if totals.reconciled else 1
