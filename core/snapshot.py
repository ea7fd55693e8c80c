"""The sidecar's in-memory view of keys, models, aliases and prices.

Models, aliases, backends and prices are loaded whole and reloaded when `config_version` moves
(polled every second, or at once when the control plane calls /internal/invalidate). Keys are
looked up by hash on first use and cached for `key_cache_ttl_seconds`; revocation on this node
evicts at once, other nodes within the TTL (Redis fan-out shortens that when configured).
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.ipnet import Network, canonical_address, canonical_network
from core.routeplan import RoutePolicy, plan
from core.rows import columns, row_as, rows_as

__all__ = ["KeyCache", "KeyRecord", "ModelRecord", "Snapshot", "load_key", "load_snapshot"]

IPNetwork = Network


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Rate limits of one scope; None means no limit at that scope."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    projects: frozenset[str]
    model_patterns: tuple[str, ...]
    endpoints: frozenset[str]
    networks: tuple[IPNetwork, ...]
    monthly_budget_nanos: int | None
    expires_at_ms: int | None
    disabled: bool
    revoked: bool
    limits: Limits = Limits()
    signing_secret_enc: str | None = None

    def allows_model(self, *names: str) -> bool:
        if "*" in self.model_patterns:  # the common allow-all: fnmatch's `*` matches every name
            return True
        return any(fnmatch.fnmatchcase(n, p) for p in self.model_patterns for n in names)

    def allows_ip(self, ip: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = canonical_address(ip)  # ::ffff:10.0.0.1 is 10.0.0.1 for an allow-list
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self.networks)


class PriceRecord(msgspec.Struct, frozen=True):
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    backend_id: str
    upstream_name: str
    kind: str
    context_window: int
    max_output_tokens: int
    capabilities: dict[str, Any]
    status: str
    price: PriceRecord | None


class BackendRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    protocol: str
    base_url: str
    api_key_env: str | None
    timeout_ms: int
    connect_timeout_ms: int = 5_000


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    models: dict[str, ModelRecord]
    aliases: dict[str, str]
    backends: dict[str, BackendRecord]
    org_projects: dict[str, frozenset[str]]
    default_project: dict[str, str]
    project_limits: dict[str, Limits]
    org_limits: dict[str, Limits]
    routes: dict[str, RoutePolicy] = msgspec.field(default_factory=dict)
    """Route groups by alias (core/routeplan.py); an alias without one has its single model."""

    def resolve(self, name: str) -> ModelRecord | None:
        return self.usable(self.aliases.get(name, name))

    def usable(self, model_id: str) -> ModelRecord | None:
        model = self.models.get(model_id)
        # A model without a price card is never served: it does not exist for clients.
        if model is None or model.price is None or model.status == "disabled":
            return None
        return model

    def plan(self, name: str, extra: tuple[str, ...] = (), kind: str | None = None) -> list[list[str]]:
        """The tiers of model ids a request for `name` (then `extra`, its `models` array) may try."""
        def fits(model_id: str) -> ModelRecord | None:
            model = self.usable(model_id)
            return model if model is not None and (kind is None or model.kind == kind) else None
        return plan(name, extra, self.aliases, self.routes, fits)


async def current_version(conn: AsyncConnection) -> int:
    """The configuration's version (polled every second, on a kept connection: core/kept.py)."""
    row = (await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).first()
    return int(row[0]) if row else 0


