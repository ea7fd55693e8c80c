"""Fixtures that run the real local model server as a subprocess on a free port.

The weights are taken from ``LOCAL_MODELS_DIR`` (default ``data/models``) and fetched there when
absent. Tests that need them skip only if they are absent *and* the fetch fails (no index
reachable); everything else is a real failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from local_models import EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE, TEXT_MODEL_FILE

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _have_weights(models_dir: Path) -> bool:
    files = (TEXT_MODEL_FILE, EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE)
    return all((models_dir / f).is_file() for f in files)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("LOCAL_MODELS_DIR", REPO / "data" / "models"))
    if _have_weights(path):
        return path
    result = subprocess.run(
        [sys.executable, "-m", "local_models.fetch", "--dest", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0 or not _have_weights(path):
        pytest.skip(
            f"model weights absent from {path} and could not be fetched: {result.stderr.strip()[-400:]}"
        )
    return path


def start_server(models_dir: Path, tmp: Path, *extra: str) -> RunningServer:
    port = _free_port()
    log_path = tmp / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_models.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--models-dir",
                str(models_dir),
                *extra,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(models_dir, tmp_path_factory.mktemp("local-models"), "--max-queue", "8")
    yield running
    stop_server(running)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start extra servers (other flags or models dirs) for one test; all are stopped after it."""
    started: list[RunningServer] = []

    def _launch(models: Path, *extra: str) -> RunningServer:
        running = start_server(models, tmp_path, *extra)
        started.append(running)
        return running

    yield _launch
    for running in started:
        stop_server(running)
