"""Stored responses: what the platform served for `/v1/responses`.

Every query is scoped by the caller's `Tenant` (domain/tenant.py): its organization and, for a key
limited to some projects, those projects. A response of another organization, or of a project the
key may not see, behaves exactly like a missing one. Items are stored as the Responses API shapes them (see
proxy_plugins/adapter/translate/request.py); `conversation` replays a `previous_response_id` chain
as input items for any backend. Background jobs and their events: response_jobs.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as, rows_as
from core.tenant import Tenant

__all__ = [
    "TERMINAL",
    "NewResponse",
    "StoredResponse",
    "cancel",
    "conversation",
    "delete",
    "finish",
    "get",
    "get_internal",
    "input_items",
    "insert",
    "mark_running",
]

TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
_MAX_CHAIN = 1000


class NewResponse(msgspec.Struct, kw_only=True):
    id: str
    org_id: str
    project_id: str
    key_id: str
    request_id: str
    model_id: str
    backend_id: str
    requested_model: str
    status: str
    background: bool
    previous_response_id: str | None
    request: bytes
    body: bytes
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


class StoredResponse(msgspec.Struct, kw_only=True):
    id: str
    org_id: str
    project_id: str
    key_id: str
    request_id: str
    model_id: str
    backend_id: str
    requested_model: str
    status: str
    background: bool
    previous_response_id: str | None
    request: str
    body: str


_COLUMNS = columns(StoredResponse)


def _row(r: Sequence[object]) -> StoredResponse:
    return row_as(StoredResponse, r)


def _item_id(item: dict[str, Any]) -> str:
    if isinstance(item.get("id"), str):
        return str(item["id"])
    return new_id("msg" if item.get("type") == "message" else "fc")


async def insert(
    conn: AsyncConnection, rec: NewResponse, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> None:
    now = now_ms()
    params = msgspec.structs.asdict(rec)
    params.update(
        request=rec.request.decode(), body=rec.body.decode(), background=int(rec.background), now=now
    )
    await conn.execute(
        text(
            "INSERT INTO responses (id, org_id, project_id, key_id, request_id, model_id, backend_id,"
            " requested_model, status, background, previous_response_id, request, body, input_tokens,"
            " cached_tokens, output_tokens, created_at, updated_at) VALUES (:id, :org_id, :project_id,"
            " :key_id, :request_id, :model_id, :backend_id, :requested_model, :status, :background,"
            " :previous_response_id,"
            " :request, :body, :input_tokens, :cached_tokens, :output_tokens, :now, :now)"
        ),
        params,
    )
    await _put_items(conn, rec.id, "input", inputs)
    await _put_items(conn, rec.id, "output", outputs)


async def _put_items(conn: AsyncConnection, response_id: str, kind: str, items: list[dict[str, Any]]) -> None:
    if not items:
        return
    await conn.execute(
        text(
            "INSERT INTO response_items (response_id, kind, position, item_id, item)"
            " VALUES (:r, :k, :p, :i, :j)"
        ),
        [
            {
                "r": response_id,
                "k": kind,
                "p": i,
                "i": _item_id(item),
                "j": msgspec.json.encode(item).decode(),
            }
            for i, item in enumerate(items)
        ],
    )


async def get(conn: AsyncConnection, tenant: Tenant, response_id: str) -> StoredResponse | None:
    cond, params = tenant.where()
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM responses WHERE id = :id AND {cond}"), {**params, "id": response_id}
        )
    ).first()
    return _row(row) if row else None


async def get_internal(conn: AsyncConnection, response_id: str) -> StoredResponse | None:
    """For the worker only: no tenant scope (the id comes from its own job table)."""
    row = (
        await conn.execute(text(f"SELECT {_COLUMNS} FROM responses WHERE id = :id"), {"id": response_id})
    ).first()
    return _row(row) if row else None


async def mark_running(conn: AsyncConnection, response_id: str, body: bytes) -> bool:
    """queued -> in_progress (also a re-claimed in_progress); False when it was cancelled or deleted."""
    result = await conn.execute(
        text(
            "UPDATE responses SET status = 'in_progress', body = :body, updated_at = :now"
            " WHERE id = :id AND status IN ('queued', 'in_progress')"
        ),
        {"body": body.decode(), "now": now_ms(), "id": response_id},
    )
    return bool(result.rowcount)


async def conversation(conn: AsyncConnection, tenant: Tenant, response_id: str) -> list[dict[str, Any]]:
    """Input then output items of `response_id` and of every response before it, oldest first.
    Raises `not_found` (param `previous_response_id`) when the tenant may not see the id. Every
    ancestor is checked too: one the tenant may not see ends the chain like a deleted one, so no
    other project's text ever reaches the model through a chain."""
    cond, params = tenant.where()
    chain: list[str] = []
    current: str | None = response_id
    while current is not None and len(chain) < _MAX_CHAIN:
        row = (
            await conn.execute(
                text(f"SELECT previous_response_id FROM responses WHERE id = :id AND {cond}"),
                {**params, "id": current},
            )
        ).first()
        if row is None:
            if current == response_id:
                raise ApiError(
                    "not_found",
                    f"Previous response with id '{response_id}' not found.",
                    "previous_response_id",
                )
            break  # an ancestor was deleted (or is out of scope): the conversation starts after it
        chain.append(current)
        current = row[0]
    items: list[dict[str, Any]] = []
    for rid in reversed(chain):
        rows = await conn.execute(
            text(
                "SELECT item FROM response_items WHERE response_id = :r"
                " ORDER BY CASE kind WHEN 'input' THEN 0 ELSE 1 END, position"
            ),
            {"r": rid},
        )
        items += [msgspec.json.decode(r[0]) for r in rows]
    return items


