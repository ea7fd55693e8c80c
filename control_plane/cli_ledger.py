"""`nx ledger ...`: the operator's ledger commands, the same operations as `/api/.../ledger`.

    nx ledger grant --org ORG --amount 10.00 [--promo] [--reason ...] [--idempotency-key K]
    nx ledger adjust --org ORG --amount -1.50 --reason "refund for outage" [--account promo]
    nx ledger reverse --org ORG TXN_ID --reason "..."
    nx ledger balance --org ORG
    nx ledger statement --org ORG [--account promo] [--after SEQ] [--limit N]
    nx ledger alert --org ORG --low-balance 5.00 | --off
    nx ledger reconcile [--org ORG]        exit status 1 when any drift is found

Amounts are exact decimal USD (`--amount`, at most 9 decimals) or nano-dollars (`--nanos`). Without
`--idempotency-key` a fresh one is generated and printed, so a retry can reuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core import ledger
from core.db import make_engine, write_tx
from core.errors import ApiError
from core.money import parse_usd
from core.settings import Settings

__all__ = ["add_ledger_commands"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]


def add_ledger_commands(sub: Any) -> Dispatcher:
    cmds = sub.add_parser("ledger", help="credit, balances, statements, reconciliation").add_subparsers(
        dest="action", required=True)
    grant = cmds.add_parser("grant", help="add prepaid (or --promo promotional) credit")
    adjust = cmds.add_parser("adjust", help="credit (+) or debit (-) a customer account, with a reason")
    for p in (grant, adjust):
        amount = p.add_mutually_exclusive_group(required=True)
        amount.add_argument("--amount", help="USD, e.g. 10.00 or -0.25")
        amount.add_argument("--nanos", type=int, help="nano-dollars (1 USD = 10^9)")
        p.add_argument("--idempotency-key")
    grant.add_argument("--promo", action="store_true")
    grant.add_argument("--reason", default="")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--account", choices=["wallet", "promo"], default="wallet")
    rev = cmds.add_parser("reverse", help="post the mirror image of a transaction")
    rev.add_argument("txn_id")
    rev.add_argument("--reason", required=True)
    rev.add_argument("--idempotency-key")
    cmds.add_parser("balance", help="wallet, promotional credit, held and available")
    st = cmds.add_parser("statement", help="every transaction of an account with its running balance")
    st.add_argument("--account", choices=["wallet", "promo", "receivable"], default="wallet")
    st.add_argument("--after", type=int, default=0)
    st.add_argument("--limit", type=int, default=100)
    alert = cmds.add_parser("alert", help="low-balance threshold (usage.threshold_reached)")
    mark = alert.add_mutually_exclusive_group(required=True)
    mark.add_argument("--low-balance", help="USD")
    mark.add_argument("--off", action="store_true")
    for p in (grant, adjust, rev, cmds.choices["balance"], st, alert):
        p.add_argument("--org", required=True)
    rec = cmds.add_parser("reconcile", help="recompute balances from entries; exit 1 on drift")
    rec.add_argument("--org")

    def dispatch(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_run(args, settings))

    return dispatch


def _amount(args: argparse.Namespace) -> int:
    return int(args.nanos) if args.nanos is not None else parse_usd(str(args.amount))


def _key(args: argparse.Namespace) -> str:
    if not args.idempotency_key:
        args.idempotency_key = f"cli-{uuid.uuid4()}"
        print(f"nx: idempotency key {args.idempotency_key} (reuse it to retry safely)", file=sys.stderr)
    return str(args.idempotency_key)


def _operation(args: argparse.Namespace, settings: Settings) -> Callable[[AsyncConnection], Awaitable[Any]]:
    a = args.action
    if a == "grant":
        amount, key = _amount(args), _key(args)
        return lambda c: ledger.grant(c, args.org, amount, idempotency_key=key, actor="cli",
                                      reason=args.reason, promotional=args.promo)
    if a == "adjust":
        amount, key = _amount(args), _key(args)
        return lambda c: ledger.adjust(c, args.org, amount, reason=args.reason, idempotency_key=key,
                                       actor="cli", account=args.account)
    if a == "reverse":
        key = _key(args)
        return lambda c: ledger.reverse(c, args.org, args.txn_id, reason=args.reason, idempotency_key=key,
                                        actor="cli")
    if a == "balance":
        return lambda c: ledger.balance(c, args.org)
    if a == "statement":
        return lambda c: ledger.statement(c, args.org, args.account, after=args.after, limit=args.limit)
    if a == "alert":
        low = None if args.off else parse_usd(str(args.low_balance))
        return lambda c: ledger.set_low_balance(c, args.org, low)
    return lambda c: ledger.reconcile(c, args.org, journal_dir=settings.data_path / "journal")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        operation = _operation(args, settings)
    except ValueError as exc:
        print(f"nx: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    try:
        async with write_tx(engine) as conn:
            if args.org and not await _org_exists(conn, args.org):
                print(f"nx: no organization {args.org!r}", file=sys.stderr)
                return 1
            result = await operation(conn)
    except (ApiError, ledger.LedgerError) as exc:
        print(f"nx: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    out = msgspec.to_builtins(result)
    if isinstance(result, ledger.ReconcileReport):
        out["ok"] = result.ok
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(out)).decode() + "\n")
    return 0 if not isinstance(result, ledger.ReconcileReport) or result.ok else 1


async def _org_exists(conn: AsyncConnection, org_id: str) -> bool:
    from sqlalchemy import text

    row = (await conn.execute(text("SELECT 1 FROM organizations WHERE id = :o"), {"o": org_id})).first()
    return row is not None
