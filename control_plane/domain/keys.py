"""API keys: scopes, creation (secret returned once), listing, scope updates and revocation.

Scope semantics (checked by the sidecar on every request):
- `projects`: project ids the key may act for; empty means every project of its organization.
- `models`: shell-style patterns (`local/*`, `orion-reason`); `["*"]` allows all.
- `endpoints`: subset of ENDPOINTS.
- `ip_ranges`: IPv4/IPv6 CIDRs; empty means any address.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.apikeys import display_prefix, generate_key, hash_key
from core.audit import audit
from core.crypto import SIGNING_PURPOSE, seal
from core.db import now_ms
from core.errors import ApiError
from core.events import record_event
from core.events.catalog import KeyRevoked
from core.ids import new_id
from core.ipnet import canonical_network

__all__ = [
    "ENDPOINTS",
    "CreatedKey",
    "KeyPatch",
    "KeyScopes",
    "KeyView",
    "bump_config_version",
    "create_key",
    "get_key",
    "list_keys",
    "revoke_key",
    "update_key",
]

Endpoint = Literal["responses", "chat", "embeddings", "models", "usage", "webhooks"]
ENDPOINTS: tuple[Endpoint, ...] = ("responses", "chat", "embeddings", "models", "usage", "webhooks")
Nanos = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
UnixSeconds = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799)]
"""Up to the end of year 9999: stored as milliseconds, which must fit in 64 bits."""



PositiveInt = Annotated[int, msgspec.Meta(gt=0, le=10**12)]


class RateLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-minute requests and tokens, and concurrent requests; None means no limit at this scope."""

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrent: PositiveInt | None = None


