"""`nx envoy render`: print the Envoy configuration this platform would run, from envoy/'s templates.

    nx envoy render [--part bootstrap|clusters|routes] [--json] [--from auto|database|catalog]

The bootstrap comes from the settings alone; the clusters and routes also need the model backends:
from the database when it is at this code's schema (what `nx up` writes), else from the catalog
file (a fresh checkout renders without a database). `--from` picks one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml  # type: ignore[import-untyped]

from control_plane.domain.catalog import load_catalog
from control_plane.envoy_config import BackendRow, load_backends, render_bootstrap, render_dynamic
from core.db import make_engine
from core.migrations import status
from core.settings import Settings

__all__ = ["add_envoy_commands"]

Dispatcher = Callable[[argparse.Namespace, Settings], int]
PARTS = ("bootstrap", "clusters", "routes")


def add_envoy_commands(sub: Any) -> Dispatcher:
    cmds = sub.add_parser("envoy", help="the edge's configuration (envoy/)").add_subparsers(dest="action",
                                                                                            required=True)
    render = cmds.add_parser("render", help="print the rendered Envoy configuration")
    render.add_argument("--part", choices=PARTS, action="append",
                        help="only this document (repeatable); default: all three")
    render.add_argument("--json", action="store_true", help="JSON, as Envoy reads it (default: YAML)")
    render.add_argument("--from", dest="source", choices=("auto", "database", "catalog"), default="auto",
                        help="where the backends come from (default: the database if current, else the catalog)")
    return run


async def _database_current(settings: Settings) -> bool:
    if settings.is_sqlite and not (settings.data_path / "nx.db").exists():
        return False  # a fresh checkout: do not create a database just to print a config
    try:
        return (await status(settings.effective_database_url)).problem is None
    except Exception:  # unreachable or foreign database: fall back to the catalog
        return False


async def _from_database(settings: Settings) -> list[BackendRow]:
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            return await load_backends(conn)
    finally:
        await engine.dispose()


def _backends(settings: Settings, source: str) -> list[BackendRow]:
    if source == "database" or (source == "auto" and asyncio.run(_database_current(settings))):
        return asyncio.run(_from_database(settings))
    catalog = load_catalog(settings.catalog_path, settings)
    print(f"nx: backends from the catalog {Path(settings.catalog_path)}", file=sys.stderr)
    return [BackendRow(b.id, b.base_url, b.timeout_ms, b.connect_timeout_ms) for b in catalog.backends]


def run(args: argparse.Namespace, settings: Settings) -> int:
    parts: list[str] = args.part or list(PARTS)
    docs: dict[str, Any] = {}
    if "bootstrap" in parts:
        docs["bootstrap"] = render_bootstrap(settings)
    if "clusters" in parts or "routes" in parts:
        cds, rds = render_dynamic(settings, _backends(settings, args.source))
        docs["clusters"], docs["routes"] = cds, rds
    files = {"bootstrap": "bootstrap.json", "clusters": "cds.json", "routes": "rds.json"}
    for i, part in enumerate(p for p in PARTS if p in parts):
        where = settings.envoy_dir / files[part]
        if args.json:
            sys.stdout.write(msgspec.json.format(msgspec.json.encode(docs[part]), indent=2).decode() + "\n")
        else:
            sys.stdout.write(("---\n" if i else "") + f"# {part}: {where}\n")
            sys.stdout.write(yaml.safe_dump(docs[part], sort_keys=False, width=120))
    return 0
