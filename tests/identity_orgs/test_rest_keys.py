"""Done-when path of the customer REST API: a key made through `/v1/organization/projects/{id}/api_keys`
with scopes calls `/v1/responses` through the edge, and its scopes hold there."""

from __future__ import annotations

import time

from tests.identity_orgs.conftest import error_code, new_org, org_client
from tests.inference.support import SimPlatform


async def test_a_key_made_through_the_rest_api_calls_responses_within_its_scopes(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, credit_nanos=10**9)
    async with org_client(p, org.admin_key) as c:
        r = await c.post("/v1/organization/projects", json={"name": "Search", "monthly_budget_nanos": 5 * 10**8})
        assert r.status_code == 201, r.text
        project = r.json()["id"]
        scopes = {"name": "search-bot", "models": ["sim-chat", "sim/*"], "endpoints": ["responses", "models"],
                  "ip_ranges": ["127.0.0.0/8", "::1/128"], "monthly_budget_nanos": 10**8,
                  "expires_at": int(time.time()) + 3600, "rate_limits": {"rpm": 100, "concurrent": 4}}
        r = await c.post(f"/v1/organization/projects/{project}/api_keys", json=scopes)
        assert r.status_code == 201, r.text
        made = r.json()
        key_id, secret = made["key"]["id"], made["secret"]
        assert secret.startswith("nx_live_") and made["key"]["projects"] == [project]
        for field in ("models", "endpoints", "monthly_budget_nanos", "expires_at", "rate_limits"):
            assert made["key"][field] == scopes[field], field
        listed = (await c.get(f"/v1/organization/projects/{project}/api_keys")).json()
        assert [k["id"] for k in listed["data"]] == [key_id] and secret not in str(listed)
        # the default project does not list it
        default = (await c.get(f"/v1/organization/projects/{org.project_id}/api_keys")).json()["data"]
        assert key_id not in {k["id"] for k in default}

    async with p.client(secret) as inference:
        r = await inference.post("/v1/responses", json={"model": "sim-chat", "input": "hello from REST"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
        r = await inference.post("/v1/embeddings", json={"model": "sim-chat", "input": "x"})
        assert r.status_code == 403 and error_code(r) == "endpoint_not_allowed", r.text
        r = await inference.post("/v1/responses", json={"model": "orion-reason", "input": "x"})
        assert r.status_code == 403 and error_code(r) == "model_not_allowed", r.text

    async with org_client(p, org.admin_key) as c:
        r = await c.post(f"/v1/organization/projects/{project}/api_keys/{key_id}", json={"models": ["orion-reason"]})
        assert r.status_code == 200 and r.json()["models"] == ["orion-reason"], r.text
    async with p.client(secret) as inference:
        r = await inference.post("/v1/responses", json={"model": "sim-chat", "input": "x"})
        assert r.status_code == 403 and error_code(r) == "model_not_allowed", r.text

    async with org_client(p, org.admin_key) as c:
        r = await c.delete(f"/v1/organization/projects/{project}/api_keys/{key_id}")
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
        assert (await c.get(f"/v1/organization/projects/{project}/api_keys/{key_id}")).json()["revoked"] is True
        actions = [e["type"] for e in (await c.get("/v1/organization/audit_logs")).json()["data"]]
        assert actions[:3] == ["key.revoked", "key.updated", "key.created"], actions
    async with p.client(secret) as inference:
        r = await inference.post("/v1/responses", json={"model": "orion-reason", "input": "x"})
        assert r.status_code == 401 and error_code(r) == "invalid_api_key", r.text


async def test_project_keys_refuse_bad_scopes_and_foreign_projects(sp: SimPlatform) -> None:
    p = sp.platform
    org, other = await new_org(p), await new_org(p)
    async with org_client(p, org.admin_key) as c:
        base = f"/v1/organization/projects/{org.project_id}/api_keys"
        for body, param in (({"ip_ranges": ["not-a-cidr"]}, "ip_ranges"),
                            ({"projects": [other.project_id]}, "projects"),
                            ({"expires_at": 1}, "expires_at"), ({"endpoints": ["everything"]}, None)):
            r = await c.post(base, json=body)
            assert r.status_code == 400, (body, r.text)
            if param:
                assert r.json()["error"]["param"] == param, r.text
        key = (await c.post(base, json={"name": "k"})).json()["key"]["id"]
        r = await c.post(f"{base}/{key}", json={"projects": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "projects", r.text


async def test_lists_paginate_with_limit_and_after(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p)
    async with org_client(p, org.admin_key) as c:
        made = [(await c.post("/v1/organization/projects", json={"name": f"p{i}"})).json()["id"] for i in range(4)]
        seen: list[str] = []
        after = None
        while True:
            params = {"limit": 2, **({"after": after} if after else {})}
            page = (await c.get("/v1/organization/projects", params=params)).json()
            seen += [x["id"] for x in page["data"]]
            assert page["object"] == "list" and len(page["data"]) <= 2
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == sorted([org.project_id, *made])
        assert (await c.get("/v1/organization/projects", params={"limit": 0})).status_code == 400
        assert (await c.get("/v1/organization/projects", params={"limit": 101})).status_code == 400
        audit = (await c.get("/v1/organization/audit_logs", params={"limit": 2})).json()
        assert len(audit["data"]) == 2 and audit["has_more"] is True
        rest = (await c.get("/v1/organization/audit_logs", params={"limit": 100, "after": audit["last_id"]})).json()
        assert not {e["id"] for e in rest["data"]} & {e["id"] for e in audit["data"]}
        assert all(a["id"] > b["id"] for a, b in zip(rest["data"], rest["data"][1:], strict=False))
