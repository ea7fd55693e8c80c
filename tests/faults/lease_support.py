"""Shared by the lease and supervision fault cases: take one process of a test platform down with
SIGKILL and bring it back, a key with a concurrency limit, and what the platform still holds for
an organization (open holds, and whether a request of its gets through)."""

from __future__ import annotations

import asyncio
import os
import signal

from sqlalchemy import text

from control_plane.supervisor import _wait_healthy
from core.contract import ORPHAN_GRACE_MS
from core.db import make_engine, now_ms
from tests.harness import ROOT, Platform

__all__ = ["kill", "limited_key", "open_holds", "revive", "unshortened_holds"]


async def kill(p: Platform, name: str) -> None:
    """SIGKILL one process (no shutdown code runs: no reports, no settlement, no flush)."""
    child = next(c for c in p.started if c.name == name)
    assert child.proc is not None and child.proc.returncode is None
    os.kill(child.proc.pid, signal.SIGKILL)
    await child.proc.wait()


async def revive(p: Platform, name: str) -> None:
    child = next(c for c in p.started if c.name == name)
    child.proc = await asyncio.create_subprocess_exec(*child.argv, env=p.env, cwd=str(ROOT))
    await _wait_healthy(child, timeout=60)


async def limited_key(p: Platform, org: str, **limits: int) -> str:
    async with p.admin() as admin:
        r = await admin.post(f"/api/orgs/{org}/keys", json={"name": "busy", "rate_limits": limits})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


async def open_holds(p: Platform, org: str) -> int:
    engine = make_engine(p.s)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT COUNT(*) FROM ledger_holds WHERE org_id = :o AND status = 'open'"), {"o": org})).scalar_one())
    finally:
        await engine.dispose()


async def unshortened_holds(p: Platform, org: str) -> int:
    """Open holds of `org` that Envoy's access log has not yet cut to the orphan grace (or released):
    zero once the sidecar has read the log entry of every request of `org` that ended."""
    engine = make_engine(p.s)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT COUNT(*) FROM ledger_holds WHERE org_id = :o AND status = 'open' AND expires_at > :t"),
                {"o": org, "t": now_ms() + ORPHAN_GRACE_MS + 1_000})).scalar_one())
    finally:
        await engine.dispose()
