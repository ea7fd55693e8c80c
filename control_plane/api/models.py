"""`GET /v1/models` and `GET /v1/models/{id}` (through the edge, key scope `models`)."""

from __future__ import annotations

import fnmatch

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import Caller, provide_caller, provide_read
from control_plane.api.guards import edge_guard
from control_plane.domain.models import ModelList, ModelObject, latency_bands, list_models
from core.db import now_ms
from core.errors import ApiError

LATENCY_REFRESH_MS = 30_000


class ModelCache:
    """The priced model list, reloaded when `config_version` moves (any routing or price change, on
    any control-plane replica), and latency bands refreshed every 30 seconds."""

    def __init__(self) -> None:
        self.version = -1
        self.models: list[ModelObject] = []
        self.latency_at = 0

    async def get(self, conn: AsyncConnection) -> list[ModelObject]:
        version = int((await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).scalar_one())
        now = now_ms()
        if version != self.version:
            self.models, self.version, self.latency_at = await list_models(conn), version, 0
        if now - self.latency_at > LATENCY_REFRESH_MS:
            bands = await latency_bands(conn, now)
            for m in self.models:
                m.latency = bands.get(m.alias_of or m.id)
            self.latency_at = now
        return self.models


def _allowed(models: list[ModelObject], patterns: list[str]) -> list[ModelObject]:
    return [m for m in models if any(fnmatch.fnmatchcase(n, p) for p in patterns for n in (m.id, m.alias_of or m.id))]


async def _key_patterns(conn: AsyncConnection, caller: Caller) -> list[str]:
    row = (await conn.execute(text("SELECT models FROM api_keys WHERE id = :k AND org_id = :o"),
                              {"k": caller.key_id, "o": caller.org_id})).first()
    return list(msgspec.json.decode(str(row[0]))) if row else []


class ModelsController(Controller):
    path = "/v1/models"
    guards = [edge_guard]
    dependencies = {"conn": Provide(provide_read), "caller": Provide(provide_caller, sync_to_thread=False)}

    @get("/")
    async def list_(self, conn: AsyncConnection, caller: Caller, state: State) -> ModelList:
        return ModelList(data=_allowed(await state.model_cache.get(conn), await _key_patterns(conn, caller)))

    @get("/{model_id:path}")
    async def retrieve(self, conn: AsyncConnection, caller: Caller, state: State, model_id: str) -> ModelObject:
        name = model_id.lstrip("/")
        for model in _allowed(await state.model_cache.get(conn), await _key_patterns(conn, caller)):
            if model.id == name:
                return model
        raise ApiError("model_not_found", f"The model '{name}' does not exist or you do not have access to it.",
                       param="model")
