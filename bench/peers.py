"""Peer gateways, installed and started by the bench itself, pointed at the same simulator.

- LiteLLM proxy: PyPI `litellm[proxy]` pinned, in its own virtual environment (bench/.venvs/litellm),
  no database, `LITELLM_LOCAL_MODEL_COST_MAP=True`, a master key, one model.
- Portkey gateway: npm `@portkey-ai/gateway` pinned, installed under bench/.peers/portkey, started
  headless; the provider and the simulator's address travel in `x-portkey-*` headers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.harness import free_port

__all__ = ["LITELLM_VERSION", "PORTKEY_VERSION", "Peer", "start_litellm", "start_portkey"]

LITELLM_VERSION = "1.108.7"
"""Pinned: 1.110.x's `proxy` extra requires a `litellm-proxy` release that is not published."""
PORTKEY_VERSION = "1.15.2"
LITELLM_WORKERS = 2
"""One uvicorn worker per core, the most this machine can give it."""

BENCH = Path(__file__).resolve().parent
MASTER_KEY = "sk-bench-litellm-master-0001"


class Peer:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], url: str, headers: dict[str, str],
                 features: str, version: str) -> None:
        self.name, self.proc, self.url, self.headers = name, proc, url, headers
        self.features, self.version = features, version

    def pids(self) -> dict[str, int]:
        """The gateway and its worker processes (LiteLLM forks uvicorn workers)."""
        out = {self.name: self.proc.pid}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            for i, pid in enumerate(children.read_text().split()):
                out[f"{self.name}-child-{i + 1}"] = int(pid)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ensure_litellm() -> Path:
    venv = BENCH / ".venvs" / "litellm"
    binary = venv / "bin" / "litellm"
    marker = venv / f".installed-{LITELLM_VERSION}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True, timeout=900)
        marker.touch()
    return binary


def ensure_portkey() -> Path:
    root = BENCH / ".peers" / "portkey"
    script = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    marker = root / f".installed-{PORTKEY_VERSION}"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text('{"private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
                       cwd=root, check=True, timeout=900, capture_output=True)
        marker.touch()
    return script


def _wait(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}")


def start_litellm(sim_url: str, sim_key: str, model: str, workdir: Path) -> Peer:
    binary = ensure_litellm()
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        "      model: openai/sim-chat-upstream\n"
        f"      api_base: {sim_url}/v1\n"
        f"      api_key: {sim_key}\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  drop_params: true\n")
    log = workdir / "litellm.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", str(LITELLM_WORKERS)], env=env, cwd=workdir,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait(proc, f"http://127.0.0.1:{port}/health/liveliness", log)
    return Peer("litellm", proc, f"http://127.0.0.1:{port}/v1/chat/completions",
                {"authorization": f"Bearer {MASTER_KEY}"},
                f"master-key auth, no database (so no virtual keys, budgets, spend logs or rate limits), "
                f"{LITELLM_WORKERS} uvicorn workers", LITELLM_VERSION)


def start_portkey(sim_url: str, sim_key: str, workdir: Path) -> Peer:
    script = ensure_portkey()
    port = free_port()
    log = workdir / "portkey.log"
    proc = subprocess.Popen(["node", str(script), f"--port={port}", "--headless"], cwd=workdir,
                            env={**os.environ, "NODE_ENV": "production"},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait(proc, f"http://127.0.0.1:{port}/", log)
    return Peer("portkey", proc, f"http://127.0.0.1:{port}/v1/chat/completions",
                {"authorization": f"Bearer {sim_key}", "x-portkey-provider": "openai",
                 "x-portkey-custom-host": f"{sim_url}/v1"},
                "open-source gateway, headless, one Node process, no auth of its own (the upstream key "
                "passes through), no logging, caching, guardrails or budgets configured", PORTKEY_VERSION)