async def finish(
    conn: AsyncConnection,
    response_id: str,
    body: bytes,
    status: str,
    outputs: list[dict[str, Any]],
    usage: tuple[int, int, int],
    from_status: tuple[str, ...] = ("in_progress",),
) -> bool:
    """Record the final Response, unless it left `from_status` meanwhile (e.g. was cancelled)."""
    marks = ", ".join(f":s{i}" for i in range(len(from_status)))
    result = await conn.execute(
        text(
            "UPDATE responses SET status = :status, body = :body, input_tokens = :i, cached_tokens = :c,"
            f" output_tokens = :o, updated_at = :now WHERE id = :id AND status IN ({marks})"
        ),
        {
            "status": status,
            "body": body.decode(),
            "i": usage[0],
            "c": usage[1],
            "o": usage[2],
            "now": now_ms(),
            "id": response_id,
            **{f"s{i}": s for i, s in enumerate(from_status)},
        },
    )
    if not result.rowcount:
        return False
    await conn.execute(
        text("DELETE FROM response_items WHERE response_id = :r AND kind = 'output'"), {"r": response_id}
    )
    await _put_items(conn, response_id, "output", outputs)
    return True


async def delete(conn: AsyncConnection, tenant: Tenant, response_id: str) -> bool:
    cond, params = tenant.where()
    result = await conn.execute(
        text(f"DELETE FROM responses WHERE id = :id AND {cond}"), {**params, "id": response_id}
    )
    return bool(result.rowcount)


async def input_items(
    conn: AsyncConnection, tenant: Tenant, response_id: str, after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool] | None:
    if await get(conn, tenant, response_id) is None:
        return None
    rows = rows_as(_Item, await conn.execute(
        text(f"SELECT {columns(_Item)} FROM response_items WHERE response_id = :r AND kind = 'input'"
             " ORDER BY position"),
        {"r": response_id},
    ))
    if order == "desc":
        rows.reverse()
    if after is not None:
        ids = [r.item_id for r in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    page = rows[:limit]
    return [{**msgspec.json.decode(r.item), "id": r.item_id} for r in page], len(rows) > limit


class _Item(msgspec.Struct, frozen=True):
    position: int
    item_id: str
    item: str


async def cancel(conn: AsyncConnection, tenant: Tenant, response_id: str) -> StoredResponse | None:
    """Mark a queued or running background response cancelled (idempotent); the worker running it
    notices at its next event flush, aborts the upstream call and writes the final snapshot."""
    stored = await get(conn, tenant, response_id)
    if stored is None:
        return None
    if not stored.background:
        raise ApiError("invalid_request_error", "Only background responses can be cancelled.", "response_id")
    if stored.status in ("queued", "in_progress"):
        body = msgspec.json.decode(stored.body)
        body["status"] = "cancelled"
        stored.body = msgspec.json.encode(body).decode()
        await conn.execute(
            text(
                "UPDATE responses SET status = 'cancelled', body = :body, updated_at = :now"
                " WHERE id = :id AND status IN ('queued', 'in_progress')"
            ),
            {"body": stored.body, "now": now_ms(), "id": response_id},
        )
        stored.status = "cancelled"
    return stored
