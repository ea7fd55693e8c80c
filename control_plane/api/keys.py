"""Management API for API keys: `/api/orgs/{org_id}/keys` (admin token).

Create returns the secret once; list and get never show it; PATCH updates scopes; revoke is
permanent and is applied by this node's sidecars at once.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx, require_org
from control_plane.api.guards import admin_guard
from control_plane.api.lists import ListOf
from control_plane.domain import keys

__all__ = ["KeysController"]



class KeysController(Controller):
    path = "/api/orgs/{org_id:str}/keys"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @post("/", status_code=201)
    async def create(self, conn: AsyncConnection, state: State, org_id: str,
                     data: keys.KeyScopes) -> keys.CreatedKey:
        return await keys.create_key(conn, await require_org(conn, org_id), data, state.secrets.key_pepper,
                                     actor="admin")

    @get("/")
    async def list_(self, conn: AsyncConnection, org_id: str) -> ListOf[keys.KeyView]:
        return ListOf(data=await keys.list_keys(conn, await require_org(conn, org_id)))

    @get("/{key_id:str}")
    async def retrieve(self, conn: AsyncConnection, org_id: str, key_id: str) -> keys.KeyView:
        return await keys.get_key(conn, org_id, key_id)

    @patch("/{key_id:str}")
    async def update(self, conn: AsyncConnection, state: State, org_id: str, key_id: str,
                     data: keys.KeyPatch) -> keys.KeyView:
        view = await keys.update_key(conn, org_id, key_id, data, actor="admin")
        await conn.commit()  # durable before the sidecars are told to re-read it
        await state.notifier.invalidate(key_ids=[key_id])
        return view

    @post("/{key_id:str}/revoke", status_code=200)
    async def revoke(self, conn: AsyncConnection, state: State, org_id: str, key_id: str) -> keys.KeyView:
        return await _revoke(conn, state, org_id, key_id)

    @post("/{key_id:str}/signing-secret", status_code=200)
    async def rotate_signing(self, conn: AsyncConnection, state: State, org_id: str,
                             key_id: str) -> SigningSecret:
        """Require signed requests from now on (or rotate the secret); returns the secret once."""
        return await _set_signing(conn, state, org_id, key_id, True)

    @delete("/{key_id:str}/signing-secret", status_code=200)
    async def disable_signing(self, conn: AsyncConnection, state: State, org_id: str,
                              key_id: str) -> SigningSecret:
        return await _set_signing(conn, state, org_id, key_id, False)

    @delete("/{key_id:str}", status_code=200)
    async def delete_(self, conn: AsyncConnection, state: State, org_id: str, key_id: str) -> keys.KeyView:
        return await _revoke(conn, state, org_id, key_id)


class SigningSecret(msgspec.Struct):
    key_id: str
    signing_secret: str | None
    """Shown once. Sign requests with nx_client.signing; null when signing was turned off."""


async def _set_signing(conn: AsyncConnection, state: State, org_id: str, key_id: str,
                       enabled: bool) -> SigningSecret:
    secret = await keys.set_signing(conn, org_id, key_id, enabled, state.secrets.key_pepper, actor="admin")
    await conn.commit()  # durable before the sidecars re-read the key
    await state.notifier.invalidate(key_ids=[key_id])
    return SigningSecret(key_id=key_id, signing_secret=secret)


async def _revoke(conn: AsyncConnection, state: State, org_id: str, key_id: str) -> keys.KeyView:
    view = await keys.revoke_key(conn, org_id, key_id, actor="admin")
    await conn.commit()  # durable before the sidecars drop their cached copy
    await state.notifier.invalidate(key_ids=[key_id])
    return view
