"""Who is calling the customer REST API (`/v1/organization/...`), and for which organization.

Two credentials, both checked here (Envoy routes these paths to the control plane without the
sidecar's check, which knows only `nx_live_` keys):
- `Authorization: Bearer nx_admin_...`: an admin key, scoped to the one organization that created
  it; it acts as an `admin` there. An `OpenAI-Organization` header naming another organization
  answers 404, as a made-up organization does.
- A session cookie (control_plane/identity/sessions.py) plus the organization in the
  `OpenAI-Organization` header (a user may belong to many; with one membership it may be left
  out). The user's membership gives the role and the projects it is narrowed to. A write with a
  cookie must pass the CSRF check, so another site cannot make a signed-in browser act.

Failed credentials are throttled per client address, like the operator's admin token.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.policy import Role
from core.apikeys import ADMIN_KEY_PREFIX, hash_key, is_well_formed
from core.auth_attempts import FailureThrottle
from core.db import now_ms
from core.errors import ApiError

__all__ = ["Credentials", "Principal", "member_projects", "resolve_principal"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    actor: str
    """Who, as the audit log and `created_by` record it: `user:<id>` or `admin_key:<id>`."""
    user_id: str | None
    admin_key_id: str | None
    role: Role
    project_ids: tuple[str, ...] | None
    """The projects a narrowed member may see and touch; None: every project of the organization."""
    via: Literal["session", "admin_key"]

    def sees_project(self, project_id: str) -> bool:
        return self.project_ids is None or project_id in self.project_ids


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """What the request carried, taken from it by the API layer (control_plane/api/org_deps.py)."""

    authorization: str
    organization: str
    client: str
    session_user_id: str | None = None
    """The signed-in user, when the identity provider recognised the request (a session cookie, a
    provider's bearer token); then `authorization` is not an admin key."""


_UNKNOWN_ORG = "No organization {!r}"


async def resolve_principal(conn: AsyncConnection, creds: Credentials, pepper: str,
                            throttle: FailureThrottle) -> Principal:
    wait = throttle.retry_after(creds.client)
    if wait is not None:  # not checked while blocked: a right guess answers like a wrong one
        raise ApiError("rate_limit_exceeded", f"Too many failed authentication attempts from {creds.client}; "
                       f"retry in {wait} s.", **{"retry-after": str(wait)})
    if creds.session_user_id is not None:
        return await _from_session(conn, creds.session_user_id, creds.organization)
    scheme, _sep, token = creds.authorization.partition(" ")
    if creds.authorization:
        principal = await _from_admin_key(conn, token.strip() if scheme.lower() == "bearer" else "", pepper)
        if principal is None:
            throttle.failed(creds.client)
            raise ApiError("invalid_api_key", "The organization API needs an admin key "
                           "('Authorization: Bearer nx_admin_...') or a signed-in session.")
        throttle.succeeded(creds.client)
        if creds.organization and creds.organization != principal.org_id:
            raise ApiError("not_found", _UNKNOWN_ORG.format(creds.organization))
        return principal
    raise ApiError("missing_api_key", "The organization API needs an admin key "
                   "('Authorization: Bearer nx_admin_...') or a signed-in session.")


async def _from_admin_key(conn: AsyncConnection, token: str, pepper: str) -> Principal | None:
    if not is_well_formed(token, ADMIN_KEY_PREFIX):
        return None
    row = (await conn.execute(text("SELECT id, org_id FROM admin_api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
                              {"h": hash_key(token, pepper)})).first()
    if row is None:
        return None
    key_id, now = str(row.id), now_ms()
    # At most once a minute: a busy automation does not turn every read into a write.
    await conn.execute(text("UPDATE admin_api_keys SET last_used_at = :now WHERE id = :k"
                            " AND (last_used_at IS NULL OR last_used_at < :stale)"),
                       {"now": now, "k": key_id, "stale": now - 60_000})
    return Principal(org_id=str(row.org_id), actor=f"admin_key:{key_id}", user_id=None, admin_key_id=key_id,
                     role="admin", project_ids=None, via="admin_key")


async def _from_session(conn: AsyncConnection, user_id: str, organization: str) -> Principal:
    rows = (await conn.execute(text("SELECT org_id, role FROM memberships WHERE user_id = :u ORDER BY org_id"),
                               {"u": user_id})).all()
    if not organization:
        if len(rows) != 1:
            raise ApiError("missing_required_parameter", "Name the organization in the 'OpenAI-Organization' "
                           "header (you belong to several, or to none).", param="OpenAI-Organization")
        organization = str(rows[0].org_id)
    role = next((str(r.role) for r in rows if str(r.org_id) == organization), None)
    if role is None:  # not a member: exactly like an organization that does not exist
        raise ApiError("not_found", _UNKNOWN_ORG.format(organization))
    return Principal(org_id=organization, actor=f"user:{user_id}", user_id=user_id, admin_key_id=None,
                     role=role,  # type: ignore[arg-type]  # the CHECK constraint holds it to Role
                     project_ids=await member_projects(conn, organization, user_id), via="session")


async def member_projects(conn: AsyncConnection, org_id: str, user_id: str) -> tuple[str, ...] | None:
    rows = await conn.execute(text("SELECT project_id FROM membership_projects WHERE org_id = :o AND user_id = :u"
                                   " ORDER BY project_id"), {"o": org_id, "u": user_id})
    found = tuple(str(r[0]) for r in rows)
    return found or None
