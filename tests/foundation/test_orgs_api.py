"""Organizations, projects and members through the management API; another organization's ids
answer exactly like made-up ones."""

from __future__ import annotations

import time

from tests.foundation.conftest import assert_error, make_key, make_org
from tests.harness import Platform


def _same_404(a: dict[str, object], b: dict[str, object], real: str, fake: str) -> None:
    assert a["code"] == b["code"] == "not_found"
    assert str(a["message"]).replace(real, "ID") == str(b["message"]).replace(fake, "ID")
    assert a["param"] == b["param"]


async def test_org_project_member_lifecycle(platform: Platform) -> None:
    org = await make_org(platform, "Lifecycle Inc", owner_email=f"owner-{time.time_ns()}@example.com")
    oid = org["id"]
    assert oid.startswith("org_") and org["object"] == "organization"
    async with platform.admin() as a:
        projects = (await a.get(f"/api/orgs/{oid}/projects")).json()["data"]
        assert [p["name"] for p in projects] == ["Default project"]
        r = await a.post(f"/api/orgs/{oid}/projects", json={"name": "Search",
                                                            "monthly_budget_nanos": 5 * 10**9})
        assert r.status_code == 201 and r.json()["id"].startswith("proj_"), r.text
        pid = r.json()["id"]
        assert_error(await a.post(f"/api/orgs/{oid}/projects", json={"name": "Search"}), 409, "conflict")
        assert_error(await a.post(f"/api/orgs/{oid}/projects", json={"name": ""}), 400,
                     "invalid_request_error")
        assert_error(await a.post(f"/api/orgs/{oid}/projects", json={"name": "x",
                                                                     "monthly_budget_nanos": -1}),
                     400, "invalid_request_error")
        r = await a.patch(f"/api/orgs/{oid}/projects/{pid}", json={"archived": True,
                                                                   "monthly_budget_nanos": None})
        assert r.json()["archived"] is True and r.json()["monthly_budget_nanos"] is None

        members = (await a.get(f"/api/orgs/{oid}/members")).json()["data"]
        assert [m["role"] for m in members] == ["owner"]
        owner = members[0]["user_id"]
        r = await a.post(f"/api/orgs/{oid}/members", json={"email": "Billing@Example.com", "role": "billing"})
        assert r.status_code == 201 and r.json()["email"] == "billing@example.com", r.text
        billing = r.json()["user_id"]
        assert_error(await a.post(f"/api/orgs/{oid}/members", json={"user_id": billing, "role": "member"}),
                     409, "conflict")
        assert_error(await a.post(f"/api/orgs/{oid}/members", json={"email": "x@y.z", "role": "god"}),
                     400, "invalid_request_error")
        # the last owner can neither leave nor be demoted
        assert_error(await a.patch(f"/api/orgs/{oid}/members/{owner}", json={"role": "admin"}), 409,
                     "conflict")
        assert_error(await a.delete(f"/api/orgs/{oid}/members/{owner}"), 409, "conflict")
        assert (await a.patch(f"/api/orgs/{oid}/members/{billing}",
                              json={"role": "owner"})).status_code == 200
        assert (await a.patch(f"/api/orgs/{oid}/members/{owner}",
                              json={"role": "admin"})).json()["role"] == "admin"
        assert (await a.delete(f"/api/orgs/{oid}/members/{owner}")).status_code == 200
        assert [m["user_id"] for m in (await a.get(f"/api/orgs/{oid}/members")).json()["data"]] == [billing]
        r = await a.patch(f"/api/orgs/{oid}", json={"name": "Renamed Inc"})
        assert r.json()["name"] == "Renamed Inc"


async def test_new_project_is_usable_at_once(platform: Platform) -> None:
    org = await make_org(platform, "Fresh projects")
    async with platform.admin() as a:
        pid = (await a.post(f"/api/orgs/{org['id']}/projects", json={"name": "Now"})).json()["id"]
    _, secret = await make_key(platform, org["id"], projects=[pid])
    async with platform.client(secret) as c:
        r = await c.get("/v1/models", headers={"openai-project": pid})
    assert r.status_code == 200, r.text


async def test_other_orgs_ids_look_missing(platform: Platform) -> None:
    assert platform.boot is not None
    a_org = platform.boot.org_id
    b_org = (await make_org(platform, "Tenant B", owner_email=f"b-{time.time_ns()}@example.com"))["id"]
    b_key, b_secret = await make_key(platform, b_org, name="b's key")
    async with platform.admin() as a:
        b_project = (await a.get(f"/api/orgs/{b_org}/projects")).json()["data"][0]["id"]
        b_member = (await a.get(f"/api/orgs/{b_org}/members")).json()["data"][0]["user_id"]
        cases = [
            ("GET", f"/api/orgs/{a_org}/keys/{{}}", b_key, "key_00000000000000000000000000"),
            ("PATCH", f"/api/orgs/{a_org}/keys/{{}}", b_key, "key_00000000000000000000000000"),
            ("POST", f"/api/orgs/{a_org}/keys/{{}}/revoke", b_key, "key_00000000000000000000000000"),
            ("GET", f"/api/orgs/{a_org}/projects/{{}}", b_project, "proj_00000000000000000000000000"),
            ("PATCH", f"/api/orgs/{a_org}/projects/{{}}", b_project, "proj_00000000000000000000000000"),
            ("GET", f"/api/orgs/{a_org}/members/{{}}", b_member, "user_00000000000000000000000000"),
            ("DELETE", f"/api/orgs/{a_org}/members/{{}}", b_member, "user_00000000000000000000000000"),
        ]
        for method, template, real, fake in cases:
            body = {"name": "hijack"} if method == "PATCH" else None
            r_real = await a.request(method, template.format(real), json=body)
            r_fake = await a.request(method, template.format(fake), json=body)
            assert r_real.status_code == r_fake.status_code == 404, (method, template, r_real.text)
            _same_404(r_real.json()["error"], r_fake.json()["error"], real, fake)
        a_keys = {k["id"] for k in (await a.get(f"/api/orgs/{a_org}/keys")).json()["data"]}
        assert b_key not in a_keys
        assert_error(await a.get("/api/orgs/org_00000000000000000000000000/keys"), 404, "not_found")
    # B's key is untouched by all of the above
    async with platform.client(b_secret) as c:
        assert (await c.get("/v1/models")).status_code == 200
