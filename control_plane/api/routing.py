"""Management API for routing: backends, models, price cards and aliases (admin token)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.guards import admin_guard

__all__ = ["RoutingController"]


class RoutingController(Controller):
    path = "/api"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @get("/backends")
    async def list_backends(self, conn: AsyncConnection) -> dict[str, object]:
        rows = await conn.execute(text("SELECT id, protocol, base_url, enabled FROM backends ORDER BY id"))
        return {"object": "list", "data": [
            {"id": r[0], "protocol": r[1], "base_url": r[2], "enabled": bool(r[3])} for r in rows]}
