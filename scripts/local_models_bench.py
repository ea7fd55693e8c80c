"""Measure the local model server end to end: load time, RSS, first-token latency, tokens/s, embeddings.

Starts ``python -m local_models.server`` on a free port, measures over HTTP (what a client sees), and
prints a Markdown table. Usage: ``.venv/bin/python scripts/local_models_bench.py [--models-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stream_once(client: httpx.Client, max_tokens: int) -> tuple[float, float, int]:
    """(first-token seconds, decode tokens/s after the first token, completion tokens)."""
    payload = {
        "model": "gemma-3-270m",
        "prompt": "The history of the printing press began",
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with client.stream("POST", "/v1/completions", json=payload) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0]["text"]:
                last = time.perf_counter() - started
                first = first or last
    return first, (tokens - 1) / max(last - first, 1e-9), tokens


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", default=str(REPO / "data" / "models"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "local_models.server", "--port", str(port), "--models-dir", args.models_dir],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=1).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        ready_s = time.perf_counter() - started
        rss_idle = _rss_mb(process.pid)
        rows = [
            ("process start to /health answering (both models loaded)", f"{ready_s:.2f} s"),
            ("models", json.dumps(health["models"])),
            ("RSS after load", f"{rss_idle:.0f} MB"),
        ]
        with httpx.Client(base_url=base, timeout=300) as client:
            _stream_once(client, 8)  # warm-up
            runs = [_stream_once(client, 128) for _ in range(args.runs)]
            rows.append(
                (
                    "first token, 128-token completion stream (median)",
                    f"{statistics.median(r[0] for r in runs) * 1000:.0f} ms",
                )
            )
            rows.append(("decode speed (median)", f"{statistics.median(r[1] for r in runs):.1f} tokens/s"))
            for batch in (1, 32, 256):
                texts = [
                    f"Sentence number {i} about a moderately interesting topic in the news."
                    for i in range(batch)
                ]
                client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts[:2]})
                times = []
                for _ in range(3 if batch < 256 else 2):
                    t0 = time.perf_counter()
                    response = client.post(
                        "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts}
                    )
                    response.raise_for_status()
                    times.append(time.perf_counter() - t0)
                rows.append(
                    (
                        f"embeddings, batch {batch} (HTTP round trip, median)",
                        f"{statistics.median(times) * 1000:.0f} ms",
                    )
                )
        rows.append(("RSS after the runs", f"{_rss_mb(process.pid):.0f} MB"))
    finally:
        process.terminate()
        process.wait(timeout=15)
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
