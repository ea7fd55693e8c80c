"""Starts the real platform (Envoy, sidecar, control plane, worker) on free ports for tests.

The database is SQLite in a temp directory, or a fresh PostgreSQL database when
`NX_TEST_DATABASE=postgresql` (created per platform, dropped on stop), so the whole suite runs on
both. Nothing here is mocked: the processes are the ones `nx up` starts. Every port is a free one
(`ephemeral_ports` covers every `*_port` setting, so a new one cannot slip through), and a start that
fails half-way stops what it had started before raising.

PostgreSQL is the server at `NX_TEST_PG_ADMIN` (read when a database is created); `./nx test` sets it,
starting a throwaway server when none answers (tests/throwaway.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
import time
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
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ADMIN_DSN = os.environ.get("NX_TEST_PG_ADMIN", DEFAULT_PG_ADMIN)
"""As the environment said at import; `pg_admin_dsn()` reads it when called (bench sets it later)."""


def pg_admin_dsn() -> str:
    return os.environ.get("NX_TEST_PG_ADMIN") or DEFAULT_PG_ADMIN


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


def ephemeral_ports() -> dict[str, str]:
    """A free port for every `*_port` setting (NX_EDGE_PORT, NX_LOCAL_MODELS_PORT, ...): a test
    platform never takes a default port, so it runs beside `nx up` or anything else on the machine."""
    return {f"NX_{name.upper()}": str(free_port()) for name in Settings.__struct_fields__ if name.endswith("_port")}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    """Poll `check()` until it holds, at most `timeout` seconds: for outcomes that arrive
    asynchronously by design, instead of sleeping a guessed time and asserting once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def use_postgres() -> bool:
    return os.environ.get("NX_TEST_DATABASE", "sqlite") == "postgresql"


async def create_pg_database() -> tuple[str, str]:
    name = f"nx_test_{secrets.token_hex(6)}"
    admin = pg_admin_dsn()
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(pg_admin_dsn())
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
    log_dir: Path | None = None
    """When set, each process's stderr (its log lines) goes to `<log_dir>/<name>.log`."""
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
    def operator(self) -> str:
        """The operator listener: the management API (`/api/...`) is served there, never on the edge."""
        return f"http://127.0.0.1:{self.s.operator_port}"

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
        kwargs.setdefault("base_url", self.edge)
        return httpx.AsyncClient(headers=headers, **kwargs)

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.operator, timeout=30,
                                 headers={"authorization": f"Bearer {self.admin_token}"})

    async def start(self) -> Platform:
        """Start the processes in `names`; if one fails, stop the others (and drop the database)
        before raising, so a failed start leaves nothing behind."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nx-test-")
        env = {
            "NX_DATA_DIR": self._tmp.name, **ephemeral_ports(), "NX_LOCAL_MODELS_ENABLED": "false",
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
            child.proc = await self._spawn(child)
            self.started.append(child)
            await _wait_healthy(child, timeout=60)

    async def stop(self) -> None:
        """Stop every process started (whatever state it is in), drop the database, remove the data
        directory. Safe to call twice, and after a start that failed at any point."""
        try:
            if self.settings is not None:  # (processes are started only once settings exist)
                await _stop(self.started, self.settings)
        finally:
            self.started.clear()
            try:
                if self._pg_name:
                    name, self._pg_name = self._pg_name, None
                    await drop_pg_database(name)
            finally:
                if self._tmp is not None:
                    tmp, self._tmp = self._tmp, None
                    with contextlib.suppress(OSError):
                        tmp.cleanup()

    async def restart(self, name: str, crash: bool = False) -> None:
        """Stop one process (gracefully, or SIGKILL with `crash`) and start it again."""
        child = next(c for c in self.started if c.name == name)
        assert child.proc is not None
        if crash:
            child.proc.kill()
        else:
            child.proc.terminate()
        await child.proc.wait()
        child.proc = await self._spawn(child)
        await _wait_healthy(child, timeout=60)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        """Start `child`; with `log_dir`, its stderr is appended to `<log_dir>/<name>.log`."""
        if self.log_dir is None:
            return await asyncio.create_subprocess_exec(*child.argv, env=self.env, cwd=str(ROOT))
        fd = os.open(self.log_dir / f"{child.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return await asyncio.create_subprocess_exec(*child.argv, env=self.env, cwd=str(ROOT), stderr=fd)
        finally:
            os.close(fd)


def python() -> str:
    return sys.executable
