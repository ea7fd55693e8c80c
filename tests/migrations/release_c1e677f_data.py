"""The rows of the release-c1e677f database (see release_c1e677f.py): who, what and how much."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

from tests.migrations.release_c1e677f import (
    DAY,
    KEY_SECRET,
    MODEL,
    ORG_A,
    PEPPER,
    PRICE_V2,
    Seed,
    release_key,
    release_key_hash,
    release_seal,
)

HOUR = 3_600_000
USD = 1_000_000_000
IDEMPOTENT_REQUEST = b'{"model": "sim-chat", "messages": [{"role": "user", "content": "order 0"}]}'
IDEMPOTENT_ANSWER = b'{"id": "chatcmpl-release-0", "object": "chat.completion", "model": "sim-chat"}'
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
WEBHOOK_PREVIOUS_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


async def _catalog(s: Seed, t0: int) -> None:
    await s.row("plans", id="pro", rpm=60000, tpm=100_000_000, concurrent=1024)
    for be, protocol in (("sim", "openai"), ("sim_ant", "anthropic")):
        await s.row("backends", id=be, protocol=protocol, base_url="http://127.0.0.1:9/v1",
                    api_key_env="NX_TEST_SIM_KEY", timeout_ms=5000, connect_timeout_ms=5000, enabled=1,
                    created_at=t0, updated_at=t0)
    for model, kind in ((MODEL, "text"), ("sim/embed", "embedding")):
        await s.row("models", id=model, display_name=model, description="", backend_id="sim",
                    upstream_name=f"{model}-upstream", kind=kind, context_window=8192,
                    max_output_tokens=1024 if kind == "text" else 0, capabilities='{"streaming": true}',
                    status="active", created_at=t0, updated_at=t0)
    cards = [(MODEL, 1, (2_000_000_000, 1_000_000_000, 4_000_000_000), 1_735_689_600_000),
             (MODEL, 2, PRICE_V2, 1_767_225_600_000), ("sim/embed", 1, (1_000_000_000, 500_000_000, 0), 0)]
    for model, version, (i, c, o), effective in cards:
        await s.row("price_cards", id=s.id("price"), model_id=model, version=version, input_nanos_per_mtok=i,
                    cached_input_nanos_per_mtok=c, output_nanos_per_mtok=o, effective_at=effective, created_at=t0)
    await s.row("routes", alias="sim-chat", model_id=MODEL, created_at=t0, updated_at=t0)


async def _tenants(s: Seed, t0: int) -> dict[str, str]:
    ids = {"A": ORG_A, "B": s.id("org"), "C": s.id("org")}
    for tag, name, plan in (("A", "Acme", "default"), ("B", "Globex", "pro"), ("C", "Initech", "default")):
        await s.row("organizations", id=ids[tag], name=name, plan=plan, created_at=t0)
        ids[f"proj{tag}"] = s.id("proj")
        await s.row("projects", id=ids[f"proj{tag}"], org_id=ids[tag], name="Default project",
                    monthly_budget_nanos=None, rate_limits="{}", archived=0, created_at=t0)
    ids["research"] = s.id("proj")
    await s.row("projects", id=ids["research"], org_id=ORG_A, name="Research", monthly_budget_nanos=30 * USD,
                rate_limits='{"rpm": 600}', archived=0, created_at=t0 + 1)
    for email, name, admin, org, role in (("owner@localhost", "Owner", 1, ORG_A, "owner"),
                                          ("alice@acme.test", "Alice", 0, ORG_A, "admin"),
                                          ("bob@globex.test", "Bob", 0, ids["B"], "billing")):
        user = s.id("user")
        await s.row("users", id=user, email=email, name=name, password_hash=None, is_platform_admin=admin,
                    created_at=t0)
        await s.row("memberships", id=s.id("mem"), org_id=org, user_id=user, role=role, created_at=t0)
    signing = release_seal("nxsig_release-signing-secret", f"nx-secretbox\x00request-signing\x00{PEPPER}".encode(),
                           b"request-signing")
    keys = [("keyA", ORG_A, "production", KEY_SECRET, {"monthly_budget_nanos": 20 * USD}),
            ("keyR", ORG_A, "research", release_key("research"), {"projects": json.dumps([ids["research"]])}),
            ("keyX", ORG_A, "revoked", release_key("revoked"), {"revoked_at": t0 + DAY}),
            ("keyE", ORG_A, "expired", release_key("expired"), {"expires_at": t0 + 2 * DAY}),
            ("keyS", ORG_A, "signed", release_key("signed"), {"signing_secret_enc": signing}),
            ("keyB", ids["B"], "globex", release_key("globex"), {"models": json.dumps([MODEL])})]
    for tag, org, name, secret, extra in keys:
        ids[tag] = s.id("key")
        await s.row("api_keys", id=ids[tag], org_id=org, name=name, prefix=secret[:14],
                    key_hash=release_key_hash(secret), created_by="cli", created_at=t0, updated_at=t0, **extra)
    for org, action, target in ((ORG_A, "bootstrap", ORG_A), (ORG_A, "key.create", ids["keyA"]),
                                (ORG_A, "key.revoke", ids["keyX"]), (ids["B"], "org.create", ids["B"])):
        await s.row("audit_log", id=s.id("aud"), org_id=org, actor="admin", action=action, target=target,
                    details='{"via": "cli"}', created_at=t0 + 10)
    return ids


async def _ledger(s: Seed, ids: dict[str, str], t0: int) -> None:
    now, a, b = s.now, ORG_A, ids["B"]
    pa, pr, ka, kr = ids["projA"], ids["research"], ids["keyA"], ids["keyR"]
    for org in (a, b):
        await s.accounts(org, t0)
    await s.post(a, "grant", [("wallet", 50 * USD, 0), ("clearing", -50 * USD, 0)], key=f"grant:{a}:inv-1001",
                 at=t0 + HOUR, actor="cli", reason="invoice 1001")
    await s.post(a, "promo_grant", [("promo", 4_000_000, 0), ("promotions", -4_000_000, 0)],
                 key=f"promo_grant:{a}:bootstrap", at=t0 + HOUR, reason="first-start credit")
    await s.post(b, "grant", [("wallet", 10 * USD, 0), ("clearing", -10 * USD, 0)], key=f"grant:{b}:inv-2001",
                 at=t0 + HOUR, actor="cli")
    await s.db.execute("UPDATE ledger_accounts SET low_balance_nanos = ? WHERE org_id = ? AND kind = 'wallet'",
                       5 * USD, a)
    charges = []
    # Last month and this month: paid from promotional credit first, then from the wallet.
    times = [t0 + 2 * HOUR + i * 7 * HOUR for i in range(6)] + [now - 3 * HOUR - i * HOUR for i in range(4)]
    for n, at in enumerate(times):
        scope = (pr, kr) if n % 3 == 2 else (pa, ka)
        h = await s.hold(a, scope[0], scope[1], 5_000_000 + n * 1_000_000, at - 2000,
                         budget=20 * USD if scope[1] == ka else None)
        charges.append(await s.settle(h, (1200 + 100 * n, 200, 300 + 50 * n), at))
    failed = await s.hold(a, pa, ka, 3_000_000, now - 50 * 60_000, budget=20 * USD)
    await s.settle(failed, (0, 0, 0), now - 50 * 60_000 + 900, status=502)
    released = await s.hold(a, pa, ka, 2_000_000, now - 40 * 60_000, budget=20 * USD)
    await s.resolve(released, "released", now - 40 * 60_000 + 30)
    expired = await s.hold(a, pa, ka, 2_500_000, now - 30 * 60_000, budget=20 * USD, ttl=60_000)
    await s.resolve(expired, "expired", now - 28 * 60_000)
    for n in range(2):  # requests still running when the operator stopped the release
        await s.hold(a, pa, ka, 4_000_000, now - 60_000 + n, budget=20 * USD)
    hb = await s.hold(b, ids["projB"], ids["keyB"], 8_000_000, now - 2 * HOUR)
    await s.settle(hb, (4000, 0, 900), now - 2 * HOUR + 700)
    refund = charges[-1]
    assert refund is not None
    legs = [(str(r[0]), -int(r[1]), 0) for r in await s.db.query(
        "SELECT a.kind, e.amount FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
        " WHERE e.txn_id = ?", refund)]
    meta = (await s.db.query("SELECT request_id, project_id, key_id, period, amount FROM ledger_transactions"
                             " WHERE id = ?", refund))[0]
    await s.post(a, "reversal", legs, key=f"reversal:{a}:ticket-77", at=now - HOUR, reverses=refund,
                 request_id=meta[0], project_id=meta[1], key_id=meta[2], period=meta[3], model_id=MODEL,
                 price_version=2, actor="cli", reason="support ticket 77")
    for scope in (meta[1], meta[2]):
        await s.db.execute("UPDATE budget_usage SET spent = spent - ? WHERE scope_id = ? AND period = ?",
                           meta[4], scope, meta[3])
    await s.post(a, "adjustment", [("wallet", -250_000_000, 0), ("adjustments", 250_000_000, 0)],
                 key=f"adjustment:{a}:chargeback-3", at=now - 20 * 60_000, actor="cli", reason="chargeback fee")
    period = (await s.db.query("SELECT period FROM ledger_transactions WHERE id = ?", charges[0]))[0][0]
    await s.row("threshold_crossings", org_id=a, scope_kind="key", scope_id=ka, period=period, threshold="50pct",
                txn_id=charges[0], value_nanos=10 * USD, limit_nanos=20 * USD, created_at=t0 + 3 * HOUR)
    await s.event(a, "usage.threshold_reached", {"scope": "key", "scope_id": ka}, t0 + 3 * HOUR,
                  dedup=f"threshold:key:{ka}:{period}:50pct")


async def _rollups(s: Seed, t0: int) -> None:
    """The worker's hourly and daily rollups of last month's records, and its watermarks."""
    rows = await s.db.query(
        "SELECT org_id, project_id, key_id, model_id, endpoint, status, input_tokens, cached_tokens, output_tokens,"
        " cost_nanos, created_at FROM usage_records WHERE created_at < ?", s.now - DAY)
    watermark = (s.now - DAY) // DAY * DAY
    for grain, size in (("hour", HOUR), ("day", DAY)):
        buckets: dict[tuple[object, ...], list[int]] = {}
        for r in rows:
            if r[10] < watermark:
                acc = buckets.setdefault((r[10] // size * size, *r[:6]), [0, 0, 0, 0, 0, 0])
                for i, v in enumerate((1, int(r[5] >= 400), r[6], r[7], r[8], r[9])):
                    acc[i] += int(v)
        for (start, org, proj, key, model, endpoint, status), acc in buckets.items():
            lat = {f"lat_{i:02d}": (acc[0] if i == 20 else 0) for i in range(40)}
            await s.row("usage_rollups", grain=grain, bucket_start=start, org_id=org, project_id=proj, key_id=key,
                        model_id=model, endpoint=endpoint, status=status, requests=acc[0], errors=acc[1],
                        input_tokens=acc[2], cached_tokens=acc[3], output_tokens=acc[4], cost_nanos=acc[5], **lat)
        await s.row("usage_rollup_state", grain=grain, watermark=watermark, updated_at=t0)


async def _webhooks(s: Seed, ids: dict[str, str], t0: int) -> None:
    def sealed(secret: str) -> str:
        return release_seal(secret, b"nx-webhook-secrets\x00" + PEPPER.encode(), b"whsec")

    live, old = s.id("whep"), s.id("whep")
    await s.row("webhook_endpoints", id=live, org_id=ORG_A, url="https://hooks.acme.test/nx", description="billing",
                event_types='["*", "request.completed"]', project_id=None, secret_enc=sealed(WEBHOOK_SECRET),
                previous_secret_enc=sealed(WEBHOOK_PREVIOUS_SECRET),
                previous_secret_expires_at=s.now + DAY, enabled=1, created_at=t0, updated_at=s.now - HOUR)
    await s.row("webhook_endpoints", id=old, org_id=ORG_A, url="https://old.acme.test/hook", description="",
                event_types='["request.completed"]', project_id=ids["projA"],
                secret_enc=sealed("whsec_" + base64.b64encode(b"x" * 32).decode()), enabled=0,
                disabled_reason="failing", disabled_at=t0 + 5 * DAY, failing_since=t0 + 2 * DAY, created_at=t0,
                updated_at=t0 + 5 * DAY)
    events = [str(r[0]) for r in await s.db.query("SELECT id FROM events WHERE org_id = ? ORDER BY id LIMIT 4", ORG_A)]
    states = [("succeeded", 1, None), ("failed", 3, None), ("pending", 2, s.now + DAY), ("succeeded", 1, None)]
    for n, (event, (status, attempts, due)) in enumerate(zip(events, states, strict=True)):
        dlv = s.id("dlv")
        await s.row("webhook_deliveries", id=dlv, org_id=ORG_A, endpoint_id=old if n == 1 else live, event_id=event,
                    kind="replay" if n == 3 else "event", status=status, attempts=attempts, next_attempt_at=due,
                    last_error=None if status == "succeeded" else "HTTP 503", created_at=t0 + n, updated_at=t0 + n)
        for attempt in range(1, attempts + 1):
            ok = status == "succeeded" and attempt == attempts
            await s.row("webhook_attempts", delivery_id=dlv, attempt=attempt, endpoint_id=old if n == 1 else live,
                        started_at=t0 + attempt * 1000, status_code=200 if ok else 503, latency_ms=80 + attempt,
                        error=None if ok else "HTTP 503", response_excerpt="ok" if ok else "busy",
                        next_attempt_at=None if ok else t0 + attempt * 5000)


async def _responses(s: Seed, ids: dict[str, str], t0: int) -> None:
    for n, background in enumerate((0, 1)):
        resp, at = s.id("resp"), s.now - (5 - n) * HOUR
        body = {"id": resp, "object": "response", "status": "completed", "model": "sim-chat",
                "output": [{"type": "message", "id": f"msg_{n}", "role": "assistant",
                            "content": [{"type": "output_text", "text": "Hello from the release."}]}]}
        await s.row("responses", id=resp, org_id=ORG_A, project_id=ids["projA"], key_id=ids["keyA"],
                    request_id=s.id("req"), model_id=MODEL, backend_id="sim", requested_model="sim-chat",
                    status="completed", background=background, previous_response_id=None,
                    request=json.dumps({"model": "sim-chat", "input": "Say hello", "background": bool(background)}),
                    body=json.dumps(body), input_tokens=9, cached_tokens=0, output_tokens=6, created_at=at,
                    updated_at=at + 800)
        for kind, item in (("input", {"type": "message", "role": "user", "content": "Say hello"}),
                           ("output", body["output"][0])):
            await s.row("response_items", response_id=resp, kind=kind, position=0, item_id=f"{kind}_{n}",
                        item=json.dumps(item))
        if background:
            await s.row("response_jobs", response_id=resp, state="done", lease_owner=None, lease_until=None,
                        attempts=1, base_seq=0, created_at=at, updated_at=at + 800)
            for seq, kind in enumerate(("response.created", "response.output_text.delta", "response.completed")):
                await s.row("response_events", response_id=resp, seq=seq, type=kind,
                            data=json.dumps({"type": kind, "sequence_number": seq}), created_at=at + seq)


async def _caches(s: Seed, ids: dict[str, str]) -> None:
    # As the release stored an answer: SHA-256 of the request's bytes, headers as [name, value]
    # pairs, the body in base64 (plain: sealing stored answers came later).
    for state, n in (("completed", 0), ("in_flight", 1)):
        done = state == "completed"
        await s.row("idempotency_keys", id=s.id("idem"), org_id=ORG_A, key_id=ids["keyA"], method="POST",
                    path="/v1/chat/completions", idem_key=f"order-{n}",
                    request_hash=hashlib.sha256(IDEMPOTENT_REQUEST if done else b"{}").hexdigest(),
                    request_id=s.id("req"), state=state, lease_expires_at=s.now - 1000,
                    response_status=200 if done else None,
                    response_headers=json.dumps([["content-type", "application/json"], ["x-model", "sim-chat"]])
                    if done else None,
                    response_body=base64.b64encode(IDEMPOTENT_ANSWER).decode() if done else None,
                    created_at=s.now - HOUR, completed_at=s.now - HOUR + 500 if done else None)
    for text in ("hello", "world"):
        vector = base64.b64encode(struct.pack("<8f", *[0.125 * i for i in range(8)])).decode()
        await s.row("embedding_cache", org_id=ORG_A, entry_key=hashlib.sha256(text.encode()).hexdigest(),
                    model_id="sim/embed", tokens=2, vector=vector, created_at=s.now - DAY, last_used_at=s.now - HOUR)


async def fill(s: Seed) -> None:
    t0 = s.now - 35 * DAY
    await _catalog(s, t0)
    ids = await _tenants(s, t0)
    await _ledger(s, ids, t0)
    await _rollups(s, t0)
    await _webhooks(s, ids, t0)
    await _responses(s, ids, t0)
    await _caches(s, ids)
    await s.db.execute("UPDATE config_version SET version = 42 WHERE id = 1")
