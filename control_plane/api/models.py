"""`GET /v1/models` and `GET /v1/models/{id}` (through the edge, key scope `models`)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.guards import edge_guard
from control_plane.api.deps import Caller, provide_caller, provide_tx
from control_plane.domain.models import ModelList, ModelObject, list_models
from control_plane.errors import ApiError


async def _key_patterns(conn: AsyncConnection, caller: Caller) -> list[str]:
    row = (await conn.execute(text("SELECT models FROM api_keys WHERE id = :k AND org_id = :o"),
                              {"k": caller.key_id, "o": caller.org_id})).first()
    return list(msgspec.json.decode(str(row[0]))) if row else []


class ModelsController(Controller):
    path = "/v1/models"
    guards = [edge_guard]
    dependencies = {"conn": Provide(provide_tx), "caller": Provide(provide_caller, sync_to_thread=False)}

    @get("/")
    async def list_(self, conn: AsyncConnection, caller: Caller) -> ModelList:
        return ModelList(data=await list_models(conn, await _key_patterns(conn, caller)))

    @get("/{model_id:path}")
    async def retrieve(self, conn: AsyncConnection, caller: Caller, model_id: str) -> ModelObject:
        name = model_id.lstrip("/")
        for model in await list_models(conn, await _key_patterns(conn, caller)):
            if model.id == name:
                return model
        raise ApiError("model_not_found", f"The model '{name}' does not exist or you do not have access to it.",
                       param="model")
