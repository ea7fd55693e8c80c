"""Request-scoped dependencies shared by the controllers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.contract import Header
from core.db import read_tx, write_tx
from core.errors import ApiError

__all__ = ["Caller", "provide_caller", "provide_read", "provide_tx"]


async def provide_tx(state: State) -> AsyncIterator[AsyncConnection]:
    """One transaction per request, committed when the handler returns without raising."""
    async with write_tx(state.engine) as conn:
        yield conn


async def provide_read(state: State) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction: on SQLite it takes no write lock, so reads never queue behind writers."""
    async with read_tx(state.engine) as conn:
        yield conn


async def require_org(conn: AsyncConnection, org_id: str) -> str:
    """The organization id, or 404 `not_found` when there is no such organization."""
    if (await conn.execute(text("SELECT 1 FROM organizations WHERE id = :o"), {"o": org_id})).first() is None:
        raise ApiError("not_found", f"No organization {org_id!r}")
    return org_id


class Caller:
    """Who is calling a /v1 route, as established by the sidecar."""

    __slots__ = ("key_id", "org_id", "project_id")

    def __init__(self, org_id: str, project_id: str, key_id: str) -> None:
        self.org_id, self.project_id, self.key_id = org_id, project_id, key_id


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    h = request.headers
    return Caller(h.get(Header.ORG, ""), h.get(Header.PROJECT, ""), h.get(Header.KEY, ""))
