"""`nx mail ...`: the outbox of the embedded default (no SMTP), so sign-up works offline.

    nx mail list [--to ADDRESS] [--limit N]   newest first: id, time, recipient, subject
    nx mail show MAIL_ID | --last [--to ADDRESS]   print one message (its links and tokens)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from control_plane.identity.mail import Mail, get_mail, list_mail
from core.db import make_engine, read_tx
from core.settings import Settings

__all__ = ["add_mail_commands"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]


def add_mail_commands(sub: Any) -> Dispatcher:
    cmds = sub.add_parser("mail", help="read the mail outbox (sign-up, reset links)").add_subparsers(
        dest="action", required=True)
    ls = cmds.add_parser("list", help="messages, newest first")
    ls.add_argument("--to")
    ls.add_argument("--limit", type=int, default=20)
    show = cmds.add_parser("show", help="print one message")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("mail_id", nargs="?")
    which.add_argument("--last", action="store_true", help="the newest message (to --to, if given)")
    show.add_argument("--to")
    return _run


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print(mail: Mail) -> None:
    sent = f"sent {_when(mail.sent_at)}" if mail.sent_at else "not sent (outbox)"
    print(f"Id: {mail.id}\nDate: {_when(mail.created_at)} UTC ({sent})\nTo: {mail.to}\nSubject: {mail.subject}\n")
    print(mail.body)


async def _query(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings)
    try:
        async with read_tx(engine) as conn:
            if args.action == "list":
                for m in await list_mail(conn, args.to, max(1, min(args.limit, 1000))):
                    print(f"{m.id}  {_when(m.created_at)}  {m.to}  {m.subject}")
                return 0
            if args.last:
                newest = await list_mail(conn, args.to, 1)
                found = newest[0] if newest else None
            else:
                found = await get_mail(conn, args.mail_id)
    finally:
        await engine.dispose()
    if found is None:
        print("nx: no such message", file=sys.stderr)
        return 1
    _print(found)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_query(args, settings))
