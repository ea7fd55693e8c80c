"""`nx`: the operator's command line.

    nx up                 start the whole platform on embedded defaults
    nx init               create/upgrade the database, sync the catalog, bootstrap; print the key
    nx db ...             schema version, upgrades, backups (see `nx db --help`)
    nx keys ...           manage API keys (see `nx keys --help`)
    nx ledger ...         credit, balances, statements, reconciliation (see `nx ledger --help`)
    nx export ...         finance exports: usage records, ledger statements (see `nx export --help`)
    nx envoy render       print the edge's Envoy configuration, rendered from envoy/'s templates
    nx mail ...           the mail outbox: sign-up and password-reset messages (see `nx mail --help`)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from control_plane.domain.bootstrap import BootstrapResult
from control_plane.domain.catalog import CatalogError
from control_plane.envoy_templates import TemplateError
from core.migrations import MigrationError, SchemaError, require_current
from core.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _welcome(settings: Settings, result: BootstrapResult) -> str:
    edge = settings.edge_url
    operator = (f"nx: the operator API (/api/..., admin token) listens on {settings.operator_url}\n"
                f"nx: Prometheus metrics: {settings.operator_url}/stats/prometheus (Envoy), /metrics on "
                f"{settings.sidecar_url}, http://{settings.adapter_host}:{settings.adapter_port}, "
                f"{settings.control_plane_url}, http://{settings.worker_metrics_host}:{settings.worker_metrics_port} "
                "(docs/observability.md)\n")
    if result.secret:
        return (
            f"nx: the platform is up; the edge listens on {edge}\n" + operator +
            f"nx: first start: your API key (shown once, store it now):\n\n    {result.secret}\n\n"
            f"Try it:\n\n    curl -s {edge}/v1/models -H 'Authorization: Bearer {result.secret}'\n"
        )
    return (f"nx: the platform is up; the edge listens on {edge}\n" + operator +
            f"nx: bootstrap key {result.key_prefix}... (organization {result.org_id})")


def cmd_up(settings: Settings) -> int:
    from control_plane.supervisor import prepare, run_platform

    result = asyncio.run(prepare(settings))
    return asyncio.run(run_platform(settings, _welcome(settings, result)))


def cmd_init(settings: Settings) -> int:
    from control_plane.supervisor import prepare

    result = asyncio.run(prepare(settings))
    print(_welcome(settings, result).replace("the platform is up; the edge listens on", "edge will listen on"))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nx", description="Open Ai platform")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every process on embedded defaults")
    sub.add_parser("init", help="create what is missing and print the bootstrap key")
    from control_plane.cli_admin import add_admin_commands

    admin = add_admin_commands(sub)
    from control_plane.cli_ledger import add_ledger_commands

    ledger = add_ledger_commands(sub)
    from control_plane.cli_exports import add_export_commands

    export = add_export_commands(sub)
    from control_plane.cli_db import add_db_commands

    db = add_db_commands(sub)
    from control_plane.cli_envoy import add_envoy_commands

    envoy = add_envoy_commands(sub)
    from control_plane.cli_mail import add_mail_commands

    mail = add_mail_commands(sub)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command not in ("up", "init", "db", "envoy"):
            # Operator commands read and write with this code's statements: only on its schema.
            asyncio.run(require_current(settings.effective_database_url))
        if args.command == "up":
            status = cmd_up(settings)
        elif args.command == "init":
            status = cmd_init(settings)
        elif args.command == "ledger":
            status = ledger(args, settings)
        elif args.command == "export":
            status = export(args, settings)
        elif args.command == "db":
            status = db(args, settings)
        elif args.command == "envoy":
            status = envoy(args, settings)
        elif args.command == "mail":
            status = mail(args, settings)
        else:
            status = admin(args, settings)
    except (SettingsError, CatalogError, SchemaError, MigrationError, TemplateError) as exc:
        print(f"nx: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()
