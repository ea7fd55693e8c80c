"""Webhook endpoints: create, list, retrieve, update, delete and rotate the signing secret.

Every lookup is scoped by organization (and, for a key limited to some projects, by those
projects), so another tenant's endpoint id behaves exactly like a missing one. The secret is
returned on creation and rotation only. URL checks that need DNS run before the write transaction
opens, so a slow resolver never holds the database write lock.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.audit import audit
from core.db import now_ms, write_tx
from core.errors import ApiError
from core.events.backoff import ROTATION_OVERLAP_S
from core.events.catalog import SUBSCRIBABLE
from core.events.signing import new_secret, seal
from core.events.ssrf import UnsafeUrl, check_url, resolve
from core.ids import new_id
from core.settings import Settings

__all__ = [
    "EndpointCreate",
    "EndpointDeleted",
    "EndpointUpdate",
    "EndpointView",
    "Scope",
    "create_endpoint",
    "delete_endpoint",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "update_endpoint",
    "vet_url",
]

MAX_ENDPOINTS = 50
MAX_OLD_SECRETS = 10
"""Replaced secrets that may sign at once (a header of 11 signatures stays well under 1 KiB)."""
Description = Annotated[str, msgspec.Meta(max_length=500)]
EventTypes = Annotated[list[str], msgspec.Meta(min_length=1, max_length=32)]


class EndpointCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    event_types: EventTypes = msgspec.field(default_factory=lambda: ["*"])
    description: Description = ""
    project: str | None = None


class EndpointUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    project: str | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | None = None


class EndpointView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    description: str
    event_types: list[str]
    project: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    disabled_at: int | None
    previous_secret_expires_at: int | None
    """While secrets replaced by rotations still sign (each for 24 h after its own rotation),
    deliveries carry one more signature per such secret; this is when the last of them stops."""
    created_at: int
    updated_at: int
    secret: str | msgspec.UnsetType = msgspec.UNSET
    """Only in the responses to create and rotate."""


class EndpointDeleted(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: Literal[True] = True


class Scope(msgspec.Struct, frozen=True):
    org_id: str
    projects: tuple[str, ...] = ()
    """Empty: the calling key may act for every project of the organization."""


async def vet_url(url: str, settings: Settings) -> None:
    try:
        await resolve(check_url(url, settings), settings.webhooks_allow_private)
    except UnsafeUrl as exc:
        raise ApiError("invalid_request_error", str(exc), param="url") from None


def _check_types(types: list[str]) -> list[str]:
    for name in types:
        if name != "*" and name not in SUBSCRIBABLE:
            raise ApiError("invalid_request_error", f"event_types: unknown event type {name!r}",
                           param="event_types")
    return sorted(set(types))


async def _check_project(conn: AsyncConnection, scope: Scope, project: str | None) -> None:
    if project is None:
        if scope.projects:
            raise ApiError("invalid_request_error", "This API key is limited to some projects, so the "
                           "endpoint needs a 'project' filter.", param="project")
        return
    found = (await conn.execute(text("SELECT 1 FROM projects WHERE id = :p AND org_id = :o"),
                                {"p": project, "o": scope.org_id})).first()
    if found is None or (scope.projects and project not in scope.projects):
        raise ApiError("invalid_request_error", f"project: no project {project!r}", param="project")


_COLUMNS = ("id, url, description, event_types, project_id, enabled, disabled_reason, disabled_at, "
            "(SELECT MAX(s.expires_at) FROM webhook_endpoint_secrets s "
            "WHERE s.endpoint_id = webhook_endpoints.id AND s.expires_at > :now), created_at, updated_at")


def _seconds(value: object) -> int | None:
    return None if value is None else int(str(value)) // 1000


def _view(row: tuple[object, ...], secret: str | None = None) -> EndpointView:
    (id_, url, desc, types, project, enabled, reason, disabled_at, prev_until, created, updated) = row
    return EndpointView(
        id=str(id_), url=str(url), description=str(desc), event_types=msgspec.json.decode(str(types)),
        project=None if project is None else str(project), status="enabled" if enabled else "disabled",
        disabled_reason=None if reason is None else str(reason), disabled_at=_seconds(disabled_at),
        previous_secret_expires_at=_seconds(prev_until), created_at=int(str(created)) // 1000,
        updated_at=int(str(updated)) // 1000, secret=msgspec.UNSET if secret is None else secret)


def _scoped(scope: Scope) -> tuple[str, dict[str, object]]:
    """SQL condition and parameters restricting endpoints to what the caller may see."""
    params: dict[str, object] = {"o": scope.org_id}
    cond = "org_id = :o AND deleted_at IS NULL"
    if scope.projects:
        names = [f":sp{i}" for i in range(len(scope.projects))]
        params.update({f"sp{i}": p for i, p in enumerate(scope.projects)})
        cond += f" AND project_id IN ({', '.join(names)})"
    return cond, params


async def get_endpoint(conn: AsyncConnection, scope: Scope, endpoint_id: str,
                       secret: str | None = None) -> EndpointView:
    cond, params = _scoped(scope)
    row = (await conn.execute(text(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = :id AND {cond}"),
                              {**params, "id": endpoint_id, "now": now_ms()})).first()
    if row is None:
        raise ApiError("not_found", f"No webhook endpoint {endpoint_id!r}", param="endpoint_id")
    return _view(tuple(row), secret)


async def list_endpoints(conn: AsyncConnection, scope: Scope, limit: int, after: str | None
                         ) -> tuple[list[EndpointView], bool]:
    cond, params = _scoped(scope)
    if after:
        cond += " AND id < :after"
        params["after"] = after
    rows = (await conn.execute(text(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE {cond} "
                                    "ORDER BY id DESC LIMIT :n"),
                               {**params, "n": limit + 1, "now": now_ms()})).all()
    return [_view(tuple(r)) for r in rows[:limit]], len(rows) > limit


async def create_endpoint(engine: AsyncEngine, settings: Settings, pepper: str, scope: Scope,
                          body: EndpointCreate, actor: str) -> EndpointView:
    types = _check_types(body.event_types)
    await vet_url(body.url, settings)
    async with write_tx(engine) as conn:
        await _check_project(conn, scope, body.project)
        count = (await conn.execute(
            text("SELECT COUNT(*) FROM webhook_endpoints WHERE org_id = :o AND deleted_at IS NULL"),
            {"o": scope.org_id})).scalar_one()
        if int(count) >= MAX_ENDPOINTS:
            raise ApiError("invalid_request_error", f"An organization can have at most {MAX_ENDPOINTS} "
                           "webhook endpoints; delete one first.")
        endpoint_id, secret, now = new_id("whep"), new_secret(), now_ms()
        await conn.execute(
            text("INSERT INTO webhook_endpoints (id, org_id, url, description, event_types, project_id, "
                 "secret_enc, created_at, updated_at) VALUES (:id, :o, :url, :d, :t, :p, :s, :now, :now)"),
            {"id": endpoint_id, "o": scope.org_id, "url": body.url, "d": body.description,
             "t": msgspec.json.encode(types).decode(), "p": body.project, "s": seal(secret, pepper),
             "now": now})
        await audit(conn, scope.org_id, actor, "webhook_endpoint.created", endpoint_id, {"url": body.url})
        return await get_endpoint(conn, scope, endpoint_id, secret)


async def update_endpoint(engine: AsyncEngine, settings: Settings, scope: Scope, endpoint_id: str,
                          patch: EndpointUpdate, actor: str) -> EndpointView:
    sets: dict[str, object] = {}
    if patch.url is not None:
        await vet_url(patch.url, settings)
        sets["url"] = patch.url
    if patch.event_types is not None:
        sets["event_types"] = msgspec.json.encode(_check_types(patch.event_types)).decode()
    if patch.description is not None:
        sets["description"] = patch.description
    async with write_tx(engine) as conn:
        await get_endpoint(conn, scope, endpoint_id)
        if not isinstance(patch.project, msgspec.UnsetType):
            await _check_project(conn, scope, patch.project)
            sets["project_id"] = patch.project
        if patch.enabled is True:  # re-enabling clears the failure history that disabled it
            sets.update(enabled=1, disabled_reason=None, disabled_at=None, failing_since=None)
        elif patch.enabled is False:
            sets.update(enabled=0, disabled_reason="disabled by the owner", disabled_at=now_ms())
        if sets:
            assignments = ", ".join(f"{k} = :{k}" for k in sets)
            await conn.execute(text(f"UPDATE webhook_endpoints SET {assignments}, updated_at = :now "
                                    "WHERE id = :id AND org_id = :o"),
                               {**sets, "now": now_ms(), "id": endpoint_id, "o": scope.org_id})
            await audit(conn, scope.org_id, actor, "webhook_endpoint.updated", endpoint_id,
                        {"fields": sorted(sets)})
        return await get_endpoint(conn, scope, endpoint_id)


async def delete_endpoint(conn: AsyncConnection, scope: Scope, endpoint_id: str, actor: str) -> None:
    """Soft delete: the delivery log stays, pending deliveries stop, the id answers 404 from now on."""
    await get_endpoint(conn, scope, endpoint_id)
    now = now_ms()
    await conn.execute(text("UPDATE webhook_endpoints SET deleted_at = :now, enabled = 0, updated_at = :now "
                            "WHERE id = :id AND org_id = :o"),
                       {"now": now, "id": endpoint_id, "o": scope.org_id})
    await conn.execute(text("UPDATE webhook_deliveries SET status = 'failed', "
                            "last_error = 'endpoint deleted', "
                            "updated_at = :now WHERE endpoint_id = :id AND status = 'pending'"),
                       {"now": now, "id": endpoint_id})
    await audit(conn, scope.org_id, actor, "webhook_endpoint.deleted", endpoint_id, {})


async def rotate_secret(conn: AsyncConnection, pepper: str, scope: Scope, endpoint_id: str,
                        actor: str, *, now: int | None = None) -> EndpointView:
    """New secret now; the replaced one keeps signing alongside it for ROTATION_OVERLAP_S, and so
    does every earlier one until its own expiry (Standard Webhooks allows several signatures)."""
    await get_endpoint(conn, scope, endpoint_id)
    secret, now = new_secret(), now_ms() if now is None else now
    await conn.execute(
        text("DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = :e AND expires_at <= :now"),
        {"e": endpoint_id, "now": now})
    live = (await conn.execute(text("SELECT COUNT(*), MIN(expires_at) FROM webhook_endpoint_secrets "
                                    "WHERE endpoint_id = :e"), {"e": endpoint_id})).one()
    if int(live[0]) >= MAX_OLD_SECRETS:
        # Refused rather than ending the oldest early: receivers may still verify with it.
        raise ApiError("conflict", f"{MAX_OLD_SECRETS} replaced secrets of this endpoint still sign "
                       f"deliveries; the oldest stops at {int(live[1]) // 1000} (Unix seconds). "
                       "Rotate again after that.")
    await conn.execute(
        text("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret_enc, expires_at, created_at) "
             "SELECT id, secret_enc, :until, :now FROM webhook_endpoints WHERE id = :e AND org_id = :o"),
        {"until": now + ROTATION_OVERLAP_S * 1000, "now": now, "e": endpoint_id, "o": scope.org_id})
    await conn.execute(
        text("UPDATE webhook_endpoints SET secret_enc = :s, updated_at = :now WHERE id = :id AND org_id = :o"),
        {"s": seal(secret, pepper), "now": now, "id": endpoint_id, "o": scope.org_id})
    await audit(conn, scope.org_id, actor, "webhook_endpoint.secret_rotated", endpoint_id, {})
    return await get_endpoint(conn, scope, endpoint_id, secret)
