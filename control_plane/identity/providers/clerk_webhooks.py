"""Clerk's webhooks (`POST /auth/webhooks/clerk`): users, organizations and memberships kept in step.

Clerk sends them through Svix: headers `svix-id`, `svix-timestamp` and `svix-signature` (`v1,<base64
HMAC-SHA256 of "<id>.<timestamp>.<body>">`, several separated by spaces while a secret rotates),
keyed by the base64 part of the endpoint's `whsec_...` secret. The timestamp must be within
`TOLERANCE_S` of now (a captured message cannot be replayed later). Svix delivers at least once:
the message id is recorded in `processed_webhooks` in the same transaction as the changes, so a
repeated delivery changes nothing and is answered 200 (otherwise Svix would retry it).

Mapping: a Clerk user is our user through `accounts(provider='clerk', provider_account_id=<user_...>)`
(matched by verified primary email first, so an existing local user is linked, not duplicated);
a Clerk organization is ours through `external_organizations` (created with its default project);
Clerk roles map through `ROLES`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.orgs import OrgCreate, create_org
from control_plane.identity.sessions import revoke_all
from core.audit import audit
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id

__all__ = ["ROLES", "WebhookResult", "apply_event", "verify_svix"]

TOLERANCE_S = 300
ACTOR = "clerk"
# Clerk's default roles are org:admin and org:member (a member uses the API: our `developer`);
# custom Clerk roles named after ours map to them; any other is the least, `reader`.
ROLES = {"org:owner": "owner", "org:admin": "admin", "org:developer": "developer", "org:billing": "billing",
         "org:reader": "reader", "org:member": "developer"}
DEFAULT_ROLE = "reader"


class WebhookResult(msgspec.Struct, kw_only=True):
    object: str = "webhook.result"
    id: str
    type: str
    status: str
    """`applied`, `duplicate` (already applied) or `ignored` (an event type not synced)."""


def verify_svix(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str:
    """The message id of a correctly signed, fresh message; 401 `webhook_signature_invalid` otherwise."""
    msg_id, stamp, signatures = (headers.get(h, "") for h in ("svix-id", "svix-timestamp", "svix-signature"))
    refused = ApiError("webhook_signature_invalid", "The webhook signature is missing, wrong or too old.")
    if not (secret and msg_id and stamp.isdigit() and signatures):
        raise refused
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_S:
        raise refused
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    for candidate in signatures.split():
        version, _sep, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return msg_id
    raise refused


async def apply_event(conn: AsyncConnection, msg_id: str, event: dict[str, Any]) -> WebhookResult:
    kind, data = str(event.get("type", "")), event.get("data") or {}
    claimed = (await conn.execute(text(
        "INSERT INTO processed_webhooks (provider, message_id, event_type, processed_at)"
        " VALUES ('clerk', :id, :t, :now) ON CONFLICT (provider, message_id) DO NOTHING RETURNING message_id"),
        {"id": msg_id[:200], "t": kind[:100], "now": now_ms()})).first()
    if claimed is None:
        return WebhookResult(id=msg_id, type=kind, status="duplicate")
    handler = _HANDLERS.get(kind)
    if handler is None or not isinstance(data, dict):
        return WebhookResult(id=msg_id, type=kind, status="ignored")
    await handler(conn, data)
    return WebhookResult(id=msg_id, type=kind, status="applied")


def _primary_email(data: dict[str, Any]) -> tuple[str, bool] | None:
    primary = data.get("primary_email_address_id")
    for address in data.get("email_addresses") or []:
        if isinstance(address, dict) and address.get("id") == primary and address.get("email_address"):
            verified = (address.get("verification") or {}).get("status") == "verified"
            return str(address["email_address"]).strip().lower(), verified
    return None


async def _user_of(conn: AsyncConnection, clerk_id: str) -> str | None:
    row = (await conn.execute(text("SELECT user_id FROM accounts WHERE provider = 'clerk'"
                                   " AND provider_account_id = :s"), {"s": clerk_id})).first()
    return None if row is None else str(row[0])


async def _user_upserted(conn: AsyncConnection, data: dict[str, Any]) -> None:
    clerk_id, email = str(data.get("id", "")), _primary_email(data)
    if not clerk_id or email is None:
        return
    address, verified = email
    name = " ".join(str(data.get(k) or "") for k in ("first_name", "last_name")).strip()
    now = now_ms()
    user_id = await _user_of(conn, clerk_id)
    if user_id is None:
        row = (await conn.execute(text("SELECT id FROM users WHERE email = :e"), {"e": address})).first()
        if row is not None and not verified:  # only a proven address may take over an existing user
            return
        user_id = str(row[0]) if row is not None else new_id("user")
        if row is None:
            await conn.execute(text("INSERT INTO users (id, email, name, created_at) VALUES (:id, :e, :n, :now)"),
                               {"id": user_id, "e": address, "n": name, "now": now})
        await conn.execute(text("INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at)"
                                " VALUES (:id, :u, 'oidc', 'clerk', :s, :now)"),
                           {"id": new_id("ident"), "u": user_id, "s": clerk_id, "now": now})
        await audit(conn, None, ACTOR, "user.linked", user_id, {"clerk_user": clerk_id})
    else:
        taken = (await conn.execute(text("SELECT 1 FROM users WHERE email = :e AND id <> :u"),
                                    {"e": address, "u": user_id})).first()
        # An address another user here has stays theirs (answering 500 would have Svix retry forever).
        await conn.execute(text("UPDATE users SET email = :e, name = :n WHERE id = :u"),
                           {"e": address if taken is None else await _email_of(conn, user_id), "n": name, "u": user_id})
    if verified:
        await conn.execute(text("UPDATE users SET email_verified_at = COALESCE(email_verified_at, :now) WHERE id = :u"),
                           {"now": now, "u": user_id})


async def _email_of(conn: AsyncConnection, user_id: str) -> str:
    return str((await conn.execute(text("SELECT email FROM users WHERE id = :u"), {"u": user_id})).scalar_one())


async def _user_deleted(conn: AsyncConnection, data: dict[str, Any]) -> None:
    user_id = await _user_of(conn, str(data.get("id", "")))
    if user_id is not None:  # the user row stays (audit, keys' created_by); access ends
        await revoke_all(conn, user_id)
        await conn.execute(text("DELETE FROM memberships WHERE user_id = :u"), {"u": user_id})
        await audit(conn, None, ACTOR, "user.deleted", user_id, {"clerk_user": data.get("id")})


async def _org_of(conn: AsyncConnection, clerk_org: str) -> str | None:
    row = (await conn.execute(text("SELECT org_id FROM external_organizations WHERE provider = 'clerk'"
                                   " AND external_id = :x"), {"x": clerk_org})).first()
    return None if row is None else str(row[0])


async def _org_upserted(conn: AsyncConnection, data: dict[str, Any]) -> str | None:
    clerk_org, name = str(data.get("id", "")), str(data.get("name") or "Organization")[:200]
    if not clerk_org:
        return None
    org_id = await _org_of(conn, clerk_org)
    if org_id is None:
        org_id = (await create_org(conn, OrgCreate(name=name), ACTOR)).id
        await conn.execute(text("INSERT INTO external_organizations (provider, external_id, org_id)"
                                " VALUES ('clerk', :x, :o)"), {"x": clerk_org, "o": org_id})
    else:
        await conn.execute(text("UPDATE organizations SET name = :n WHERE id = :o"), {"n": name, "o": org_id})
    return org_id


async def _org_created(conn: AsyncConnection, data: dict[str, Any]) -> None:
    await _org_upserted(conn, data)


async def _membership_upserted(conn: AsyncConnection, data: dict[str, Any]) -> None:
    org = data.get("organization") or {}
    member = data.get("public_user_data") or {}
    org_id = await _org_upserted(conn, org) if isinstance(org, dict) else None
    user_id = await _user_of(conn, str(member.get("user_id", ""))) if isinstance(member, dict) else None
    if org_id is None or user_id is None:
        return
    role = ROLES.get(str(data.get("role", "")), DEFAULT_ROLE)
    found = (await conn.execute(text("SELECT id FROM memberships WHERE org_id = :o AND user_id = :u"),
                                {"o": org_id, "u": user_id})).first()
    if found is None:
        await conn.execute(text("INSERT INTO memberships (id, org_id, user_id, role, created_at)"
                                " VALUES (:id, :o, :u, :r, :now)"),
                           {"id": new_id("mem"), "o": org_id, "u": user_id, "r": role, "now": now_ms()})
    else:
        await conn.execute(text("UPDATE memberships SET role = :r WHERE id = :id"), {"r": role, "id": str(found[0])})
    await audit(conn, org_id, ACTOR, "member.synced", user_id, {"role": role})


async def _membership_deleted(conn: AsyncConnection, data: dict[str, Any]) -> None:
    org, member = data.get("organization") or {}, data.get("public_user_data") or {}
    org_id = await _org_of(conn, str(org.get("id", ""))) if isinstance(org, dict) else None
    user_id = await _user_of(conn, str(member.get("user_id", ""))) if isinstance(member, dict) else None
    if org_id is not None and user_id is not None:
        await conn.execute(text("DELETE FROM memberships WHERE org_id = :o AND user_id = :u"),
                           {"o": org_id, "u": user_id})
        await audit(conn, org_id, ACTOR, "member.removed", user_id, {})


_HANDLERS = {
    "user.created": _user_upserted, "user.updated": _user_upserted, "user.deleted": _user_deleted,
    "organization.created": _org_created, "organization.updated": _org_created,
    "organizationMembership.created": _membership_upserted, "organizationMembership.updated": _membership_upserted,
    "organizationMembership.deleted": _membership_deleted,
}
