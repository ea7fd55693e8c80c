"""Usage lane: `/v1/usage` query times over generated usage records (bench/usage_query.py), on
SQLite and PostgreSQL. 10 million records in a full run (the goal's size), 200,000 with --quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.tools import BENCH, RESULTS

__all__ = ["run"]


async def run(quick: bool) -> dict[str, Any]:
    script = BENCH / "usage_query.py"
    if not script.exists():
        return {"skipped": "bench/usage_query.py does not exist yet"}
    records = 200_000 if quick else 10_000_000
    out: dict[str, Any] = {"records": records, "runs": {}}
    for db in ("sqlite", "postgresql"):
        proc = subprocess.run([sys.executable, str(script), "--records", str(records), "--db", db],
                              capture_output=True, text=True, timeout=3600, check=False, cwd=BENCH.parent)
        written = RESULTS / f"usage_query-{db}-{records}.json"
        run = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-1500:]}
        if proc.returncode == 0 and written.exists():
            run["result"] = json.loads(written.read_text())
        out["runs"][db] = run
        print(f"  usage_query {db} {records}: exit {proc.returncode}", flush=True)
    return out
