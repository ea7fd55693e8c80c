"""A database as release c1e677f left it, with the kind of data an operator's has, for the upgrade tests.

Frozen with that release: the schema is migration 0001 (its schema.sql byte for byte) and the rows
are written here by plain SQL against it, never through the platform's current code, which
follows today's schema.sql. The release's own algorithms for what it stored are copied too (API-key
hashing, secret sealing): keys and webhook secrets it issued must keep working after an upgrade.

What is in it: three organizations (one with no money yet), users and memberships, projects, keys
(live with a monthly budget, revoked, expired, with a request-signing secret), backends, models,
two price-card versions, a route; a ledger with grants, a promotional grant, an adjustment, charges
paid from promotional credit then the wallet, a reversal, holds open, settled, released and expired,
budget counters and threshold crossings; usage records with rollups; the event outbox, webhook
endpoints (one mid-rotation, one disabled), deliveries in each state with their attempts; stored
responses (foreground, and background with job and events); idempotency keys; embedding cache rows.
Every figure reconciles: `nx ledger reconcile` on it reports zero drift.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import time
import zlib
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.migrations.connect import Db, connect
from core.migrations.files import MIGRATIONS_DIR, split_schema

__all__ = ["KEY_SECRET", "MODEL", "ORG_A", "PEPPER", "RELEASE_SCHEMA", "build_release_database"]

RELEASE_SCHEMA = MIGRATIONS_DIR / "0001_release_c1e677f.sql"
PEPPER = "release-c1e677f-upgrade-test-pepper"
MODEL = "sim/chat"
DAY = 86_400_000
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"
ORDER = {"promo": 0, "wallet": 1, "revenue": 2, "clearing": 3, "promotions": 4, "adjustments": 5}
# Price card version 2 of sim/chat, nano-dollars per million tokens (= tests/inference/support.PRICE).
PRICE_V2 = (1_000_000_000, 500_000_000, 2_000_000_000)


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_B62[rem])
    return "".join(reversed(out))


def release_key(seed: str) -> str:
    """A key in the release's format: `nx_live_` + 43 base62 + a 6-character CRC32 checksum."""
    body = _b62(int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big"), 43)
    return f"nx_live_{body}{_b62(zlib.crc32(body.encode()), 6)}"


def release_key_hash(key: str) -> str:
    return hmac.new(PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()


def release_seal(value: str, derivation: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(hashlib.sha256(derivation).digest()).encrypt(nonce, value.encode(), aad)
    return "v1:" + base64.b64encode(nonce + sealed).decode()


KEY_SECRET = release_key("release c1e677f: acme production key")
ORG_A = "org_01seedacme0000000000000a"


def period_of(ms: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(ms // 1000))


class Seed:
    def __init__(self, db: Db, now: int) -> None:
        self.db, self.now, self.n = db, now, 0

    def id(self, prefix: str) -> str:
        self.n += 1
        value = (self.now << 80) | self.n
        return f"{prefix}_" + "".join(_B32[(value >> (5 * i)) & 31] for i in reversed(range(26)))

    async def row(self, table: str, **values: Any) -> None:
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        await self.db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", *values.values())

    async def event(self, org: str, kind: str, data: dict[str, Any], at: int, dedup: str | None = None) -> str:
        evt = self.id("evt")
        payload = json.dumps({"id": evt, "type": kind, "created_at": at // 1000, "data": data})
        await self.row("events", id=evt, org_id=org, project_id=None, type=kind, payload=payload,
                       dedup_key=dedup, fanned_out=1, created_at=at)
        return evt

    async def accounts(self, org: str, at: int) -> None:
        for kind in ORDER:
            await self.row("ledger_accounts", id=self.id("acct"), org_id=org, kind=kind,
                           customer=int(kind in ("wallet", "promo")), created_at=at)

    async def post(self, org: str, kind: str, legs: list[tuple[str, int, int]], *, key: str, at: int,
                   txn: str | None = None, **meta: Any) -> str:
        """The release's posting order: each leg moves its account, then its entry records the
        account's new state; the transaction row comes last and seals them (a trigger checks)."""
        txn = txn or self.id("txn")
        for seq, (account, amount, release) in enumerate(sorted(legs, key=lambda g: ORDER[g[0]])):
            await self.db.execute(
                "UPDATE ledger_accounts SET balance = balance + ?, held = held - ?, entry_seq = entry_seq + ?"
                " WHERE org_id = ? AND kind = ?", amount, release, int(amount != 0), org, account)
            if amount == 0:
                continue
            acct, account_seq, balance = (await self.db.query(
                "SELECT id, entry_seq, balance FROM ledger_accounts WHERE org_id = ? AND kind = ?", org, account))[0]
            await self.row("ledger_entries", txn_id=txn, seq=seq, account_id=acct, amount=amount,
                           account_seq=account_seq, balance_after=balance, created_at=at)
        fields = {"reverses": None, "request_id": None, "project_id": None, "key_id": None, "period": None,
                  "model_id": None, "price_version": None, "reason": "", "actor": "system", **meta}
        await self.row("ledger_transactions", id=txn, org_id=org, kind=kind, idempotency_key=key,
                       fingerprint=hashlib.sha256(f"{org}:{key}:{legs}".encode()).hexdigest(),
                       amount=sum(a for _, a, _ in legs if a > 0), created_at=at, **fields)
        return txn

    async def hold(self, org: str, project: str, key: str, amount: int, at: int, *, ttl: int = 600_000,
                   budget: int | None = None) -> dict[str, Any]:
        promo_free = (await self.db.query(
            "SELECT balance - held FROM ledger_accounts WHERE org_id = ? AND kind = 'promo'", org))[0][0]
        promo = min(amount, max(0, int(promo_free)))
        for scope, limit in ((key, budget), (project, None)):
            await self.db.execute(
                "INSERT INTO budget_usage (scope_id, period, org_id, held, limit_nanos) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (scope_id, period) DO UPDATE SET held = budget_usage.held + excluded.held,"
                " limit_nanos = excluded.limit_nanos", scope, period_of(at), org, amount, limit)
        for kind, part in (("promo", promo), ("wallet", amount - promo)):
            await self.db.execute("UPDATE ledger_accounts SET held = held + ? WHERE org_id = ? AND kind = ?",
                                  part, org, kind)
        h = {"id": self.id("hold"), "org_id": org, "project_id": project, "key_id": key,
             "request_id": self.id("req"), "model_id": MODEL, "price_version": 2, "endpoint": "chat",
             "backend_id": "sim", "client_ip": "203.0.113.7", "amount": amount, "promo_part": promo,
             "period": period_of(at), "status": "open", "expires_at": at + ttl, "created_at": at}
        await self.row("ledger_holds", **h)
        return h

    async def _unhold(self, h: dict[str, Any], spent: int) -> None:
        for scope in (h["key_id"], h["project_id"]):
            await self.db.execute("UPDATE budget_usage SET spent = spent + ?, held = held - ?"
                                  " WHERE scope_id = ? AND period = ?", spent, h["amount"], scope, h["period"])

    async def settle(self, h: dict[str, Any], tokens: tuple[int, int, int], at: int, status: int = 200) -> str | None:
        inp, cached, out = tokens
        cost = 0 if status != 200 else math.ceil(
            ((inp - cached) * PRICE_V2[0] + cached * PRICE_V2[1] + out * PRICE_V2[2]) / 1_000_000)
        txn = self.id("txn") if cost else None
        await self.db.execute("UPDATE ledger_holds SET status = 'settled', charged = ?, txn_id = ?, resolved_at = ?"
                              " WHERE id = ?", cost, txn, at, h["id"])
        await self._unhold(h, cost)
        promo_charge = min(cost, h["promo_part"])
        legs = [("promo", -promo_charge, h["promo_part"]),
                ("wallet", promo_charge - cost, h["amount"] - h["promo_part"])]
        if txn is None:
            for kind, _, release in legs:
                await self.db.execute("UPDATE ledger_accounts SET held = held - ? WHERE org_id = ? AND kind = ?",
                                      release, h["org_id"], kind)
        else:
            await self.post(h["org_id"], "charge", [*legs, ("revenue", cost, 0)], key=f"charge:{h['id']}", at=at,
                            txn=txn, request_id=h["request_id"], project_id=h["project_id"], key_id=h["key_id"],
                            period=h["period"], model_id=MODEL, price_version=2)
        await self.row("usage_records", request_id=h["request_id"], org_id=h["org_id"], project_id=h["project_id"],
                       key_id=h["key_id"], model_id=MODEL, backend_id="sim", endpoint="chat", status=status,
                       input_tokens=inp, cached_tokens=cached, output_tokens=out, cost_nanos=cost, price_version=2,
                       txn_id=txn, hold_id=h["id"], ttft_ms=120, latency_ms=640, cache_status=None,
                       client_ip=h["client_ip"], created_at=at)
        await self.event(h["org_id"], "request.completed", {"request_id": h["request_id"], "cost_nanos": cost}, at)
        return txn

    async def resolve(self, h: dict[str, Any], status: str, at: int) -> None:
        await self.db.execute("UPDATE ledger_holds SET status = ?, charged = 0, resolved_at = ? WHERE id = ?",
                              status, at, h["id"])
        await self._unhold(h, 0)
        for kind, part in (("promo", h["promo_part"]), ("wallet", h["amount"] - h["promo_part"])):
            await self.db.execute("UPDATE ledger_accounts SET held = held - ? WHERE org_id = ? AND kind = ?",
                                  part, h["org_id"], kind)


async def build_release_database(url: str, now: int | None = None) -> None:
    """Make the empty database at `url` what release c1e677f made it (its schema.sql applied, as that
    release's start-up did), then fill it (`fill`), in one transaction."""
    db = await connect(url)
    try:
        await db.begin()
        for statement in split_schema(RELEASE_SCHEMA.read_text(), db.dialect):
            await db.execute(statement)
        await db.execute("INSERT INTO config_version (id, version) VALUES (1, 1) ON CONFLICT (id) DO NOTHING")
        from tests.migrations.release_c1e677f_data import fill

        await fill(Seed(db, int(time.time() * 1000) if now is None else now))
        await db.commit()
    finally:
        await db.close()
