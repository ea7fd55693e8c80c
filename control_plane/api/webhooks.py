"""`/v1/webhooks/endpoints` (through the edge; the sidecar checks key scope `webhooks`).

Thin handlers over `core.events`: endpoints CRUD, secret rotation, test events, the
delivery log and replays. Lists use OpenAI's shape (`object`, `data`, `first_id`, `last_id`,
`has_more`, paginated with `limit` and `after`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import Caller, provide_caller, provide_tx
from control_plane.api.guards import edge_guard
from control_plane.api.lists import Page, page
from core.contract import Header
from core.db import read_tx
from core.events import endpoints as ep
from core.events import log

__all__ = ["WebhooksController"]

Limit = Annotated[int, Parameter(ge=1, le=100)]


async def _scope(request: Request[Any, Any, Any]) -> ep.Scope:
    """The caller's organization and, for a key limited to some projects, those projects."""
    caller: Caller = provide_caller(request)
    async with read_tx(request.app.state.engine) as conn:
        row = (await conn.execute(text("SELECT projects FROM api_keys WHERE id = :k AND org_id = :o"),
                                  {"k": caller.key_id, "o": caller.org_id})).first()
    projects = tuple(msgspec.json.decode(str(row[0]))) if row else ()
    return ep.Scope(org_id=caller.org_id, projects=projects)


def _actor(request: Request[Any, Any, Any]) -> str:
    return f"key:{request.headers.get(Header.KEY, '')}"


class WebhooksController(Controller):
    path = "/v1/webhooks/endpoints"
    guards = [edge_guard]
    dependencies = {"tenant": Provide(_scope), "conn": Provide(provide_tx)}

    @post("/", status_code=200)
    async def create(self, request: Request[Any, Any, Any], state: State, tenant: ep.Scope,
                     data: ep.EndpointCreate) -> ep.EndpointView:
        return await ep.create_endpoint(state.engine, state.settings, state.secrets.key_pepper, tenant, data,
                                        _actor(request))

    @get("/")
    async def list_(self, conn: AsyncConnection, tenant: ep.Scope, limit: Limit = 20,
                    after: str | None = None) -> Page[ep.EndpointView]:
        return page(*await ep.list_endpoints(conn, tenant, limit, after))

    @get("/{endpoint_id:str}")
    async def retrieve(self, conn: AsyncConnection, tenant: ep.Scope, endpoint_id: str) -> ep.EndpointView:
        return await ep.get_endpoint(conn, tenant, endpoint_id)

    @post("/{endpoint_id:str}", status_code=200)
    async def update(self, request: Request[Any, Any, Any], state: State, tenant: ep.Scope, endpoint_id: str,
                     data: ep.EndpointUpdate) -> ep.EndpointView:
        return await ep.update_endpoint(state.engine, state.settings, tenant, endpoint_id, data,
                                        _actor(request))

    @patch("/{endpoint_id:str}")
    async def patch_(self, request: Request[Any, Any, Any], state: State, tenant: ep.Scope, endpoint_id: str,
                     data: ep.EndpointUpdate) -> ep.EndpointView:
        return await ep.update_endpoint(state.engine, state.settings, tenant, endpoint_id, data,
                                        _actor(request))

    @delete("/{endpoint_id:str}", status_code=200)
    async def delete_(self, request: Request[Any, Any, Any], conn: AsyncConnection, tenant: ep.Scope,
                      endpoint_id: str) -> ep.EndpointDeleted:
        await ep.delete_endpoint(conn, tenant, endpoint_id, _actor(request))
        return ep.EndpointDeleted(id=endpoint_id)

    @post("/{endpoint_id:str}/rotate_secret", status_code=200)
    async def rotate(self, request: Request[Any, Any, Any], conn: AsyncConnection, state: State,
                     tenant: ep.Scope, endpoint_id: str) -> ep.EndpointView:
        return await ep.rotate_secret(conn, state.secrets.key_pepper, tenant, endpoint_id, _actor(request))

    @post("/{endpoint_id:str}/test", status_code=200)
    async def test(self, conn: AsyncConnection, tenant: ep.Scope, endpoint_id: str) -> log.DeliveryView:
        return await log.send_test(conn, tenant, endpoint_id)

    @get("/{endpoint_id:str}/deliveries")
    async def deliveries(self, conn: AsyncConnection, tenant: ep.Scope, endpoint_id: str, limit: Limit = 20,
                         after: str | None = None, event_id: str | None = None) -> Page[log.DeliveryView]:
        return page(*await log.list_deliveries(conn, tenant, endpoint_id, limit, after, event_id))

    @post("/{endpoint_id:str}/replay", status_code=200)
    async def replay(self, conn: AsyncConnection, tenant: ep.Scope, endpoint_id: str,
                     data: log.ReplayRequest) -> log.ReplayResult:
        return await log.replay(conn, tenant, endpoint_id, data)