async def load_snapshot(engine: AsyncEngine) -> Snapshot:
    async with engine.connect() as conn:
        version = int((await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).scalar_one())
        now = int(time.time() * 1000)
        prices: dict[str, PriceRecord] = {}
        # Latest version already in effect wins; rows arrive ordered so the last write is newest.
        for p in rows_as(_PriceRow, await conn.execute(text(
                f"SELECT {columns(_PriceRow)} FROM price_cards WHERE effective_at <= :now"
                " ORDER BY model_id, effective_at, version"), {"now": now})):
            prices[p.model_id] = PriceRecord(p.version, p.input_nanos_per_mtok, p.cached_input_nanos_per_mtok,
                                             p.output_nanos_per_mtok)
        models = {
            m.id: ModelRecord(
                id=m.id, backend_id=m.backend_id, upstream_name=m.upstream_name, kind=m.kind,
                context_window=m.context_window, max_output_tokens=m.max_output_tokens,
                capabilities=msgspec.json.decode(m.capabilities), status=m.status, price=prices.get(m.id))
            for m in rows_as(_ModelRow, await conn.execute(text(f"SELECT {columns(_ModelRow)} FROM models")))
        }
        aliases: dict[str, str] = {}
        routes: dict[str, RoutePolicy] = {}
        for a in rows_as(_AliasRow, await conn.execute(text(f"SELECT {columns(_AliasRow)} FROM routes"))):
            aliases[a.alias] = a.model_id
            if a.policy not in ("", "{}"):
                routes[a.alias] = msgspec.json.decode(a.policy, type=RoutePolicy)
        backends = {b.id: b for b in rows_as(BackendRecord, await conn.execute(text(
            f"SELECT {columns(BackendRecord)} FROM backends WHERE enabled = 1")))}
        org_projects: dict[str, set[str]] = {}
        default_project: dict[str, str] = {}
        project_limits: dict[str, Limits] = {}
        for pr in rows_as(_ProjectRow, await conn.execute(text(
                f"SELECT {columns(_ProjectRow)} FROM projects WHERE archived = 0 ORDER BY created_at, id"))):
            org_projects.setdefault(pr.org_id, set()).add(pr.id)
            default_project.setdefault(pr.org_id, pr.id)
            project_limits[pr.id] = msgspec.json.decode(pr.rate_limits, type=Limits)
        org_limits = {
            o.id: Limits(rpm=o.rpm, tpm=o.tpm, concurrent=o.concurrent)
            for o in rows_as(_PlanLimitsRow, await conn.execute(text(
                f"SELECT {columns(_PlanLimitsRow, 'p', id='o.id')} FROM organizations o"
                " JOIN plans p ON p.id = o.plan")))
        }
    return Snapshot(version=version, models=models, aliases=aliases, backends=backends,
                    org_projects={k: frozenset(v) for k, v in org_projects.items()},
                    default_project=default_project, project_limits=project_limits, org_limits=org_limits,
                    routes=routes)


async def load_key(engine: AsyncEngine, key_hash: str) -> KeyRecord | None:
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            f"SELECT {columns(_KeyRow)} FROM api_keys WHERE key_hash = :h"), {"h": key_hash})).first()
    if row is None:
        return None
    k = row_as(_KeyRow, row)
    return KeyRecord(
        id=k.id, org_id=k.org_id, projects=frozenset(msgspec.json.decode(k.projects)),
        model_patterns=tuple(msgspec.json.decode(k.models)),
        endpoints=frozenset(msgspec.json.decode(k.endpoints)),
        networks=tuple(canonical_network(c) for c in msgspec.json.decode(k.ip_ranges)),
        monthly_budget_nanos=k.monthly_budget_nanos, expires_at_ms=k.expires_at, disabled=k.disabled,
        revoked=k.revoked_at is not None, limits=msgspec.json.decode(k.rate_limits, type=Limits),
        signing_secret_enc=k.signing_secret_enc)


# Rows as the tables store them (JSON columns as text), read by name (core/rows.py).

class _PriceRow(msgspec.Struct, frozen=True):
    model_id: str
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int


class _ModelRow(msgspec.Struct, frozen=True):
    id: str
    backend_id: str
    upstream_name: str
    kind: str
    context_window: int
    max_output_tokens: int
    capabilities: str
    status: str


class _AliasRow(msgspec.Struct, frozen=True):
    alias: str
    model_id: str
    policy: str


class _ProjectRow(msgspec.Struct, frozen=True):
    org_id: str
    id: str
    rate_limits: str


class _PlanLimitsRow(msgspec.Struct, frozen=True):
    id: str
    rpm: int | None
    tpm: int | None
    concurrent: int | None


class _KeyRow(msgspec.Struct, frozen=True):
    id: str
    org_id: str
    projects: str
    models: str
    endpoints: str
    ip_ranges: str
    monthly_budget_nanos: int | None
    expires_at: int | None
    disabled: bool
    revoked_at: int | None
    rate_limits: str
    signing_secret_enc: str | None


class KeyCache:
    """hash -> (record or None, expiry). Bounded so a key-scanning client cannot grow it forever."""

    def __init__(self, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[KeyRecord | None, float]] = {}

    def get(self, key_hash: str) -> tuple[bool, KeyRecord | None]:
        hit = self._entries.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put(self, key_hash: str, record: KeyRecord | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (record, time.monotonic() + self.ttl)

    def evict_keys(self, key_ids: set[str]) -> None:
        for h, (rec, _) in list(self._entries.items()):
            if rec is not None and rec.id in key_ids:
                del self._entries[h]

    def clear(self) -> None:
        self._entries.clear()
