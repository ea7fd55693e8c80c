"""Run the simulator as a subprocess on a free port (tests, benchmarks) and read its records."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

__all__ = ["SimulatorProcess", "main"]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimulatorProcess:
    def __init__(self, api_key: str = "sk-sim-upstream-secret-0001",
                 anthropic_key: str = "sk-ant-sim-upstream-secret-0002") -> None:
        self.api_key = api_key
        self.anthropic_key = anthropic_key
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.simulator", "--port", str(self.port), "--api-key", self.api_key,
             "--anthropic-key", self.anthropic_key], cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/_sim/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the provider simulator did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # never leave it running
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def requests(self, contains: str) -> list[dict[str, Any]]:
        """Recorded requests whose raw body contains `contains`."""
        reply = httpx.get(f"{self.url}/_sim/requests", params={"contains": contains}, timeout=5)
        reply.raise_for_status()
        records: list[dict[str, Any]] = reply.json()
        return records


def main(argv: list[str] | None = None) -> None:
    from tests.simulator.app import Simulator

    parser = argparse.ArgumentParser(description="OpenAI / Anthropic provider simulator (tests only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="sk-sim-upstream-secret-0001")
    parser.add_argument("--anthropic-key", default="sk-ant-sim-upstream-secret-0002")
    args = parser.parse_args(argv)
    uvicorn.run(Simulator(args.api_key, args.anthropic_key), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False, log_level="critical")
