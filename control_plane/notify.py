"""Tells the running sidecars that keys or configuration changed, so the change applies at once
on this node instead of after the key-cache TTL or the one-second snapshot poll."""

from __future__ import annotations

import logging

import httpx

from control_plane.settings import Settings

log = logging.getLogger("nx.notify")


class Notifier:
    def __init__(self, settings: Settings, internal_token: str) -> None:
        self.urls = [settings.sidecar_url]
        self.client = httpx.AsyncClient(timeout=2.0, headers={"x-nx-internal": internal_token})

    async def invalidate(self, key_ids: list[str] | None = None, config: bool = False) -> None:
        for url in self.urls:
            try:
                await self.client.post(f"{url}/internal/invalidate",
                                       json={"key_ids": key_ids or [], "config": config})
            except httpx.HTTPError as exc:
                # The sidecar's TTL and config poll still bound staleness; say so, do not fail the write.
                log.warning("could not notify sidecar %s: %s", url, exc)

    async def close(self) -> None:
        await self.client.aclose()
