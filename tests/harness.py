"""Starts the real platform (Envoy, sidecar, control plane, worker) on free ports for tests.

The database is SQLite in a temp directory, or a fresh PostgreSQL database when
`NX_TEST_DATABASE=postgresql` (created per platform, dropped on stop), so the whole suite runs on
both. Nothing here is mocked: the processes are the ones `nx up` starts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from control_plane.domain.bootstrap import BootstrapResult
from control_plane.supervisor import Child, _stop, _wait_healthy, children, prepare
from core.secrets import load_secrets
from core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("NX_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_run(n: int) -> int:
    """First of n consecutive free ports (for NX_SIDECAR_PROCESSES > 1)."""
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports")


def use_postgres() -> bool:
    return os.environ.get("NX_TEST_DATABASE", "sqlite") == "postgresql"


async def create_pg_database() -> tuple[str, str]:
    name = f"nx_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Platform:
    """A running platform. `env` is what its processes saw; `settings` the same, parsed.

    `database`, when given, runs against the new, empty database before `nx up`'s preparation
    (which installs or upgrades the schema): e.g. to build an earlier release's schema and data
    and see this code upgrade and serve it (tests/migrations)."""

    extra_env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ("sidecar", "control-plane", "adapter", "worker", "envoy")
    database: Callable[[Settings], Awaitable[None]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    boot: BootstrapResult | None = None
    started: list[Child] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _pg_name: str | None = None

    @property
    def s(self) -> Settings:
        assert self.settings is not None
        return self.settings

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.s.edge_port}"

    @property
    def key(self) -> str:
        assert self.boot is not None and self.boot.secret is not None
        return self.boot.secret

    @property
    def admin_token(self) -> str:
        return load_secrets(self.s).admin_token

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key or self.key}"}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.edge, headers=headers, **kwargs)

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.edge, timeout=30,
                                 headers={"authorization": f"Bearer {self.admin_token}"})

    async def start(self) -> Platform:
        self._tmp = tempfile.TemporaryDirectory(prefix="nx-test-")
        env = {
            "NX_DATA_DIR": self._tmp.name, "NX_EDGE_PORT": str(free_port()),
            "NX_ENVOY_ADMIN_PORT": str(free_port()), "NX_SIDECAR_PORT": str(free_port()),
            "NX_ADAPTER_PORT": str(free_port()), "NX_CONTROL_PLANE_PORT": str(free_port()),
            "NX_LOCAL_MODELS_PORT": str(free_port()), "NX_LOCAL_MODELS_ENABLED": "false",
            "NX_CATALOG_PATH": str(ROOT / "config" / "catalog.toml"), "NX_ENVOY_CONCURRENCY": "1",
            "NX_LOG_LEVEL": "warning",
        }
        if use_postgres():
            self._pg_name, env["DATABASE_URL"] = await create_pg_database()
        env.update(self.extra_env)
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith("NX_") and k not in ("DATABASE_URL", "REDIS_URL")}
        self.env = {**inherited, **env}
        self.env["PYTHONPATH"] = str(ROOT)
        self.settings = load_settings(self.env)
        if self.database is not None:
            await self.database(self.settings)
        self.boot = await prepare(self.settings)
        for child in children(self.settings):
            base = next((b for b in ("sidecar", "adapter") if child.name.startswith(b)), child.name)
            if base not in self.names:
                continue
            child.proc = await asyncio.create_subprocess_exec(*child.argv, env=self.env, cwd=str(ROOT))
            self.started.append(child)
            await _wait_healthy(child, timeout=60)
        return self

    async def stop(self) -> None:
        if self.settings is not None:
            await _stop(self.started, self.settings)
        self.started.clear()
        if self._pg_name:
            await drop_pg_database(self._pg_name)
        if self._tmp is not None:
            self._tmp.cleanup()

    async def restart(self, name: str, crash: bool = False) -> None:
        """Stop one process (gracefully, or SIGKILL with `crash`) and start it again."""
        child = next(c for c in self.started if c.name == name)
        assert child.proc is not None
        if crash:
            child.proc.kill()
        else:
            child.proc.terminate()
        await child.proc.wait()
        child.proc = await asyncio.create_subprocess_exec(*child.argv, env=self.env, cwd=str(ROOT))
        await _wait_healthy(child, timeout=60)


def python() -> str:
    return sys.executable
