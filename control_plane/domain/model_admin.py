"""Model and price-card management (the routing API's second half; see domain/routing.py).

A model is served only while it is `active`, has a price card in effect and its backend is
enabled; the checks here keep the database from describing a model that could not be served
(an active model on a disabled backend) so that /v1/models never lists one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.catalog import BackendId, Capabilities, ModelId, Nanos, Positive
from control_plane.domain.models import ModelRow
from control_plane.domain.routing import changed, ensure_model
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as

__all__ = [
    "ModelCreate",
    "ModelPatch",
    "ModelView",
    "PriceCreate",
    "PriceInput",
    "PriceView",
    "add_price",
    "create_model",
    "get_model",
    "latest_price",
    "list_models",
    "list_prices",
    "update_model",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Status = Literal["active", "disabled"]
_PRICE_GRACE_MS = 5 * 60 * 1000


class PriceInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Integer nano-dollars per million tokens."""

    input_nanos_per_mtok: Nanos
    cached_input_nanos_per_mtok: Nanos
    output_nanos_per_mtok: Nanos
    effective_at: str | None = None
    """ISO date (midnight UTC) or date-time; empty means now. Never in the past."""


class PriceCreate(PriceInput, kw_only=True, forbid_unknown_fields=True):
    model: str


class PriceView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["price_card"] = "price_card"
    model: str
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int
    effective_at: int
    created_at: int


class ModelCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: ModelId
    display_name: Name
    backend: BackendId
    upstream_name: Name
    kind: Literal["text", "embedding"]
    context_window: Positive
    max_output_tokens: Annotated[int, msgspec.Meta(ge=0)]
    description: str = ""
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    status: Status = "active"
    price: PriceInput | None = None


class ModelPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    display_name: Name | None = None
    description: str | None = None
    backend: BackendId | None = None
    upstream_name: Name | None = None
    context_window: Positive | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None
    capabilities: Capabilities | None = None
    status: Status | None = None


class ModelView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model_config"] = "model_config"
    display_name: str
    description: str
    backend: str
    upstream_name: str
    kind: str
    context_window: int
    max_output_tokens: int
    capabilities: dict[str, Any]
    status: str
    price: PriceView | None
    """The newest price-card version (possibly not yet in effect)."""
    aliases: list[str]
    created_at: int
    updated_at: int


_COLS = columns(ModelRow)


async def _view(conn: AsyncConnection, row: Sequence[object]) -> ModelView:
    r = row_as(ModelRow, row, seconds=("created_at", "updated_at"))
    aliases = [str(a) for a in (await conn.execute(
        text("SELECT alias FROM routes WHERE model_id = :m ORDER BY alias"), {"m": r.id})).scalars()]
    return ModelView(id=r.id, display_name=r.display_name, description=r.description, backend=r.backend_id,
                     upstream_name=r.upstream_name, kind=r.kind, context_window=r.context_window,
                     max_output_tokens=r.max_output_tokens, capabilities=msgspec.json.decode(r.capabilities),
                     status=r.status, price=await latest_price(conn, r.id), aliases=aliases,
                     created_at=r.created_at, updated_at=r.updated_at)


async def list_models(conn: AsyncConnection) -> list[ModelView]:
    rows = (await conn.execute(text(f"SELECT {_COLS} FROM models ORDER BY id"))).all()
    return [await _view(conn, r) for r in rows]


async def get_model(conn: AsyncConnection, model_id: str) -> ModelView:
    row = (await conn.execute(text(f"SELECT {_COLS} FROM models WHERE id = :m"), {"m": model_id})).first()
    if row is None:
        raise ApiError("model_not_found", f"No model {model_id!r}", param="model")
    return await _view(conn, row)


async def _check_backend(conn: AsyncConnection, backend_id: str, status: str) -> None:
    row = (await conn.execute(text("SELECT enabled FROM backends WHERE id = :b"), {"b": backend_id})).first()
    if row is None:
        raise ApiError("invalid_request_error", f"backend: no backend {backend_id!r}", param="backend")
    if status == "active" and not row[0]:
        raise ApiError("conflict", f"backend: {backend_id!r} is disabled; an active model needs an enabled "
                       "backend", param="backend")


