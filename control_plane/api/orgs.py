"""Management API for organizations, projects, users and memberships (admin token).

Everything under `/api/orgs/{org_id}` is looked up together with the organization, so another
organization's project or member id answers exactly like a made-up one (404 `not_found`).
Project changes refresh this node's sidecar at once (its snapshot carries the project scopes).
"""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.guards import admin_guard
from control_plane.api.lists import ListOf
from control_plane.domain import admin_keys, orgs, projects

__all__ = ["OrgsController", "UsersController"]

ACTOR = "admin"


async def _refresh_sidecar(conn: AsyncConnection, state: State) -> None:
    await conn.commit()  # durable before the sidecar re-reads it
    await state.notifier.invalidate(config=True)


class OrgsController(Controller):
    path = "/api/orgs"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @get("/")
    async def list_orgs(self, conn: AsyncConnection) -> ListOf[orgs.OrgView]:
        return ListOf(data=await orgs.list_orgs(conn))

    @post("/", status_code=201)
    async def create_org(self, conn: AsyncConnection, state: State, data: orgs.OrgCreate) -> orgs.OrgView:
        view = await orgs.create_org(conn, data, ACTOR)
        await _refresh_sidecar(conn, state)
        return view

    @get("/{org_id:str}")
    async def get_org(self, conn: AsyncConnection, org_id: str) -> orgs.OrgView:
        return await orgs.get_org(conn, org_id)

    @patch("/{org_id:str}")
    async def update_org(self, conn: AsyncConnection, org_id: str, data: orgs.OrgPatch) -> orgs.OrgView:
        return await orgs.update_org(conn, org_id, data, ACTOR)

    @get("/{org_id:str}/projects")
    async def list_projects(self, conn: AsyncConnection, org_id: str) -> ListOf[projects.ProjectView]:
        return ListOf(data=await projects.list_projects(conn, org_id))

    @post("/{org_id:str}/projects", status_code=201)
    async def create_project(self, conn: AsyncConnection, state: State, org_id: str,
                             data: projects.ProjectCreate) -> projects.ProjectView:
        view = await projects.create_project(conn, org_id, data, ACTOR)
        await _refresh_sidecar(conn, state)
        return view

    @get("/{org_id:str}/projects/{project_id:str}")
    async def get_project(self, conn: AsyncConnection, org_id: str, project_id: str) -> projects.ProjectView:
        return await projects.get_project(conn, org_id, project_id)

    @patch("/{org_id:str}/projects/{project_id:str}")
    async def update_project(self, conn: AsyncConnection, state: State, org_id: str, project_id: str,
                             data: projects.ProjectPatch) -> projects.ProjectView:
        view = await projects.update_project(conn, org_id, project_id, data, ACTOR)
        await _refresh_sidecar(conn, state)
        return view

    @post("/{org_id:str}/admin_api_keys", status_code=201)
    async def create_admin_key(self, conn: AsyncConnection, state: State, org_id: str,
                               data: admin_keys.AdminKeyCreate) -> admin_keys.CreatedAdminKey:
        """An organization's first admin key, for one that has no signed-in owner yet (its users come
        from an identity provider, or it is managed by automation)."""
        await orgs.get_org(conn, org_id)
        return await admin_keys.create_admin_key(conn, org_id, ACTOR, data, state.secrets.key_pepper)

    @get("/{org_id:str}/members")
    async def list_members(self, conn: AsyncConnection, org_id: str) -> ListOf[orgs.MemberView]:
        return ListOf(data=await orgs.list_members(conn, org_id))

    @post("/{org_id:str}/members", status_code=201)
    async def add_member(self, conn: AsyncConnection, org_id: str,
                         data: orgs.MemberCreate) -> orgs.MemberView:
        return await orgs.add_member(conn, org_id, data, ACTOR)

    @get("/{org_id:str}/members/{user_id:str}")
    async def get_member(self, conn: AsyncConnection, org_id: str, user_id: str) -> orgs.MemberView:
        return await orgs.get_member(conn, org_id, user_id)

    @patch("/{org_id:str}/members/{user_id:str}")
    async def update_member(self, conn: AsyncConnection, org_id: str, user_id: str,
                            data: orgs.MemberPatch) -> orgs.MemberView:
        return await orgs.update_member(conn, org_id, user_id, data, ACTOR)

    @delete("/{org_id:str}/members/{user_id:str}", status_code=200)
    async def remove_member(self, conn: AsyncConnection, org_id: str, user_id: str) -> orgs.MemberView:
        return await orgs.remove_member(conn, org_id, user_id, ACTOR)


class UsersController(Controller):
    path = "/api/users"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @get("/")
    async def list_users(self, conn: AsyncConnection) -> ListOf[orgs.UserView]:
        return ListOf(data=await orgs.list_users(conn))

    @post("/", status_code=201)
    async def create_user(self, conn: AsyncConnection, data: orgs.UserCreate) -> orgs.UserView:
        return await orgs.create_user(conn, data, ACTOR)

    @get("/{user_id:str}")
    async def get_user(self, conn: AsyncConnection, user_id: str) -> orgs.UserView:
        return await orgs.get_user(conn, user_id)
