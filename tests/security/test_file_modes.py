"""`nx up` leaves nothing in the data directory readable by other users: the directory is 0700 and
every file in it (the SQLite database, its WAL and shared-memory files, secrets.toml, Envoy's
configuration, and files that were there before, such as fetched weights) is owner-only, even when
the shell's umask is the usual 022."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
import tempfile
from pathlib import Path

import httpx

from tests.harness import ROOT, create_pg_database, drop_pg_database, free_port, use_postgres


def loose_modes(root: Path) -> list[str]:
    loose = []
    for entry in (root, *root.rglob("*")):
        mode = stat.S_IMODE(entry.lstat().st_mode)
        if not stat.S_ISLNK(entry.lstat().st_mode) and mode & 0o077:
            loose.append(f"{entry.relative_to(root.parent)} {mode:o}")
    return loose


async def test_nx_up_makes_the_data_directory_owner_only() -> None:
    with tempfile.TemporaryDirectory(prefix="nx-modes-") as tmp:
        data = Path(tmp) / "data"
        (data / "models").mkdir(parents=True)
        data.chmod(0o755)
        (data / "models").chmod(0o755)
        (data / "models" / "weights.bin").write_bytes(b"fetched before the platform started")
        (data / "models" / "weights.bin").chmod(0o644)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NX_") and k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({"NX_DATA_DIR": str(data), "NX_EDGE_PORT": str(free_port()),
                    "NX_ENVOY_ADMIN_PORT": str(free_port()), "NX_SIDECAR_PORT": str(free_port()),
                    "NX_ADAPTER_PORT": str(free_port()), "NX_CONTROL_PLANE_PORT": str(free_port()),
                    "NX_LOCAL_MODELS_ENABLED": "false", "NX_ENVOY_CONCURRENCY": "1", "PYTHONPATH": str(ROOT)})
        pg = None
        if use_postgres():
            pg, env["DATABASE_URL"] = await create_pg_database()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control_plane.cli", "up", env=env, cwd=str(ROOT), umask=0o022,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            banner = ""
            async with asyncio.timeout(90):
                while "curl -s" not in banner:
                    line = (await proc.stdout.readline()).decode()
                    assert line, f"nx up ended early:\n{banner}"
                    banner += line
            key = re.search(r"\b(nx_live_[0-9A-Za-z]+)\b", banner)
            assert key, banner
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['NX_EDGE_PORT']}") as c:
                r = await c.get("/v1/models", headers={"authorization": f"Bearer {key.group(1)}"})
                assert r.status_code == 200, r.text
            names = {p.name for p in data.iterdir()}
            assert "secrets.toml" in names and "envoy" in names
            if not use_postgres():
                assert {"nx.db", "nx.db-wal", "nx.db-shm"} <= names, names
            assert loose_modes(data) == []
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if pg:
                await drop_pg_database(pg)
