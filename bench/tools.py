"""Shared pieces: request bodies, wrk and the Python load generator as subprocesses, RSS, results.

Every load runs in its own process against 127.0.0.1 and is bounded by a duration (and, for the
Python generator, a request cap).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform as pyplatform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["BENCH", "RESULTS", "chat_body", "loadgen", "machine", "rss_mb", "write_result", "wrk"]

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
_TMP = Path(tempfile.mkdtemp(prefix="nx-bench-bodies-"))


def chat_body(model: str, *, stream: bool = False, first_byte_ms: int = 0, chunk_ms: int = 0,
              chunks: int = 8, max_tokens: int = 64) -> Path:
    """A chat request whose simulator directive fixes the upstream's timing; written to a file."""
    directive = f"[[sim first_byte_ms={first_byte_ms} chunk_ms={chunk_ms} chunks={chunks}]]"
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": f"Say something short. {directive}"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    path = _TMP / f"{abs(hash(json.dumps(body, sort_keys=True)))}.json"
    path.write_text(json.dumps(body))
    return path


_LUA = """
wrk.method = "POST"
wrk.body = io.open("{body}", "rb"):read("*a")
wrk.headers["content-type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local s = string.format('{{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"timeouts":%d',
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.status, summary.errors.timeout)
  for _, p in pairs({{50, 90, 99, 99.9}}) do
    s = s .. string.format(',"p%s":%.3f', tostring(p), latency:percentile(p) / 1000)
  end
  io.write("WRKJSON " .. s .. string.format(',"max":%.3f}}', latency.max / 1000) .. "\\n")
end
"""


def wrk(url: str, body: Path, headers: dict[str, str], *, connections: int, duration: float,
        threads: int = 1) -> dict[str, Any]:
    """Closed-loop load with wrk; latencies in ms, `rate` = non-error responses per second."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: apt-get install -y wrk")
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = _TMP / f"wrk-{abs(hash((str(body), lines)))}.lua"
    script.write_text(_LUA.format(body=body, headers=lines))
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
                          "--timeout", "30s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60, check=False)
    found = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if not found:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    r: dict[str, Any] = json.loads(found.group(1))
    seconds = r["duration_us"] / 1e6
    bad = r["errors"] + r["status_errors"]
    r["rate"] = round((r["requests"] - r["status_errors"]) / seconds, 1)
    r["connections"] = connections
    r["ok"] = r["requests"] - bad
    return r


def loadgen(url: str, body: Path, headers: dict[str, str], *, duration: float, rate: float = 0,
            concurrency: int = 1, stream: bool = False, stall_ms: float = 250.0,
            max_requests: int = 200_000) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, "--body-file", str(body),
            "--duration", str(duration), "--max-requests", str(max_requests), "--stall-ms", str(stall_ms)]
    argv += [a for k, v in headers.items() for a in ("--header", f"{k}: {v}")]
    argv += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    if stream:
        argv.append("--stream")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False,
                         cwd=BENCH.parent, env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process, from /proc (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (for CPU per request)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:")))
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return {"nproc": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "cpu": cpu,
            "kernel": pyplatform.release(), "python": pyplatform.python_version(),
            "wrk": wrk_version.split("Copyright")[0].strip(),
            "loadavg_at_start": os.getloadavg()}


def write_result(lane: str, data: dict[str, Any], command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    path = RESULTS / f"{now:%Y-%m-%d}-{lane}.json"
    doc = {"lane": lane, "date": now.isoformat(timespec="seconds"), "command": command,
           "machine": machine(), **data}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
