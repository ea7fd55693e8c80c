"""`nx up`: prepare what is missing, start every process, wait for health, stop cleanly.

Order: database schema (installed, or upgraded by the pending migrations after a SQLite backup,
core/migrations), catalog sync, first-run bootstrap, Envoy configuration; then the sidecar,
the control plane, the worker, the local model server, and Envoy last so that the edge opens only
when everything behind it answers. A child that dies afterwards is reported and started again
with exponential back-off (0.5 s doubling to 30 s; from the beginning again once it ran a minute),
while the others keep serving; a child dying again and again is reported as crash-looping on every
death, never hidden. A child that fails during the first start still stops the platform: that is a
configuration to fix, not a blip. SIGINT/SIGTERM drain Envoy's listener first, then let each
Python process finish in-flight requests and flush writes (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from control_plane.domain.bootstrap import BootstrapResult, bootstrap
from control_plane.domain.catalog import load_catalog, sync_catalog
from control_plane.envoy_config import write_bootstrap, write_dynamic
from core.datadir import secure
from core.db import make_engine, write_tx
from core.migrations import upgrade
from core.secrets import load_secrets
from core.settings import Settings

__all__ = ["Child", "prepare", "run_platform"]


async def prepare(settings: Settings) -> BootstrapResult:
    """Create whatever is missing; safe to run on every start. The data directory is made 0700 and
    this process (so every child it starts) creates owner-only files (core/datadir.py)."""
    secure(settings.data_path)
    catalog = load_catalog(settings.catalog_path, settings)  # a bad catalog stops before any change
    secrets = load_secrets(settings)
    # Serialised by the migration lock: replicas starting together upgrade once (compose's `nx init`).
    upgraded = await upgrade(settings.effective_database_url, backup_dir=settings.data_path / "backups")
    from control_plane.cli_db import describe_upgrade

    if (line := describe_upgrade(upgraded)) is not None:
        print(line, file=sys.stderr)
    engine = make_engine(settings)
    try:
        async with write_tx(engine) as conn:
            await sync_catalog(conn, catalog)
            result = await bootstrap(conn, secrets.key_pepper, settings.bootstrap_credit_nanos)
        async with write_tx(engine) as conn:
            await write_dynamic(settings, conn)
    finally:
        await engine.dispose()
    write_bootstrap(settings)
    return result


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    return str(candidate) if candidate.exists() else "envoy"


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str | None
    required: bool = True
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)


def children(settings: Settings) -> list[Child]:
    py = sys.executable
    out = [
        *(Child("sidecar" if i == 0 else f"sidecar-{i + 1}", [py, "-m", "proxy_plugins.sidecar.server",
                                                                 "--port", str(port), "--log-port", str(log_port)],
                f"http://{settings.sidecar_host}:{port}/healthz")
          for i, (port, log_port) in enumerate(zip(settings.sidecar_ports, settings.sidecar_log_ports,
                                                   strict=True))),
        Child("control-plane", [py, "-m", "control_plane.serve"], f"{settings.control_plane_url}/healthz"),
        *(Child("adapter" if i == 0 else f"adapter-{i + 1}", [py, "-m", "proxy_plugins.adapter", "--port", str(port)],
                f"http://{settings.adapter_host}:{port}/healthz")
          for i, port in enumerate(settings.adapter_ports)),
        Child("worker", [py, "-m", "control_plane.worker"], None),
    ]
    models_dir = settings.data_path / "models"
    if settings.local_models_enabled:
        out.append(Child("local-models", [py, "-m", "local_models.server", "--host", "127.0.0.1", "--port",
                                          str(settings.local_models_port), "--models-dir", str(models_dir)],
                         f"http://127.0.0.1:{settings.local_models_port}/health", required=False))
    out.append(Child("envoy", [envoy_binary(), "-c", str(settings.envoy_dir / "bootstrap.json"),
                               "--concurrency", str(settings.envoy_concurrency), "--log-level", "warn",
                               "--drain-time-s", "5", "--parent-shutdown-time-s", "10",
                               # Two platforms on one machine (tests, nx up beside a test run) would
                               # otherwise fight over Envoy's hot-restart socket (base id 0).
                               "--use-dynamic-base-id"],
                     f"http://127.0.0.1:{settings.envoy_admin_port}/ready"))
    return out


async def _wait_healthy(child: Child, timeout: float = 60.0) -> None:
    if child.health_url is None:
        await asyncio.sleep(0.3)
        if child.proc and child.proc.returncode is not None:
            raise RuntimeError(f"{child.name} exited with status {child.proc.returncode} while starting")
        return
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if child.proc and child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with status {child.proc.returncode} while starting")
            try:
                if (await client.get(child.health_url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{child.name} was not healthy within {timeout:.0f}s ({child.health_url})")


async def _stop(started: list[Child], settings: Settings) -> None:
    envoy = next((c for c in started if c.name == "envoy" and c.proc and c.proc.returncode is None), None)
    if envoy is not None:
        try:  # stop taking new connections, let in-flight requests finish
            async with httpx.AsyncClient(timeout=2.0) as client:
                await client.post(f"http://127.0.0.1:{settings.envoy_admin_port}/drain_listeners?graceful")
            await asyncio.sleep(0.5)
        except httpx.HTTPError:
            pass
    for child in reversed(started):
        if child.proc and child.proc.returncode is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in reversed(started):
        if child.proc is None:
            continue
        try:
            await asyncio.wait_for(child.proc.wait(), timeout=15)
        except TimeoutError:
            print(f"nx: {child.name} did not stop in 15s; killing it", file=sys.stderr)
            child.proc.kill()
            await child.proc.wait()


RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0
"""A child that ran this long before dying starts its back-off from the beginning again."""
CRASH_LOOP = 5
"""Restarts in a row (each died within STABLE_S) from which a child is reported as crash-looping."""


def restart_delay(failures: int) -> float:
    """Exponential back-off: 0.5 s, 1 s, 2 s, ... at most 30 s, for the n-th death in a row."""
    return float(min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (failures - 1)))


async def _keep_running(child: Child, env: dict[str, str], stop: asyncio.Event) -> None:
    """Wait for the child to die; report it, start it again after its back-off, wait for its
    health; forever, until `stop`. Every death and restart is printed: a crash loop is visible."""
    failures = 0
    while child.proc is not None:
        started = time.monotonic()
        status = await child.proc.wait()
        if stop.is_set():
            return
        failures = 1 if time.monotonic() - started >= STABLE_S else failures + 1
        delay = restart_delay(failures)
        looping = f"; crash-looping ({failures} deaths in a row)" if failures >= CRASH_LOOP else ""
        print(f"nx: {child.name} exited unexpectedly with status {status}{looping}; restarting it in "
              f"{delay:.1f}s", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        child.proc = await asyncio.create_subprocess_exec(*child.argv, env=env)
        try:
            await _wait_healthy(child, timeout=120 if child.name == "local-models" else 60)
        except RuntimeError as exc:
            print(f"nx: {exc}", file=sys.stderr, flush=True)
            if child.proc.returncode is None:  # alive but never healthy: counts as one more death
                child.proc.kill()
            continue
        print(f"nx: {child.name} restarted (pid {child.proc.pid})", file=sys.stderr, flush=True)


async def run_platform(settings: Settings, on_ready: str) -> int:
    """Start everything, print `on_ready`, and run until a signal, restarting a child that dies."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started: list[Child] = []
    status = 0
    try:
        for child in children(settings):
            child.proc = await asyncio.create_subprocess_exec(*child.argv, env=env)
            started.append(child)
            try:
                await _wait_healthy(child, timeout=120 if child.name == "local-models" else 60)
            except RuntimeError as exc:
                if child.required:
                    raise
                print(f"nx: {exc}; continuing without it (local models will be unavailable)", file=sys.stderr)
            print(f"nx: {child.name} is up", flush=True)
        print(on_ready, flush=True)
        # One supervisor per child: a child that dies is reported and started again with back-off,
        # the rest of the platform keeps serving (and Envoy's access log frees what its requests held).
        keepers = [asyncio.ensure_future(_keep_running(c, env, stop)) for c in started]
        try:
            await stop.wait()
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
        print("nx: stopping", flush=True)
    except RuntimeError as exc:
        print(f"nx: {exc}", file=sys.stderr)
        status = 1
    finally:
        await _stop(started, settings)
    return status
