"""A platform wired to the provider simulator (and, for the tests that ask, the real local models),
shared by tests/inference, tests/compat and others.

The catalog is written to a temp file and passed as NX_CATALOG_PATH; the upstream credentials
reach the adapter only through the environment variables the catalog names.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from local_models import EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE, TEXT_MODEL_FILE
from tests.harness import ROOT, Platform, free_port
from tests.simulator.server import SimulatorProcess

__all__ = ["CATALOG", "SimPlatform", "local_runtime_missing", "start_local_models", "start_sim_platform",
           "stop_process"]

PRICE = ("price = { input_nanos_per_mtok = 1_000_000_000, cached_input_nanos_per_mtok = 500_000_000,"
         " output_nanos_per_mtok = 2_000_000_000, effective_at = 2026-01-01 }")

CATALOG = """
[[backends]]
id = "sim"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_SIM_KEY"
timeout_ms = 5000

[[backends]]
id = "sim_slow"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_SIM_KEY"
timeout_ms = 700

[[backends]]
id = "sim_ant"
protocol = "anthropic"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_SIM_ANT_KEY"
timeout_ms = 5000

[[backends]]
id = "dead"
protocol = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"
timeout_ms = 2000
connect_timeout_ms = 500

[[backends]]
id = "nokey"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_UNSET_KEY"

[[backends]]
id = "local"
protocol = "openai_chat"
base_url = "http://127.0.0.1:{{local_models_port}}/v1"
timeout_ms = 120000

[[models]]
id = "sim/chat"
display_name = "Simulated chat"
backend = "sim"
upstream_name = "sim-chat-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 1024
aliases = ["sim-chat"]
capabilities = {{ streaming = true, tools = true, json_schema = true, json_object = true, vision = true }}
{price}

[[models]]
id = "sim/plain"
display_name = "Simulated chat without extras"
backend = "sim"
upstream_name = "sim-plain-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 64
capabilities = {{ streaming = false, tools = false, json_schema = false, json_object = false, vision = false }}
{price}

[[models]]
id = "sim/slow"
display_name = "Simulated chat with a short timeout"
backend = "sim_slow"
upstream_name = "sim-slow-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 1024
{price}

[[models]]
id = "sim/claude"
display_name = "Simulated Anthropic model"
backend = "sim_ant"
upstream_name = "claude-sim-upstream"
kind = "text"
context_window = 200000
max_output_tokens = 4096
capabilities = {{ streaming = true, tools = true, vision = true }}
{price}

[[models]]
id = "sim/embed"
display_name = "Simulated embeddings"
backend = "sim"
upstream_name = "sim-embed-upstream"
kind = "embedding"
context_window = 8192
max_output_tokens = 0
capabilities = {{ streaming = false, embeddings = true, dimensions = 8, custom_dimensions = true }}
{price}

[[models]]
id = "sim/embed-fixed"
display_name = "Simulated embeddings, fixed width"
backend = "sim"
upstream_name = "sim-embed-fixed"
kind = "embedding"
context_window = 8192
max_output_tokens = 0
capabilities = {{ streaming = false, embeddings = true, dimensions = 8 }}
{price}

[[models]]
id = "dead/chat"
display_name = "Backend that is down"
backend = "dead"
upstream_name = "nobody"
kind = "text"
context_window = 8192
max_output_tokens = 1024
{price}

[[models]]
id = "nokey/chat"
display_name = "Backend whose credential is not set"
backend = "nokey"
upstream_name = "sim-chat-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 1024
{price}

[[models]]
id = "local/gemma-3-270m"
display_name = "Gemma 3 270M (local)"
backend = "local"
upstream_name = "gemma-3-270m"
kind = "text"
context_window = 32768
max_output_tokens = 1024
aliases = ["orion-reason"]
capabilities = {{ streaming = true }}
price = {{ input_nanos_per_mtok = 20_000_000, cached_input_nanos_per_mtok = 10_000_000, output_nanos_per_mtok = 80_000_000, effective_at = 2026-01-01 }}

