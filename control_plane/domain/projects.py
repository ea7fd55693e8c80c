"""An organization's projects.

Looked up by (org, id) together, so another organization's project id gets the same 404 as a
made-up one. Changes move `config_version` because the sidecar's snapshot carries each
organization's projects (the project scope check and a key's default project).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.keys import bump_config_version
from core.audit import audit
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as

__all__ = ["ProjectCreate", "ProjectPatch", "ProjectView", "create_project", "get_project", "list_projects",
           "require_org", "update_project"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Budget = Annotated[int, msgspec.Meta(ge=0)]


async def require_org(conn: AsyncConnection, org_id: str) -> None:
    if (await conn.execute(text("SELECT 1 FROM organizations WHERE id = :o"), {"o": org_id})).first() is None:
        raise ApiError("not_found", f"No organization {org_id!r}")


class ProjectCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    monthly_budget_nanos: Budget | None = None


class ProjectPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    monthly_budget_nanos: Budget | msgspec.UnsetType | None = msgspec.UNSET
    archived: bool | None = None


class ProjectView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.project"] = "organization.project"
    organization: str
    name: str
    monthly_budget_nanos: int | None
    archived: bool
    created_at: int


_PROJECT_COLS = columns(ProjectView, organization="org_id")


def _project(r: Sequence[object]) -> ProjectView:
    return row_as(ProjectView, r, seconds=("created_at",))


async def _name_free(conn: AsyncConnection, org_id: str, name: str, except_id: str = "") -> None:
    found = (await conn.execute(text("SELECT id FROM projects WHERE org_id = :o AND name = :n AND id != :x"),
                                {"o": org_id, "n": name, "x": except_id})).first()
    if found is not None:
        raise ApiError("conflict", f"A project named {name!r} already exists in this organization",
                       param="name")


async def create_project(conn: AsyncConnection, org_id: str, data: ProjectCreate, actor: str) -> ProjectView:
    await require_org(conn, org_id)
    await _name_free(conn, org_id, data.name)
    project_id = new_id("proj")
    await conn.execute(text("INSERT INTO projects (id, org_id, name, monthly_budget_nanos, created_at)"
                            " VALUES (:id, :o, :n, :b, :now)"),
                       {"id": project_id, "o": org_id, "n": data.name, "b": data.monthly_budget_nanos,
                        "now": now_ms()})
    await audit(conn, org_id, actor, "project.created", project_id, {"name": data.name})
    await bump_config_version(conn)
    return await get_project(conn, org_id, project_id)


async def list_projects(conn: AsyncConnection, org_id: str) -> list[ProjectView]:
    await require_org(conn, org_id)
    return [_project(r) for r in await conn.execute(text(
        f"SELECT {_PROJECT_COLS} FROM projects WHERE org_id = :o ORDER BY created_at, id"), {"o": org_id})]


async def get_project(conn: AsyncConnection, org_id: str, project_id: str) -> ProjectView:
    row = (await conn.execute(text(f"SELECT {_PROJECT_COLS} FROM projects WHERE id = :p AND org_id = :o"),
                              {"p": project_id, "o": org_id})).first()
    if row is None:
        raise ApiError("not_found", f"No project {project_id!r}")
    return _project(row)


async def update_project(conn: AsyncConnection, org_id: str, project_id: str, patch: ProjectPatch,
                         actor: str) -> ProjectView:
    await get_project(conn, org_id, project_id)
    sets: dict[str, object] = {}
    if patch.name is not None:
        await _name_free(conn, org_id, patch.name, project_id)
        sets["name"] = patch.name
    if patch.monthly_budget_nanos is not msgspec.UNSET:
        sets["monthly_budget_nanos"] = patch.monthly_budget_nanos
    if patch.archived is not None:
        sets["archived"] = int(patch.archived)
    if sets:
        await conn.execute(text(f"UPDATE projects SET {', '.join(f'{k} = :{k}' for k in sets)}"
                                " WHERE id = :p AND org_id = :o"), {**sets, "p": project_id, "o": org_id})
        await audit(conn, org_id, actor, "project.updated", project_id, {"fields": sorted(sets)})
        await bump_config_version(conn)
    return await get_project(conn, org_id, project_id)
