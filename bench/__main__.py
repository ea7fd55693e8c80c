"""`python -m bench run [--lane overhead|streaming|peers|embeddings|memory|usage|profile|fairness|observability
|failover] [--quick]`

Lanes run one after another, never in parallel (the machine's cores are shared by everything).
Each lane writes bench/results/<date>-<lane>.json; docs/benchmarks.md summarises them. The platform
runs on SQLite; with NX_TEST_DATABASE=postgresql (tests/harness.py) on a fresh PostgreSQL database,
written as <date>-<lane>-postgresql.json; the server is the one the tests use (NX_TEST_PG_ADMIN, else
127.0.0.1:5432, else a throwaway one started for the run: tests/throwaway.py). NX_* tuning variables
(NX_SIDECAR_PROCESSES, with REDIS_URL; NX_ENVOY_CONCURRENCY) are passed to the platform (bench/stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shlex
import sys
import time
from typing import Any

from bench.tools import write_result
from tests.harness import use_postgres
from tests.throwaway import servers

LANES = ("overhead", "streaming", "peers", "embeddings", "memory", "usage", "profile", "fairness", "observability",
         "failover")


async def _lane(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.lane_{name}")
    result: dict[str, Any] = await module.run(quick)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run benchmark lanes")
    run.add_argument("--lane", choices=LANES, action="append",
                     help="one lane (repeatable); default: all, in order")
    run.add_argument("--quick", action="store_true", help="shorter runs (smoke check, noisier figures)")
    report = sub.add_parser("report", help="print the generated part of docs/benchmarks.md (newest result "
                            "of each lane)")
    report.add_argument("--write", action="store_true",
                        help="regenerate docs/benchmarks.md above its marker line, keeping the text below it")
    args = parser.parse_args(argv)
    if args.cmd == "report":
        from bench.report import render, write

        if args.write:
            print(f"wrote {write()}")
        else:
            print(render(), end="")
        return
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    with servers(postgres=use_postgres(), redis=False):
        _run_lanes(args.lane or list(LANES), args.quick, command)


def _run_lanes(lanes: list[str], quick: bool, command: str) -> None:
    for lane in lanes:
        print(f"== lane {lane}{' (quick)' if quick else ''}", flush=True)
        t0 = time.monotonic()
        data = asyncio.run(_lane(lane, quick))
        data["quick"] = quick
        data["wall_s"] = round(time.monotonic() - t0, 1)
        data["database"] = "postgresql" if use_postgres() else "sqlite"
        # SQLite is the default; a PostgreSQL run is kept beside it, not over it.
        label = lane if data["database"] == "sqlite" else f"{lane}-postgresql"
        print(f"   wrote {write_result(label, data, command)} in {data['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