[[models]]
id = "local/all-minilm-l6-v2"
display_name = "all-MiniLM-L6-v2 (local, int8)"
backend = "local"
upstream_name = "all-minilm-l6-v2"
kind = "embedding"
context_window = 256
max_output_tokens = 0
capabilities = {{ streaming = false, embeddings = true, dimensions = 384 }}
price = {{ input_nanos_per_mtok = 5_000_000, cached_input_nanos_per_mtok = 1_000_000, output_nanos_per_mtok = 0, effective_at = 2026-01-01 }}
"""


def models_dir() -> Path | None:
    """The local weights, fetched when absent; None when they cannot be had (then local tests skip)."""
    path = Path(os.environ.get("LOCAL_MODELS_DIR", ROOT / "data" / "models"))
    files = (TEXT_MODEL_FILE, EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE)
    if not all((path / f).is_file() for f in files):
        subprocess.run([sys.executable, "-m", "local_models.fetch", "--dest", str(path)], cwd=ROOT,
                       capture_output=True, timeout=900, check=False)
    return path if all((path / f).is_file() for f in files) else None


def local_runtime_missing() -> str | None:
    """Why the local model server cannot run here (its runtimes are an optional install), or None."""
    missing = [m for m in ("llama_cpp", "onnxruntime", "tokenizers") if importlib.util.find_spec(m) is None]
    return f"local model runtime not installed ({', '.join(missing)})" if missing else None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class SimPlatform:
    """A platform whose catalog points at the simulator, and at a local model server on
    `local_port`, which runs only for the tests that ask for it (`start_local_models()`, or
    `start_sim_platform(local_models=True)`): most tests have no use for it, and it needs the
    optional llama.cpp runtime and ~300 MB of weights."""

    platform: Platform
    sim: SimulatorProcess
    tmp: tempfile.TemporaryDirectory[str] = field(repr=False)
    local_port: int = 0
    local_unavailable: str | None = None
    """Why the local models could not be started, once a start was tried."""
    _local: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def local(self) -> subprocess.Popen[bytes] | None:
        """The local model server, started on first use; None (tests skip) when it cannot run."""
        return self.start_local_models()

    def start_local_models(self) -> subprocess.Popen[bytes] | None:
        if self._local is None and self.local_unavailable is None:
            self.local_unavailable = local_runtime_missing()
            models = models_dir() if self.local_unavailable is None else None
            if models is None:
                self.local_unavailable = self.local_unavailable or "local model weights absent and not fetchable"
            else:
                self._local = start_local_models(self.local_port, models, Path(self.tmp.name) / "local.log")
        return self._local

    async def stop(self) -> None:
        try:
            await self.platform.stop()
        finally:
            try:
                self.sim.stop()
            finally:
                if self._local is not None:
                    stop_process(self._local)
                self.tmp.cleanup()


def start_local_models(port: int, models: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "local_models.server", "--host", "127.0.0.1", "--port",
                                 str(port), "--models-dir", str(models)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
    except BaseException:
        stop_process(proc, timeout=5)
        raise
    stop_process(proc, timeout=5)
    raise RuntimeError(f"local model server did not start: {log.read_text()[-2000:]}")


async def start_sim_platform(*, local_models: bool = False, env: dict[str, str] | None = None,
                             log_dir: Path | None = None) -> SimPlatform:
    """The simulator, then the platform; with `local_models`, the local model server too; `env`
    adds settings (e.g. short hold leases for tests/faults); `log_dir` keeps each process's log
    lines in a file there. Whatever was started is stopped again if a later step fails."""
    sim = SimulatorProcess().start()
    tmp = tempfile.TemporaryDirectory(prefix="nx-sim-catalog-")
    local_port = free_port()
    catalog = Path(tmp.name) / "catalog.toml"
    catalog.write_text(CATALOG.format(sim=sim.url, dead_port=free_port(), price=PRICE))
    platform = Platform(extra_env={
        "NX_CATALOG_PATH": str(catalog), "NX_TEST_SIM_KEY": sim.api_key,
        "NX_TEST_SIM_ANT_KEY": sim.anthropic_key, "NX_LOCAL_MODELS_PORT": str(local_port), **(env or {})},
        log_dir=log_dir)
    running = SimPlatform(platform=platform, sim=sim, tmp=tmp, local_port=local_port)
    try:
        if local_models:
            running.start_local_models()
        await platform.start()
    except BaseException:
        await running.stop()
        raise
    return running