class KeyScopes(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    projects: list[str] = msgspec.field(default_factory=list)
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    endpoints: list[Endpoint] = msgspec.field(default_factory=lambda: list(ENDPOINTS))
    ip_ranges: list[str] = msgspec.field(default_factory=list)
    monthly_budget_nanos: Nanos | None = None
    expires_at: UnixSeconds | None = None
    """Unix seconds, in the future; None never expires."""
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    signed_requests: bool = False
    """Require every request to be signed (replay protection); the secret is returned once."""


class KeyPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | None = None
    projects: list[str] | None = None
    models: list[str] | None = None
    endpoints: list[Endpoint] | None = None
    ip_ranges: list[str] | None = None
    monthly_budget_nanos: Nanos | msgspec.UnsetType | None = msgspec.UNSET
    expires_at: UnixSeconds | msgspec.UnsetType | None = msgspec.UNSET
    """May be in the past: expiring a key now is a change an operator may make."""
    disabled: bool | None = None
    rate_limits: RateLimits | None = None


class KeyView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["api_key"] = "api_key"
    organization: str
    name: str
    prefix: str
    projects: list[str]
    models: list[str]
    endpoints: list[str]
    ip_ranges: list[str]
    monthly_budget_nanos: int | None
    expires_at: int | None
    disabled: bool
    revoked: bool
    revoked_at: int | None
    created_at: int
    rate_limits: RateLimits
    signed_requests: bool


class CreatedKey(msgspec.Struct, kw_only=True):
    key: KeyView
    secret: str
    """Shown once; only its hash is stored."""
    signing_secret: str | None = None
    """Shown once, when the key requires signed requests."""


def _check_scopes(ip_ranges: list[str] | None, models: list[str] | None) -> list[str] | None:
    """Refuse malformed scopes; return the IP ranges in canonical form (control_plane/ipnet.py), so
    `::ffff:10.0.0.0/104` is stored as the `10.0.0.0/8` a client address is compared with."""
    canonical: list[str] | None = None
    if ip_ranges is not None:
        canonical = []
        for cidr in ip_ranges:
            try:
                canonical.append(str(canonical_network(cidr)))
            except ValueError:
                raise ApiError("invalid_request_error", f"ip_ranges: {cidr[:100]!r} is not a CIDR range",
                               param="ip_ranges") from None
    for pattern in models or []:
        if not pattern or len(pattern) > 200:
            raise ApiError("invalid_request_error", "models: patterns must be 1-200 characters",
                           param="models")
    return canonical


async def _check_projects(conn: AsyncConnection, org_id: str, projects: list[str] | None) -> None:
    for project in projects or []:
        row = await conn.execute(text("SELECT 1 FROM projects WHERE id = :p AND org_id = :o"),
                                 {"p": project, "o": org_id})
        if row.first() is None:
            raise ApiError("invalid_request_error", f"projects: no project {project!r}", param="projects")


_COLUMNS = ("id, org_id, name, prefix, projects, models, endpoints, ip_ranges, monthly_budget_nanos, "
            "expires_at, disabled, revoked_at, created_at, rate_limits, signing_secret_enc")


def _view(row: msgspec.Struct | tuple[object, ...]) -> KeyView:
    (id_, org, name, prefix, projects, models, endpoints, ips, budget, expires, disabled, revoked_at,
     created, limits, signing) = tuple(row)  # type: ignore[arg-type]
    return KeyView(
        id=str(id_), organization=str(org), name=str(name), prefix=str(prefix),
        projects=msgspec.json.decode(str(projects)), models=msgspec.json.decode(str(models)),
        endpoints=msgspec.json.decode(str(endpoints)), ip_ranges=msgspec.json.decode(str(ips)),
        monthly_budget_nanos=None if budget is None else int(str(budget)),
        expires_at=None if expires is None else int(str(expires)) // 1000,
        disabled=bool(disabled), revoked=revoked_at is not None,
        revoked_at=None if revoked_at is None else int(str(revoked_at)) // 1000,
        created_at=int(str(created)) // 1000,
        rate_limits=msgspec.json.decode(str(limits), type=RateLimits), signed_requests=signing is not None,
    )


async def create_key(conn: AsyncConnection, org_id: str, scopes: KeyScopes, pepper: str,
                     actor: str) -> CreatedKey:
    ip_ranges = _check_scopes(scopes.ip_ranges, scopes.models) or []
    if scopes.expires_at is not None and scopes.expires_at <= time.time():
        # A key that is dead on arrival is a mistake (often milliseconds sent for seconds' sake
        # the other way round, or a stale value), never a useful credential.
        raise ApiError("invalid_request_error", "expires_at must be in the future (unix seconds).",
                       param="expires_at")
    await _check_projects(conn, org_id, scopes.projects)
    secret = generate_key()
    key_id, now = new_id("key"), now_ms()
    signing = new_signing_secret() if scopes.signed_requests else None
    enc = msgspec.json.encode
    await conn.execute(
        text("INSERT INTO api_keys (id, org_id, name, prefix, key_hash, projects, models, endpoints, "
             "ip_ranges, monthly_budget_nanos, expires_at, rate_limits, signing_secret_enc, created_by, "
             "created_at, updated_at) VALUES (:id, :org, :name, :prefix, :hash, :projects, :models, "
             ":endpoints, :ips, :budget, :expires, :limits, :signing, :actor, :now, :now)"),
        {"id": key_id, "org": org_id, "name": scopes.name, "prefix": display_prefix(secret),
         "hash": hash_key(secret, pepper), "projects": enc(scopes.projects).decode(),
         "models": enc(scopes.models).decode(), "endpoints": enc(scopes.endpoints).decode(),
         "ips": enc(ip_ranges).decode(), "budget": scopes.monthly_budget_nanos,
         "expires": None if scopes.expires_at is None else scopes.expires_at * 1000,
         "limits": enc(scopes.rate_limits).decode(), "actor": actor, "now": now,
         "signing": seal(signing, pepper, SIGNING_PURPOSE) if signing else None},
    )
    await audit(conn, org_id, actor, "key.created", key_id, {"prefix": display_prefix(secret)})
    return CreatedKey(key=await get_key(conn, org_id, key_id), secret=secret, signing_secret=signing)


def new_signing_secret() -> str:
    return "nxsig_" + secrets.token_urlsafe(32)


async def set_signing(conn: AsyncConnection, org_id: str, key_id: str, enabled: bool, pepper: str,
                      actor: str) -> str | None:
    """Enable (or rotate) signed requests and return the new secret once, or disable them."""
    current = await get_key(conn, org_id, key_id)
    if current.revoked:
        raise ApiError("conflict", f"API key {key_id!r} is revoked and cannot be changed")
    signing = new_signing_secret() if enabled else None
    await conn.execute(text("UPDATE api_keys SET signing_secret_enc = :s, updated_at = :now "
                            "WHERE id = :k AND org_id = :o"),
                       {"s": seal(signing, pepper, SIGNING_PURPOSE) if signing else None, "now": now_ms(),
                        "k": key_id, "o": org_id})
    await audit(conn, org_id, actor, "key.signing_rotated" if enabled else "key.signing_disabled", key_id, {})
    return signing


async def list_keys(conn: AsyncConnection, org_id: str) -> list[KeyView]:
    rows = await conn.execute(
        text(f"SELECT {_COLUMNS} FROM api_keys WHERE org_id = :o ORDER BY created_at, id"), {"o": org_id})
    return [_view(r) for r in rows]


async def get_key(conn: AsyncConnection, org_id: str, key_id: str) -> KeyView:
    # Scoped by organization: another tenant's key id is indistinguishable from a missing one.
    row = (await conn.execute(text(f"SELECT {_COLUMNS} FROM api_keys WHERE id = :k AND org_id = :o"),
                              {"k": key_id, "o": org_id})).first()
    if row is None:
        raise ApiError("not_found", f"No API key {key_id!r}")
    return _view(row)


async def update_key(conn: AsyncConnection, org_id: str, key_id: str, patch: KeyPatch,
                     actor: str) -> KeyView:
    current = await get_key(conn, org_id, key_id)
    if current.revoked:
        raise ApiError("conflict", f"API key {key_id!r} is revoked and cannot be changed")
    ip_ranges = _check_scopes(patch.ip_ranges, patch.models)
    await _check_projects(conn, org_id, patch.projects)
    sets: dict[str, object] = {}
    enc = msgspec.json.encode
    for field in ("projects", "models", "endpoints", "ip_ranges", "rate_limits"):
        value = ip_ranges if field == "ip_ranges" else getattr(patch, field)
        if value is not None:
            sets[field] = enc(value).decode()
    if patch.name is not None:
        sets["name"] = patch.name
    if patch.disabled is not None:
        sets["disabled"] = int(patch.disabled)
    if patch.monthly_budget_nanos is not msgspec.UNSET:
        sets["monthly_budget_nanos"] = patch.monthly_budget_nanos
    if patch.expires_at is not msgspec.UNSET:
        sets["expires_at"] = None if patch.expires_at is None else patch.expires_at * 1000
    if sets:
        assignments = ", ".join(f"{k} = :{k}" for k in sets)
        await conn.execute(text(f"UPDATE api_keys SET {assignments}, updated_at = :now "
                                "WHERE id = :k AND org_id = :o"),
                           {**sets, "now": now_ms(), "k": key_id, "o": org_id})
        await audit(conn, org_id, actor, "key.updated", key_id, {"fields": sorted(sets)})
    return await get_key(conn, org_id, key_id)


async def revoke_key(conn: AsyncConnection, org_id: str, key_id: str, actor: str) -> KeyView:
    """Revocation is permanent and idempotent; the caller tells the sidecars to drop the key."""
    current = await get_key(conn, org_id, key_id)
    if not current.revoked:
        now = now_ms()
        result = await conn.execute(text("UPDATE api_keys SET revoked_at = :now, updated_at = :now "
                                         "WHERE id = :k AND org_id = :o AND revoked_at IS NULL"),
                                    {"now": now, "k": key_id, "o": org_id})
        await audit(conn, org_id, actor, "key.revoked", key_id, {"prefix": current.prefix})
        if result.rowcount == 1:  # same transaction as the revocation: no revocation, no event
            await record_event(conn, org_id, "key.revoked", KeyRevoked(
                key_id=key_id, prefix=current.prefix, name=current.name, revoked_at=now // 1000,
                revoked_by=actor))
    return await get_key(conn, org_id, key_id)




async def bump_config_version(conn: AsyncConnection) -> None:
    """Sidecars poll this to refresh their snapshot of models, routes and prices."""
    await conn.execute(text("UPDATE config_version SET version = version + 1 WHERE id = 1"))
