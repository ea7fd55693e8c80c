"""Route targets' health as the adapters see it (proxy_plugins/adapter/health.py), for operators.

With `REDIS_URL` the adapters share one view in Redis, read here directly; without it each
adapter process keeps its own, and this asks each (`/internal/route-health`, internal token) and
merges them, the most recent word on a target winning. An adapter that does not answer is left
out and named in `unreachable`.
"""

from __future__ import annotations

import time
from typing import Literal

import httpx
import msgspec

from core.contract import Header
from core.settings import Settings

__all__ = ["HealthView", "TargetHealthView", "route_health"]

REDIS_KEY = "nx:route-health"  # the adapter's health.REDIS_KEY (a process may not import another's package)


class TargetHealthView(msgspec.Struct, kw_only=True):
    target: str
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_error: str | None = None
    updated_at: float = 0.0
    state: Literal["admitted", "ejected"] = "admitted"


class HealthView(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[TargetHealthView]
    source: Literal["redis", "adapters"]
    unreachable: list[str] = msgspec.field(default_factory=list)


class _Reply(msgspec.Struct):
    data: list[TargetHealthView]


def _merge(found: list[TargetHealthView]) -> list[TargetHealthView]:
    now = time.time()
    best: dict[str, TargetHealthView] = {}
    for h in found:
        if h.target not in best or h.updated_at > best[h.target].updated_at:
            best[h.target] = h
    for h in best.values():
        h.state = "ejected" if h.ejected_until > now else "admitted"
    return sorted(best.values(), key=lambda h: h.target)


async def route_health(settings: Settings, internal_token: str) -> HealthView:
    if settings.redis_url:
        import redis.asyncio as aioredis

        client = aioredis.from_url(settings.redis_url)
        try:
            raw = await client.hgetall(REDIS_KEY)
        finally:
            await client.aclose()
        return HealthView(data=_merge([msgspec.json.decode(v, type=TargetHealthView) for v in raw.values()]),
                          source="redis")
    found: list[TargetHealthView] = []
    unreachable: list[str] = []
    async with httpx.AsyncClient(timeout=2) as http:
        for port in settings.adapter_ports:
            url = f"http://{settings.adapter_host}:{port}/internal/route-health"
            try:
                reply = await http.get(url, headers={Header.INTERNAL: internal_token})
                found += msgspec.json.decode(reply.content, type=_Reply).data
            except (httpx.HTTPError, msgspec.MsgspecError):
                unreachable.append(f"{settings.adapter_host}:{port}")
    return HealthView(data=_merge(found), source="adapters", unreachable=unreachable)
