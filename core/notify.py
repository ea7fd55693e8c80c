"""Tells the running sidecars that keys or configuration changed, so the change applies at once
on this node instead of after the key-cache TTL or the one-second snapshot poll."""

from __future__ import annotations

import logging

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.contract import Header
from core.settings import Settings

log = logging.getLogger("nx.notify")


class Notifier:
    def __init__(self, settings: Settings, internal_token: str) -> None:
        self.urls = [f"http://{settings.sidecar_host}:{p}" for p in settings.sidecar_ports]
        self.client = httpx.AsyncClient(timeout=2.0, headers={Header.INTERNAL: internal_token})
        # With Redis, every sidecar replica on every node hears it (proxy_plugins/sidecar/server.py).
        self.redis = aioredis.from_url(settings.redis_url, socket_timeout=1.0) if settings.redis_url else None

    async def invalidate(self, key_ids: list[str] | None = None, config: bool = False) -> None:
        if self.redis is not None:
            try:
                await self.redis.publish("nx:invalidate", msgspec.json.encode(
                    {"key_ids": key_ids or [], "config": config}))
            except (RedisError, OSError) as exc:
                log.warning("could not publish invalidation to Redis: %s", exc)
        for url in self.urls:
            try:
                await self.client.post(f"{url}/internal/invalidate",
                                       json={"key_ids": key_ids or [], "config": config})
            except httpx.HTTPError as exc:
                # The sidecar's TTL and config poll still bound staleness; say so, do not fail the write.
                log.warning("could not notify sidecar %s: %s", url, exc)

    async def close(self) -> None:
        await self.client.aclose()
        if self.redis is not None:
            await self.redis.aclose()