async def create_model(conn: AsyncConnection, data: ModelCreate, actor: str) -> ModelView:
    await _check_backend(conn, data.backend, data.status)
    taken = await conn.execute(text("SELECT 1 FROM models WHERE id = :m UNION ALL SELECT 1 FROM routes"
                                    " WHERE alias = :m"), {"m": data.id})
    if taken.first() is not None:
        raise ApiError("conflict", f"The name {data.id!r} is already a model or an alias", param="id")
    now = now_ms()
    await conn.execute(text(
        "INSERT INTO models (id, display_name, description, backend_id, upstream_name, kind, context_window,"
        " max_output_tokens, capabilities, status, created_at, updated_at) VALUES"
        " (:id, :dn, :d, :b, :u, :k, :cw, :mo, :caps, :st, :now, :now)"),
        {"id": data.id, "dn": data.display_name, "d": data.description, "b": data.backend,
         "u": data.upstream_name, "k": data.kind, "cw": data.context_window, "mo": data.max_output_tokens,
         "caps": msgspec.json.encode(data.capabilities).decode(), "st": data.status, "now": now})
    await changed(conn, actor, "model.created", data.id, {"backend": data.backend})
    if data.price is not None:
        await add_price(conn, PriceCreate(model=data.id, **msgspec.structs.asdict(data.price)), actor)
    return await get_model(conn, data.id)


async def update_model(conn: AsyncConnection, model_id: str, patch: ModelPatch, actor: str) -> ModelView:
    current = await get_model(conn, model_id)
    status = patch.status or current.status
    if patch.backend is not None or patch.status == "active":
        await _check_backend(conn, patch.backend or current.backend, status)
    columns = {"display_name": "display_name", "description": "description", "backend": "backend_id",
               "upstream_name": "upstream_name", "context_window": "context_window",
               "max_output_tokens": "max_output_tokens", "status": "status"}
    sets: dict[str, object] = {col: getattr(patch, f) for f, col in columns.items() if getattr(patch,
                                                                                               f) is not None}
    if patch.capabilities is not None:
        sets["capabilities"] = msgspec.json.encode(patch.capabilities).decode()
    if sets:
        assignments = ", ".join(f"{k} = :{k}" for k in sets)
        await conn.execute(text(f"UPDATE models SET {assignments}, updated_at = :now"
                                " WHERE id = :id"), {**sets, "now": now_ms(), "id": model_id})
        await changed(conn, actor, "model.updated", model_id, {"fields": sorted(sets)})
    return await get_model(conn, model_id)


def _effective_ms(value: str | None, now: int) -> int:
    if not value:
        return now
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            moment = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        raise ApiError("invalid_request_error", f"effective_at: {value!r} is not an ISO date or date-time",
                       param="effective_at") from None
    return int(moment.timestamp() * 1000)


_PRICE_COLS = columns(PriceView, "price_cards", model="price_cards.model_id")


def _price(r: Sequence[object]) -> PriceView:
    """A price card as stored (times in milliseconds) as shown (times in seconds)."""
    return row_as(PriceView, r, seconds=("effective_at", "created_at"))


async def list_prices(conn: AsyncConnection, model_id: str) -> list[PriceView]:
    await ensure_model(conn, model_id)
    rows = await conn.execute(text(f"SELECT {_PRICE_COLS} FROM price_cards WHERE model_id = :m"
                                   " ORDER BY version"),
                              {"m": model_id})
    return [_price(r) for r in rows]


async def latest_price(conn: AsyncConnection, model_id: str) -> PriceView | None:
    row = (await conn.execute(text(f"SELECT {_PRICE_COLS} FROM price_cards WHERE model_id = :m"
                                   " ORDER BY version DESC LIMIT 1"), {"m": model_id})).first()
    return None if row is None else _price(row)


async def add_price(conn: AsyncConnection, data: PriceCreate, actor: str) -> PriceView:
    """Append a price-card version. Prices never change retroactively: a charge already made names
    the card it used, so a new card takes effect now or later, and after every earlier card."""
    await ensure_model(conn, data.model)
    now = now_ms()
    effective = _effective_ms(data.effective_at, now)
    if effective < now - _PRICE_GRACE_MS:
        raise ApiError("invalid_request_error", "effective_at: must not be in the past; prices never change "
                       "retroactively", param="effective_at")
    latest = await latest_price(conn, data.model)
    if latest is not None and effective < latest.effective_at * 1000:
        raise ApiError("invalid_request_error", f"effective_at: must not precede version {latest.version}'s "
                       "effective date", param="effective_at")
    version = 1 if latest is None else latest.version + 1
    price_id = new_id("price")
    await conn.execute(text(
        "INSERT INTO price_cards (id, model_id, version, input_nanos_per_mtok, cached_input_nanos_per_mtok,"
        " output_nanos_per_mtok, effective_at, created_at) VALUES (:id, :m, :v, :i, :c, :o, :e, :now)"),
        {"id": price_id, "m": data.model, "v": version, "i": data.input_nanos_per_mtok,
         "c": data.cached_input_nanos_per_mtok, "o": data.output_nanos_per_mtok, "e": effective, "now": now})
    await changed(conn, actor, "price.created", data.model, {"version": version, "price_id": price_id})
    row = (await conn.execute(text(f"SELECT {_PRICE_COLS} FROM price_cards WHERE id = :id"),
                              {"id": price_id})).one()
    return _price(row)
