"""Customer REST API: admin keys (`/v1/organization/admin_api_keys`), the audit log
(`/v1/organization/audit_logs`) and the organization's settings (`/v1/organization/settings`).
Thin handlers over control_plane/domain/admin_keys.py, audit_log.py and orgs.py.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.lists import Page, page
from control_plane.api.org_deps import ORG_DEPENDENCIES, After, Deleted, Limit, allowed, paginate
from control_plane.domain import admin_keys, orgs
from control_plane.domain.audit_log import AuditEntry, list_audit
from control_plane.identity.principal import Principal

__all__ = ["AdminKeysController", "AuditLogsController", "SettingsController"]


class AdminKeysController(Controller):
    path = "/v1/organization/admin_api_keys"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_admin_keys(self, conn: AsyncConnection, who: Principal, limit: Limit = 20,
                              after: After = None) -> Page[admin_keys.AdminKeyView]:
        return paginate(await admin_keys.list_admin_keys(conn, allowed(who, "admin_keys.read").org_id), limit, after)

    @post("/", status_code=201)
    async def create_admin_key(self, conn: AsyncConnection, state: State, who: Principal,
                               data: admin_keys.AdminKeyCreate) -> admin_keys.CreatedAdminKey:
        """The answer carries the key (`value`), shown only here."""
        return await admin_keys.create_admin_key(conn, allowed(who, "admin_keys.write").org_id, who.actor, data,
                                                 state.secrets.key_pepper)

    @get("/{key_id:str}")
    async def retrieve_admin_key(self, conn: AsyncConnection, who: Principal, key_id: str) -> admin_keys.AdminKeyView:
        return await admin_keys.get_admin_key(conn, allowed(who, "admin_keys.read").org_id, key_id)

    @delete("/{key_id:str}", status_code=200)
    async def delete_admin_key(self, conn: AsyncConnection, who: Principal, key_id: str) -> Deleted:
        await admin_keys.revoke_admin_key(conn, allowed(who, "admin_keys.write"), key_id)
        return Deleted(id=key_id, object="organization.admin_api_key.deleted")


class AuditLogsController(Controller):
    path = "/v1/organization/audit_logs"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_audit_logs(self, conn: AsyncConnection, who: Principal, limit: Limit = 20, after: After = None,
                              type: Annotated[str | None, Parameter(max_length=100)] = None) -> Page[AuditEntry]:
        """Newest first: who did what, when, from which address."""
        entries, more = await list_audit(conn, allowed(who, "audit.read").org_id, limit, after, type)
        return page(entries, more)


class SettingsUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: orgs.Name | None = None


class SettingsController(Controller):
    path = "/v1/organization/settings"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def retrieve_settings(self, conn: AsyncConnection, who: Principal) -> orgs.OrgView:
        return await orgs.get_org(conn, allowed(who, "org.read").org_id)

    @post("/", status_code=200)
    async def update_settings(self, conn: AsyncConnection, who: Principal, data: SettingsUpdate) -> orgs.OrgView:
        """The plan is the operator's to set; the name is the organization's."""
        return await orgs.update_org(conn, allowed(who, "org.write").org_id, orgs.OrgPatch(name=data.name), who.actor)
