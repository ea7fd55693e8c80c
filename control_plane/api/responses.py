"""Stored responses through the edge (key scope `responses`): retrieve (also as a resumable stream
of a background response), delete, cancel, list input items. Creating one is the adapter's job
(proxy_plugins/adapter/responses.py). Another organization's id, and for a key limited to some
projects another project's, is answered exactly like a missing one (domain/tenant.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Response, Stream
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_caller, provide_tx
from control_plane.api.guards import edge_guard
from core.db import read_tx
from core.errors import ApiError
from core.responses import jobs as jobs
from core.responses import store as store
from core.tenant import Tenant, key_tenant

__all__ = ["ResponsesController"]

_JSON = "application/json"
# content-type here too: Litestar lets the handler's default (JSON) override a Stream's media_type.
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no", "content-type": "text/event-stream"}


def _missing(response_id: str) -> ApiError:
    return ApiError("not_found", f"Response with id '{response_id}' not found.", "response_id")


class InputItemList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


async def provide_tenant(request: Request[Any, Any, Any]) -> Tenant:
    caller = provide_caller(request)
    async with read_tx(request.app.state.engine) as conn:
        return await key_tenant(conn, caller.org_id, caller.key_id)


class ResponsesController(Controller):
    path = "/v1/responses"
    guards = [edge_guard]
    dependencies = {"tenant": Provide(provide_tenant)}

    @get("/{response_id:str}")
    async def retrieve(
        self,
        request: Request[Any, Any, Any],
        tenant: Tenant,
        response_id: str,
        stream: bool = False,
        starting_after: Annotated[int | None, Parameter(ge=-1)] = None,
        include: Annotated[list[str] | None, Parameter(query="include[]")] = None,
    ) -> Any:
        engine = request.app.state.engine
        async with read_tx(engine) as conn:
            stored = await store.get(conn, tenant, response_id)
        if stored is None:
            raise _missing(response_id)
        if not stream:
            return Response(content=stored.body.encode(), media_type=_JSON)
        if not stored.background:
            raise ApiError(
                "invalid_request_error",
                "Only background responses can be streamed after creation; create it with background: true.",
                "stream",
            )
        after = -1 if starting_after is None else starting_after

        async def frames() -> AsyncIterator[bytes]:
            async for frame in jobs.tail(engine, response_id, after):
                yield frame

        return Stream(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)

    @delete("/{response_id:str}", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def remove(self, conn: AsyncConnection, tenant: Tenant, response_id: str) -> Deleted:
        if not await store.delete(conn, tenant, response_id):
            raise _missing(response_id)
        return Deleted(id=response_id)

    @post("/{response_id:str}/cancel", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def cancel(self, conn: AsyncConnection, tenant: Tenant, response_id: str) -> Response[bytes]:
        stored = await store.cancel(conn, tenant, response_id)
        if stored is None:
            raise _missing(response_id)
        return Response(content=stored.body.encode(), media_type=_JSON)

    @get("/{response_id:str}/input_items", dependencies={"conn": Provide(provide_tx)})
    async def input_items(
        self,
        conn: AsyncConnection,
        tenant: Tenant,
        response_id: str,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        include: Annotated[list[str] | None, Parameter(query="include[]")] = None,
    ) -> InputItemList:
        page = await store.input_items(conn, tenant, response_id, after, limit, order)
        if page is None:
            raise _missing(response_id)
        data, has_more = page
        return InputItemList(
            data=data,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=has_more,
        )
