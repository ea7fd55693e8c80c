"""Customer REST API: projects (with budgets) and their API keys, in OpenAI's organization admin
shapes (`/v1/organization/projects`, `/projects/{id}/api_keys`). Thin handlers over
control_plane/domain/projects.py and keys.py.

A project's keys are the keys whose scope names it; a key is created there with that project in its
scope (and may name more of the caller's projects). Key and project changes reach this node's
sidecars at once, as from the operator's API.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, post
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.lists import Page
from control_plane.api.org_deps import ORG_DEPENDENCIES, After, Deleted, Limit, allowed, paginate
from control_plane.domain import keys, projects
from control_plane.domain.projects import Budget
from control_plane.identity.principal import Principal
from core.errors import ApiError

__all__ = ["ProjectKeysController", "ProjectsController"]


class BudgetUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    monthly_budget_nanos: Budget | None
    """Nano-dollars a month for the project's requests; null: no project budget."""


async def _project(conn: AsyncConnection, who: Principal, project_id: str) -> projects.ProjectView:
    if not who.sees_project(project_id):  # a project outside the member's narrowing looks missing
        raise ApiError("not_found", f"No project {project_id!r}")
    return await projects.get_project(conn, who.org_id, project_id)


async def _refresh(conn: AsyncConnection, state: State, key_ids: list[str] | None = None) -> None:
    await conn.commit()  # durable before the sidecars re-read it
    if key_ids:
        await state.notifier.invalidate(key_ids=key_ids)
    else:
        await state.notifier.invalidate(config=True)


class ProjectsController(Controller):
    path = "/v1/organization/projects"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_projects(self, conn: AsyncConnection, who: Principal, limit: Limit = 20, after: After = None,
                            include_archived: bool = False) -> Page[projects.ProjectView]:
        allowed(who, "projects.read")
        found = [p for p in await projects.list_projects(conn, who.org_id)
                 if who.sees_project(p.id) and (include_archived or not p.archived)]
        return paginate(sorted(found, key=lambda p: p.id), limit, after)

    @post("/", status_code=201)
    async def create_project(self, conn: AsyncConnection, state: State, who: Principal,
                             data: projects.ProjectCreate) -> projects.ProjectView:
        view = await projects.create_project(conn, allowed(who, "projects.write").org_id, data, who.actor)
        await _refresh(conn, state)
        return view

    @get("/{project_id:str}")
    async def retrieve_project(self, conn: AsyncConnection, who: Principal, project_id: str) -> projects.ProjectView:
        return await _project(conn, allowed(who, "projects.read"), project_id)

    @post("/{project_id:str}", status_code=200)
    async def update_project(self, conn: AsyncConnection, state: State, who: Principal, project_id: str,
                             data: projects.ProjectPatch) -> projects.ProjectView:
        await _project(conn, allowed(who, "projects.write"), project_id)
        view = await projects.update_project(conn, who.org_id, project_id, data, who.actor)
        await _refresh(conn, state)
        return view

    @post("/{project_id:str}/archive", status_code=200)
    async def archive_project(self, conn: AsyncConnection, state: State, who: Principal,
                              project_id: str) -> projects.ProjectView:
        await _project(conn, allowed(who, "projects.write"), project_id)
        view = await projects.update_project(conn, who.org_id, project_id, projects.ProjectPatch(archived=True),
                                             who.actor)
        await _refresh(conn, state)
        return view

    @post("/{project_id:str}/budget", status_code=200)
    async def set_budget(self, conn: AsyncConnection, state: State, who: Principal, project_id: str,
                         data: BudgetUpdate) -> projects.ProjectView:
        """Billing may set budgets without the right to change anything else about a project."""
        await _project(conn, allowed(who, "projects.budget"), project_id)
        view = await projects.update_project(
            conn, who.org_id, project_id, projects.ProjectPatch(monthly_budget_nanos=data.monthly_budget_nanos),
            who.actor)
        await _refresh(conn, state)
        return view


def _check_key_projects(who: Principal, project_id: str, named: list[str]) -> None:
    if not named:
        raise ApiError("invalid_request_error", "projects: a project's key names at least one project",
                       param="projects")
    for other in named:
        if not who.sees_project(other):
            raise ApiError("invalid_request_error", f"projects: no project {other!r}", param="projects")


async def _key(conn: AsyncConnection, who: Principal, project_id: str, key_id: str,
               write: bool = False) -> keys.KeyView:
    await _project(conn, who, project_id)
    view = await keys.get_key(conn, who.org_id, key_id)
    if project_id not in view.projects:
        raise ApiError("not_found", f"No API key {key_id!r}")
    if write and not all(who.sees_project(p) for p in view.projects):
        # A key that also acts for projects outside the member's narrowing is not theirs to change.
        raise ApiError("permission_denied", f"API key {key_id!r} also acts for projects you are not a member of.")
    return view


class ProjectKeysController(Controller):
    path = "/v1/organization/projects/{project_id:str}/api_keys"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_keys(self, conn: AsyncConnection, who: Principal, project_id: str, limit: Limit = 20,
                        after: After = None) -> Page[keys.KeyView]:
        await _project(conn, allowed(who, "keys.read"), project_id)
        found = [k for k in await keys.list_keys(conn, who.org_id) if project_id in k.projects]
        return paginate(sorted(found, key=lambda k: k.id), limit, after)

    @post("/", status_code=201)
    async def create_key(self, conn: AsyncConnection, state: State, who: Principal, project_id: str,
                         data: keys.KeyScopes) -> keys.CreatedKey:
        await _project(conn, allowed(who, "keys.write"), project_id)
        scopes = data if project_id in data.projects else msgspec.structs.replace(
            data, projects=[project_id, *data.projects])
        _check_key_projects(who, project_id, scopes.projects)
        return await keys.create_key(conn, who.org_id, scopes, state.secrets.key_pepper, actor=who.actor)

    @get("/{key_id:str}")
    async def retrieve_key(self, conn: AsyncConnection, who: Principal, project_id: str,
                           key_id: str) -> keys.KeyView:
        return await _key(conn, allowed(who, "keys.read"), project_id, key_id)

    @post("/{key_id:str}", status_code=200)
    async def update_key(self, conn: AsyncConnection, state: State, who: Principal, project_id: str, key_id: str,
                         data: keys.KeyPatch) -> keys.KeyView:
        await _key(conn, allowed(who, "keys.write"), project_id, key_id, write=True)
        if data.projects is not None:
            _check_key_projects(who, project_id, data.projects)
        view = await keys.update_key(conn, who.org_id, key_id, data, actor=who.actor)
        await _refresh(conn, state, [key_id])
        return view

    @delete("/{key_id:str}", status_code=200)
    async def delete_key(self, conn: AsyncConnection, state: State, who: Principal, project_id: str,
                         key_id: str) -> Deleted:
        """Revokes the key (permanently); its usage records stay."""
        await _key(conn, allowed(who, "keys.write"), project_id, key_id, write=True)
        await keys.revoke_key(conn, who.org_id, key_id, actor=who.actor)
        await _refresh(conn, state, [key_id])
        return Deleted(id=key_id, object="organization.project.api_key.deleted")
