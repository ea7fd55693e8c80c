"""Operator ledger API and `nx ledger` CLI on the real platform (Envoy, control plane, worker),
and the worker releasing an orphaned hold."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import msgspec
from sqlalchemy import text

from core import ledger
from core.db import make_engine, now_ms, read_tx, write_tx
from core.ids import new_id
from tests.harness import ROOT, Platform


def _url(p: Platform, tail: str) -> str:
    assert p.boot is not None
    return f"/api/orgs/{p.boot.org_id}/ledger{tail}"


async def test_grant_adjust_reverse_statement_reconcile(platform: Platform) -> None:
    async with platform.admin() as admin:
        key = {"idempotency-key": str(uuid.uuid4())}
        r = await admin.post(_url(platform, "/grants"), json={"amount_usd": "12.50", "reason": "welcome"}, headers=key)
        assert r.status_code == 201, r.text
        grant = r.json()
        assert grant["amount"] == 12_500_000_000 and grant["kind"] == "grant" and grant["id"].startswith("txn_")
        again = await admin.post(_url(platform, "/grants"), json={"amount_usd": "12.50", "reason": "welcome"},
                                 headers=key)
        assert again.json()["id"] == grant["id"]
        clash = await admin.post(_url(platform, "/grants"), json={"amount_usd": "13", "reason": "welcome"},
                                 headers=key)
        assert clash.status_code == 422 and clash.json()["error"]["code"] == "idempotency_key_reused"
        missing = await admin.post(_url(platform, "/grants"), json={"amount_nanos": 5})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "Idempotency-Key"
        both = await admin.post(_url(platform, "/grants"), json={"amount_nanos": 5, "amount_usd": "1"},
                                headers={"idempotency-key": "k-both"})
        assert both.status_code == 400
        floaty = await admin.post(_url(platform, "/grants"), json={"amount_nanos": 1.5},
                                  headers={"idempotency-key": "k-float"})
        assert floaty.status_code == 400  # a float is not an amount
        no_reason = await admin.post(_url(platform, "/adjustments"), json={"amount_nanos": -5, "reason": ""},
                                     headers={"idempotency-key": str(uuid.uuid4())})
        assert no_reason.status_code == 400
        adj = await admin.post(_url(platform, "/adjustments"), json={"amount_usd": "-0.50", "reason": "correction"},
                               headers={"idempotency-key": str(uuid.uuid4())})
        assert adj.status_code == 201 and adj.json()["amount"] == 500_000_000
        overdraw = await admin.post(_url(platform, "/adjustments"), json={"amount_usd": "-1000", "reason": "x"},
                                    headers={"idempotency-key": str(uuid.uuid4())})
        assert overdraw.status_code == 402 and overdraw.json()["error"]["code"] == "insufficient_quota"
        rev = await admin.post(_url(platform, f"/transactions/{adj.json()['id']}/reverse"), json={"reason": "undo"},
                               headers={"idempotency-key": str(uuid.uuid4())})
        assert rev.status_code == 201 and rev.json()["reverses"] == adj.json()["id"]
        bal = (await admin.get(_url(platform, "/balance"))).json()
        assert bal["wallet_nanos"] >= 12_500_000_000
        assert bal["available_nanos"] == bal["wallet_nanos"] + bal["promo_nanos"] - bal["held_nanos"]
        st = (await admin.get(_url(platform, "/statement"), params={"limit": 1000})).json()
        running = st["opening_balance"]
        for line in st["data"]:
            running += line["amount"]
            assert line["balance_after"] == running
        assert st["closing_balance"] == bal["wallet_nanos"]
        assert {grant["id"], adj.json()["id"], rev.json()["id"]} <= {line["txn_id"] for line in st["data"]}
        rec = await admin.get("/api/ledger/reconcile")
        assert rec.status_code == 200 and rec.json()["ok"] is True and rec.json()["drift"] == []
        other = await admin.get(f"/api/orgs/{new_id('org')}/ledger/balance")
        assert other.status_code == 404
        stranger = await admin.get(_url(platform, f"/transactions/{new_id('txn')}"))
        assert stranger.status_code == 404
    async with platform.client(base_url=platform.operator) as client:  # an API key is not the admin token
        denied = await client.get(_url(platform, "/balance"))
        assert denied.status_code == 401
    async with platform.client() as client:  # and the public edge does not serve the operator API
        assert (await client.get(_url(platform, "/balance"))).status_code == 404


def _nx(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from control_plane.cli import main; main()", "ledger", *args],
                          env=platform.env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)


async def test_cli_grant_balance_statement_reconcile(platform: Platform) -> None:
    assert platform.boot is not None
    org = platform.boot.org_id
    before = msgspec.json.decode(_nx(platform, "balance", "--org", org).stdout)["wallet_nanos"]
    done = _nx(platform, "grant", "--org", org, "--amount", "0.000000007", "--idempotency-key", "cli-1")
    assert done.returncode == 0, done.stderr
    assert _nx(platform, "grant", "--org", org, "--amount", "0.000000007", "--idempotency-key", "cli-1").returncode == 0
    after = msgspec.json.decode(_nx(platform, "balance", "--org", org).stdout)["wallet_nanos"]
    assert after == before + 7  # once, though submitted twice
    bad = _nx(platform, "grant", "--org", org, "--amount", "1.5e3")
    assert bad.returncode == 2 and "USD amount" in bad.stderr
    st = msgspec.json.decode(_nx(platform, "statement", "--org", org, "--limit", "1000").stdout)
    assert st["closing_balance"] == after
    rec = _nx(platform, "reconcile")
    assert rec.returncode == 0 and msgspec.json.decode(rec.stdout)["ok"] is True
    assert _nx(platform, "balance", "--org", "org_missing").returncode == 1


async def test_worker_releases_orphaned_holds(platform: Platform) -> None:
    assert platform.boot is not None and platform.settings is not None
    boot = platform.boot
    engine = make_engine(platform.settings)
    try:
        async with write_tx(engine) as conn:
            await ledger.grant(conn, boot.org_id, 10**9, idempotency_key=new_id("req"), actor="test")
            model = str((await conn.execute(text("SELECT model_id FROM price_cards LIMIT 1"))).scalar_one())
            orphan = await ledger.place_hold(
                conn, org_id=boot.org_id, project_id=boot.project_id, key_id=boot.key_id,
                request_id=new_id("req"), model_id=model, endpoint="responses", backend_id="local",
                max_input_tokens=1000, max_output_tokens=1000, expires_at_ms=now_ms() - 1)
        for _ in range(300):  # the worker sweeps every 2 s; give it up to a minute
            async with read_tx(engine) as conn:
                status = (await ledger.load_hold(conn, orphan.id))
            if status is not None and status.status != "open":
                break
            await asyncio.sleep(0.2)
        assert status is not None and status.status == "expired"
        async with read_tx(engine) as conn:
            assert (await ledger.reconcile(conn, boot.org_id)).ok
    finally:
        await engine.dispose()
