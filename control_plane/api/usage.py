"""`GET /v1/usage` (through the edge, key scope `usage`): usage buckets in OpenAI's page shape.

The caller is the key the sidecar authenticated (`x-nx-org`, `x-nx-key`); it sees its own
organization only, and only the projects the key is scoped to when it is scoped. Parameters and
the result are described in control_plane/usage/params.py and model.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import Caller, provide_caller
from control_plane.api.guards import edge_guard
from control_plane.usage import UsagePage, parse_query, run_query
from core.db import now_ms, read_tx

__all__ = ["UsageController"]


async def key_projects(conn: AsyncConnection, caller: Caller) -> list[str] | None:
    """The projects the key may see: None means all of its organization's."""
    row = (await conn.execute(text("SELECT projects FROM api_keys WHERE id = :k AND org_id = :o"),
                              {"k": caller.key_id, "o": caller.org_id})).first()
    if row is None:
        return []  # a key that vanished between the edge check and here sees nothing
    projects = [str(p) for p in msgspec.json.decode(str(row[0]))]
    return projects or None


class UsageController(Controller):
    path = "/v1/usage"
    guards = [edge_guard]
    dependencies = {"caller": Provide(provide_caller, sync_to_thread=False)}

    @get("/")
    async def usage(self, request: Request[Any, Any, Any], state: State, caller: Caller) -> UsagePage:
        query = parse_query(request.query_params.multi_items(), now_ms())
        # Watermarks are read before the segments; rollup rows below a watermark never change and
        # raw records are never deleted, so a job committing mid-query cannot skew the answer.
        async with read_tx(state.engine) as conn:
            return await run_query(conn, caller.org_id, query, await key_projects(conn, caller))
