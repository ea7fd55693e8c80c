"""Management API for routing (admin token): backends, models, price cards and aliases.

Each change commits with its audit row and config-version bump, then re-renders Envoy's dynamic
files and refreshes this node's sidecar before answering, so the caller's next request already
sees it. Model ids contain a slash, hence the `:path` parameters.
"""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.guards import admin_guard
from control_plane.api.lists import ListOf
from control_plane.domain import model_admin as models
from control_plane.domain import routing
from control_plane.domain.route_health import HealthView, route_health

__all__ = ["ModelAdminController", "RoutingController"]

ACTOR = "admin"


async def _publish(conn: AsyncConnection, state: State) -> None:
    await conn.commit()  # durable before Envoy and the sidecar are told
    await routing.publish(state.settings, state.engine, state.notifier)


class RoutingController(Controller):
    path = "/api"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @get("/backends")
    async def list_backends(self, conn: AsyncConnection) -> ListOf[routing.BackendView]:
        return ListOf(data=await routing.list_backends(conn))

    @post("/backends", status_code=201)
    async def create_backend(self, conn: AsyncConnection, state: State,
                             data: routing.BackendCreate) -> routing.BackendView:
        view = await routing.create_backend(conn, state.settings, data, ACTOR)
        await _publish(conn, state)
        return view

    @get("/backends/{backend_id:str}")
    async def get_backend(self, conn: AsyncConnection, backend_id: str) -> routing.BackendView:
        return await routing.get_backend(conn, backend_id)

    @patch("/backends/{backend_id:str}")
    async def update_backend(self, conn: AsyncConnection, state: State, backend_id: str,
                             data: routing.BackendPatch) -> routing.BackendView:
        view = await routing.update_backend(conn, state.settings, backend_id, data, ACTOR)
        await _publish(conn, state)
        return view

    @post("/backends/{backend_id:str}/disable", status_code=200)
    async def disable_backend(self, conn: AsyncConnection, state: State,
                              backend_id: str) -> routing.BackendView:
        view = await routing.disable_backend(conn, state.settings, backend_id, ACTOR)
        await _publish(conn, state)
        return view

    @get("/prices")
    async def list_prices(self, conn: AsyncConnection, model: str) -> ListOf[models.PriceView]:
        return ListOf(data=await models.list_prices(conn, model))

    @post("/prices", status_code=201)
    async def add_price(self, conn: AsyncConnection, state: State,
                        data: models.PriceCreate) -> models.PriceView:
        view = await models.add_price(conn, data, ACTOR)
        await _publish(conn, state)
        return view

    @get("/routes")
    async def list_routes(self, conn: AsyncConnection) -> ListOf[routing.RouteView]:
        return ListOf(data=await routing.list_routes(conn))

    @get("/routes/health")
    async def routes_health(self, state: State) -> HealthView:
        """Each route target's passive health: consecutive failures, ejections, ejected until."""
        return await route_health(state.settings, state.secrets.internal_token)

    @put("/routes/{alias:str}")
    async def set_route(self, conn: AsyncConnection, state: State, alias: str,
                        data: routing.RouteSet) -> routing.RouteView:
        """One model (`{"model": ...}`), or a route group: `targets` (model, weight, priority),
        `strategy`, `fallbacks`, `max_attempts`, `max_added_ms`, `context_fallback`
        (docs/routing.md). A cyclic or too-deep fallback graph is refused (400)."""
        view = await routing.set_route(conn, alias, data, ACTOR)
        await _publish(conn, state)
        return view

    @delete("/routes/{alias:str}", status_code=200)
    async def delete_route(self, conn: AsyncConnection, state: State, alias: str) -> routing.RouteView:
        view = await routing.delete_route(conn, alias, ACTOR)
        await _publish(conn, state)
        return view


class ModelAdminController(Controller):
    path = "/api/models"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @get("/")
    async def list_(self, conn: AsyncConnection) -> ListOf[models.ModelView]:
        return ListOf(data=await models.list_models(conn))

    @post("/", status_code=201)
    async def create(self, conn: AsyncConnection, state: State, data: models.ModelCreate) -> models.ModelView:
        view = await models.create_model(conn, data, ACTOR)
        await _publish(conn, state)
        return view

    @get("/{model_id:path}")
    async def retrieve(self, conn: AsyncConnection, model_id: str) -> models.ModelView:
        return await models.get_model(conn, model_id.lstrip("/"))

    @patch("/{model_id:path}")
    async def update(self, conn: AsyncConnection, state: State, model_id: str,
                     data: models.ModelPatch) -> models.ModelView:
        view = await models.update_model(conn, model_id.lstrip("/"), data, ACTOR)
        await _publish(conn, state)
        return view
