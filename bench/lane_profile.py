"""Profile lane: py-spy on the sidecar and the adapter while wrk holds the full pipeline at c=32.

py-spy (PyPI, pinned) lives in its own virtual environment under bench/.venvs/tools. Each process's
collapsed stacks are reduced to the top functions by own time (the frame on top of the stack), by
inclusive time (anywhere on the stack), and by inclusive time among the project's own functions,
as shares of that process's samples. Samples are taken at 200 Hz of non-idle threads: a process
using one full core for 20 s gives about 4,000; aiosqlite's worker thread waiting on its queue
counts as non-idle, so its share is waiting, not work. The raw collapsed
stacks are kept under bench/results/tmp/ (ignored by git) for flame graphs.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.lane_overhead import UPSTREAM_MS, targets
from bench.stack import MODEL, start_stack
from bench.tools import BENCH, RESULTS, chat_body, wrk

__all__ = ["run", "top_frames"]

PY_SPY_VERSION = "0.4.3"
PROFILED = ("sidecar", "adapter", "control-plane", "worker")
TOP = 25


def ensure_py_spy() -> Path:
    venv = BENCH / ".venvs" / "tools"
    binary = venv / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"py-spy=={PY_SPY_VERSION}"], check=True,
                       timeout=600)
    return binary


def top_frames(collapsed: str) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "share": round(n / total, 4)} for f, n in counter.most_common(TOP)]

    project = Counter({f: n for f, n in inclusive.items() if "control_plane/" in f or "proxy_plugins/" in f})
    return {"samples": total, "own": share(own), "inclusive": share(inclusive), "project_inclusive": share(project)}


def _envoy_stage_times(admin_port: int) -> list[str]:
    """Envoy's upstream time histograms per cluster: how long the sidecar's check and the adapter's
    answer took, as Envoy saw them (ms quantiles, cumulative over the run)."""
    reply = httpx.get(f"http://127.0.0.1:{admin_port}/stats", params={"filter": "upstream_rq_time"}, timeout=5)
    return [line for line in reply.text.splitlines() if line.startswith("cluster.")]


async def run(quick: bool) -> dict[str, Any]:
    duration = 10 if quick else 20
    py_spy = ensure_py_spy()
    out_dir = RESULTS / "tmp"
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = await start_stack(platform=True)
    try:
        url, headers = targets(stack)["pipeline"]
        body = chat_body(MODEL, first_byte_ms=UPSTREAM_MS)
        wrk(url, body, headers, connections=4, duration=1)
        pids = {n: p for n, p in stack.pids().items() if n in PROFILED or n.startswith("sidecar")}
        load: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: load.update(
            wrk(url, body, headers, connections=32, duration=duration + 2)))
        thread.start()
        spies = {name: subprocess.Popen(
            [str(py_spy), "record", "-p", str(pid), "-d", str(duration), "-r", "200", "-f", "raw", "--nonblocking",
             "-o", str(out_dir / f"profile-{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for name, pid in pids.items()}
        profiles: dict[str, Any] = {}
        for name, spy in spies.items():
            _, err = spy.communicate(timeout=duration + 60)
            path = out_dir / f"profile-{name}.txt"
            profiles[name] = top_frames(path.read_text()) if path.exists() else {"error": err.decode()[-500:]}
        thread.join()
        stages = _envoy_stage_times(stack.platform.s.envoy_admin_port)  # type: ignore[union-attr]
        print(f"  under load: {load.get('rate')} req/s; Envoy's view of each stage:", flush=True)
        for line in stages:
            print(f"   {line}", flush=True)
        for name, prof in profiles.items():
            print(f"  {name}: {prof.get('samples')} samples; top own:", flush=True)
            for row in prof.get("own", [])[:6] + prof.get("project_inclusive", [])[:10]:
                print(f"   {row['share'] * 100:5.1f}%  {row['frame']}", flush=True)
        return {"duration_s": duration, "load": load, "profiles": profiles, "py_spy": PY_SPY_VERSION,
                "envoy_stage_times": stages}
    finally:
        await stack.stop()
