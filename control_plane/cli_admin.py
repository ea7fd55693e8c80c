"""Headless operator commands: the same operations as the management API, against the database.

`nx keys ...` is defined here; `nx backends|models|prices|routes|orgs|projects|members|users ...`
in control_plane/cli_manage.py. Writes that the sidecars cache are followed by a best-effort
notification to this node's sidecar (and, for routing, a re-render of this node's Envoy files);
other nodes pick them up within the key-cache TTL or the one-second config poll.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.cli_manage import OPS, add_manage_commands, body_from_args
from control_plane.domain import keys, routing
from core.db import make_engine, write_tx
from core.errors import ApiError
from core.notify import Notifier
from core.secrets import load_secrets
from core.settings import Settings

__all__ = ["add_admin_commands"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_admin_commands(sub: Any) -> Dispatcher:
    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = k.add_parser("create", help="create a key; prints the secret once")
    create.add_argument("--org", required=True)
    for p in (create, upd := k.add_parser("update", help="change a key's scopes")):
        p.add_argument("--name")
        p.add_argument("--projects", type=_csv, help="comma-separated project ids")
        p.add_argument("--models", type=_csv, help="comma-separated patterns, e.g. 'local/*'")
        p.add_argument("--endpoints", type=_csv, help="responses,chat,embeddings,models,usage,webhooks")
        p.add_argument("--ip-ranges", type=_csv, help="comma-separated CIDRs")
        p.add_argument("--monthly-budget-nanos", type=int)
        p.add_argument("--expires-at", type=int, help="unix seconds")
        p.add_argument("--rate-limits", type=msgspec.json.decode,
                       help='JSON, e.g. \'{"rpm": 60, "tpm": 100000, "concurrent": 4}\'')
    create.add_argument("--signed-requests", action="store_true", default=None,
                        help="require signed requests (replay protection); prints the signing secret once")
    upd.add_argument("--org", required=True)
    upd.add_argument("key_id")
    upd.add_argument("--disabled", choices=["true", "false"])
    for name in ("list", "get", "revoke"):
        p = k.add_parser(name)
        p.add_argument("--org", required=True)
        if name != "list":
            p.add_argument("key_id")

    add_manage_commands(sub)

    def dispatch(args: argparse.Namespace, settings: Settings) -> int:
        if args.command == "keys":
            return asyncio.run(_keys(args, settings))
        return asyncio.run(_manage(args, settings))

    return dispatch


def _print(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    secrets = load_secrets(settings)
    engine = make_engine(settings)
    fields = {f: getattr(args, f, None) for f in ("name", "projects", "models", "endpoints", "ip_ranges",
                                                 "monthly_budget_nanos", "expires_at", "rate_limits",
                                                 "signed_requests")}
    given = {f: v for f, v in fields.items() if v is not None}
    ops: dict[str, Callable[[AsyncConnection], Awaitable[Any]]] = {
        "create": lambda c: keys.create_key(c, args.org, msgspec.convert(given, keys.KeyScopes),
                                            secrets.key_pepper, actor="cli"),
        "list": lambda c: keys.list_keys(c, args.org),
        "get": lambda c: keys.get_key(c, args.org, args.key_id),
        "update": lambda c: keys.update_key(c, args.org, args.key_id, msgspec.convert(
            {**given, **({"disabled": args.disabled == "true"} if args.disabled else {})}, keys.KeyPatch),
            actor="cli"),
        "revoke": lambda c: keys.revoke_key(c, args.org, args.key_id, actor="cli"),
    }
    try:
        async with write_tx(engine) as conn:
            result = await ops[args.action](conn)
    except ApiError as exc:
        print(f"nx: {exc.message}", file=sys.stderr)
        return 1
    except msgspec.ValidationError as exc:
        print(f"nx: {exc}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    if args.action in ("update", "revoke"):
        notifier = Notifier(settings, secrets.internal_token)
        await notifier.invalidate(key_ids=[args.key_id])
        await notifier.close()
    _print(result)
    return 0


async def _manage(args: argparse.Namespace, settings: Settings) -> int:
    op = OPS[args.command][args.action]
    try:
        body = body_from_args(op, args)
    except msgspec.ValidationError as exc:
        print(f"nx: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    try:
        async with write_tx(engine) as conn:
            result = await op.fn(conn, args, body, settings)
        if op.effect:
            notifier = Notifier(settings, load_secrets(settings).internal_token)
            try:
                if op.effect == "routing":
                    await routing.publish(settings, engine, notifier)
                else:
                    await notifier.invalidate(config=True)
            finally:
                await notifier.close()
    except ApiError as exc:
        print(f"nx: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    _print({"object": "list", "data": result} if isinstance(result, list) else result)
    return 0
