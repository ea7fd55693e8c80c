"""End to end through the real platform (Envoy, sidecar, adapter billing on the provider simulator,
control plane, worker): billed calls show up in `/v1/usage` with their exact charge, a
project-scoped key sees only its projects, bad parameters get OpenAI-shaped errors, and the usage
and ledger exports (API and `nx export`) reconcile to the nano-dollar."""

from __future__ import annotations

import csv
import io
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from core.money import parse_usd
from tests.inference.helpers import chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform, start_sim_platform

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


async def _tenant(sp: SimPlatform) -> tuple[str, str, str]:
    """(org id, unscoped key secret, secret of a key scoped to a second, idle project)."""
    async with sp.platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"u-{secrets.token_hex(4)}"})).json()["id"]
        r = await admin.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": 10**9},
                             headers={"idempotency-key": secrets.token_hex(8)})
        assert r.status_code == 201, r.text
        key = (await admin.post(f"/api/orgs/{org}/keys", json={"name": "all"})).json()["secret"]
        idle = (await admin.post(f"/api/orgs/{org}/projects", json={"name": "idle"})).json()["id"]
        scoped = await admin.post(f"/api/orgs/{org}/keys", json={"name": "idle", "projects": [idle]})
        assert scoped.status_code == 201, scoped.text
    return org, key, scoped.json()["secret"]


async def test_usage_and_exports_show_every_call_with_its_exact_charge(sp: SimPlatform) -> None:
    org, key, scoped_key = await _tenant(sp)
    t0 = int(time.time()) - 1
    charges = []
    async with sp.platform.client(key) as c:
        for _ in range(3):
            r = await c.post("/v1/chat/completions", json=chat_body(f"usage {marker()}"))
            assert r.status_code == 200, r.text
            charges.append(parse_usd(r.headers["x-wallet-debit"]))
        body = chat_body(f"usage stream {marker()}", stream=True)
        async with c.stream("POST", "/v1/chat/completions", json=body) as s:
            _events, comments, done = await read_sse(s)
        assert done
        charges.append(parse_usd(final_metadata(comments)["x-wallet-debit"]))
        r = await c.get("/v1/usage", params={"start_time": t0, "bucket_width": "1h", "group_by[]": ["model"]})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
        results = [x for b in page["data"] for x in b["results"]]
        assert [x["model"] for x in results] == ["sim/chat"] and results[0]["num_model_requests"] == 4
        assert results[0]["spend"]["nanos"] == sum(charges) > 0 and results[0]["num_errors"] == 0
        assert parse_usd(results[0]["spend"]["value"]) == sum(charges)
        assert results[0]["latency_ms"]["p50"] is not None and results[0]["input_tokens"] > 0
        r = await c.get("/v1/usage", params={"start_time": t0, "group_by": "project_id,api_key_id",
                                             "bucket_width": "1m", "limit": "5"})
        assert r.status_code == 200, r.text
        assert sum(x["num_model_requests"] for b in r.json()["data"] for x in b["results"]) == 4
        assert all(x["api_key_id"] and x["project_id"] and x["model"] is None
                   for b in r.json()["data"] for x in b["results"])
    async with sp.platform.client(scoped_key) as c:
        r = await c.get("/v1/usage", params={"start_time": t0})
        assert r.status_code == 200, r.text
        assert all(b["results"] == [] for b in r.json()["data"])
    await _exports_reconcile(sp, org, t0, len(charges), sum(charges))


async def _exports_reconcile(sp: SimPlatform, org: str, t0: int, calls: int, charged: int) -> None:
    period = {"from": str(t0), "to": str(int(time.time()) + 5)}
    async with sp.platform.admin() as admin:
        r = await admin.get(f"/api/orgs/{org}/exports/usage", params={**period, "format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == calls and sum(int(x["cost_nanos"]) for x in rows) == charged
        totals = (await admin.get(f"/api/orgs/{org}/exports/usage/totals", params=period)).json()
        assert totals["reconciled"] and totals["cost_nanos"] == totals["customer_debits_nanos"] == charged
        r = await admin.get(f"/api/orgs/{org}/exports/ledger", params={**period, "format": "jsonl"})
        lines = [msgspec.json.decode(x) for x in r.text.splitlines()]
        assert lines[-1]["object"] == "export.totals" and lines[-1]["reconciled"]
        assert sum(a["charges_nanos"] for a in lines[-1]["accounts"]) == charged
        assert sum(-x["amount_nanos"] for x in lines[:-1] if x["kind"] == "charge") == charged
        missing = await admin.get("/api/orgs/org_nope/exports/usage", params=period)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad = await admin.get(f"/api/orgs/{org}/exports/usage", params={"from": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
    out = Path(sp.tmp.name) / "usage.csv"
    cli = [sys.executable, "-c", "from control_plane.cli import main; main()"]
    args = ["export", "usage", "--org", org, "--from", period["from"], "--to", period["to"],
            "--out", str(out)]
    done = subprocess.run([*cli, *args],
                          env=sp.platform.env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert msgspec.json.decode(done.stderr)["cost_nanos"] == charged
    assert len(list(csv.DictReader(out.open()))) == calls


async def test_bootstrap_key_reads_its_usage_and_bad_parameters_are_refused(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        r = await c.get("/v1/usage", params={"start_time": int(time.time()) - 3600, "bucket_width": "1h"})
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "page" and len(r.json()["data"]) in (1, 2)
        other_org_project = sp.platform.boot.project_id if sp.platform.boot else ""
        cases: tuple[tuple[dict[str, str | int], int, str, str], ...] = (
                ({}, 400, "missing_required_parameter", "start_time"),
                ({"start_time": "soon"}, 400, "invalid_request_error", "start_time"),
                ({"start_time": 10, "bucket_width": "2h"}, 400, "invalid_request_error", "bucket_width"),
                ({"start_time": 10, "group_by": "colour"}, 400, "invalid_request_error", "group_by"),
                ({"start_time": 10, "limit": 1000}, 400, "invalid_request_error", "limit"),
                ({"start_time": 10, "end_time": 5}, 400, "invalid_request_error", "end_time"),
                ({"start_time": 10, "page": "page_bogus!"}, 400, "invalid_request_error", "page"),
                ({"start_time": 10, "user_ids": "u"}, 400, "unsupported_parameter", "user_ids"))
        for params, status, code, param in cases:
            r = await c.get("/v1/usage", params=params)
            assert r.status_code == status, (params, r.text)
            assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == param, r.text
    _org, key, _ = await _tenant(sp)
    async with sp.platform.client(key) as c:  # the bootstrap org's project id matches nothing here
        r = await c.get("/v1/usage", params={"start_time": 10, "project_ids": other_org_project})
        assert r.status_code == 200 and all(b["results"] == [] for b in r.json()["data"])
