"""`python -m bench run [--lane overhead|streaming|peers|embeddings|memory|usage|profile] [--quick]`

Lanes run one after another, never in parallel (the machine's cores are shared by everything).
Each lane writes bench/results/<date>-<lane>.json; docs/benchmarks.md summarises them.
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

LANES = ("overhead", "streaming", "peers", "embeddings", "memory", "usage", "profile")


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
    args = parser.parse_args(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    for lane in args.lane or LANES:
        print(f"== lane {lane}{' (quick)' if args.quick else ''}", flush=True)
        t0 = time.monotonic()
        data = asyncio.run(_lane(lane, args.quick))
        data["quick"] = args.quick
        data["wall_s"] = round(time.monotonic() - t0, 1)
        print(f"   wrote {write_result(lane, data, command)} in {data['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
