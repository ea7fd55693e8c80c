"""Admin keys: made by the operator or an organization's owners and admins, hashed, answered
once, scoped to one organization; an admin key of one organization can never touch another."""

from __future__ import annotations

from tests.identity_orgs.conftest import error_code, new_org, org_client
from tests.inference.support import SimPlatform


async def test_an_admin_key_is_answered_once_and_works_until_revoked(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p)
    async with org_client(p, org.admin_key) as c:
        r = await c.post("/v1/organization/admin_api_keys", json={"name": "automation"})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["value"].startswith("nx_admin_") and made["object"] == "organization.admin_api_key"
        listed = (await c.get("/v1/organization/admin_api_keys")).json()
        assert made["id"] in {k["id"] for k in listed["data"]}
        assert all("value" not in k for k in listed["data"])
        assert made["value"] not in str(listed)
        fetched = (await c.get(f"/v1/organization/admin_api_keys/{made['id']}")).json()
        assert fetched["redacted_value"] == made["redacted_value"] and fetched["revoked_at"] is None
    async with org_client(p, made["value"]) as second:
        assert (await second.get("/v1/organization/projects")).status_code == 200
        assert (await second.get(f"/v1/organization/admin_api_keys/{made['id']}")).json()["last_used_at"] >= \
            made["created_at"]
        r = await second.delete(f"/v1/organization/admin_api_keys/{made['id']}")
        assert r.status_code == 200 and r.json() == {"id": made["id"], "object": "organization.admin_api_key.deleted",
                                                     "deleted": True}
        r = await second.get("/v1/organization/projects")
        assert r.status_code == 401 and error_code(r) == "invalid_api_key", r.text
    async with org_client(p, org.admin_key) as c:
        audit = (await c.get("/v1/organization/audit_logs", params={"type": "admin_key.revoked"})).json()["data"]
        assert [(e["target"], e["actor"]["type"], e["actor"]["id"]) for e in audit] == [
            (made["id"], "admin_key", made["id"])]
        assert audit[0]["actor"]["ip_address"] == "127.0.0.1"


async def test_an_admin_key_of_one_organization_can_never_touch_another(sp: SimPlatform) -> None:
    p = sp.platform
    mine, theirs = await new_org(p, roles=("developer",)), await new_org(p, roles=("developer",))
    async with org_client(p, theirs.admin_key) as t:
        key = (await t.post(f"/v1/organization/projects/{theirs.project_id}/api_keys", json={"name": "x"})).json()
        invite = (await t.post("/v1/organization/invites", json={"email": "x@example.com", "role": "reader"})).json()
        admin_key = (await t.post("/v1/organization/admin_api_keys", json={})).json()
    other = [
        ("GET", f"/v1/organization/projects/{theirs.project_id}", None),
        ("POST", f"/v1/organization/projects/{theirs.project_id}", {"name": "mine now"}),
        ("POST", f"/v1/organization/projects/{theirs.project_id}/archive", None),
        ("POST", f"/v1/organization/projects/{theirs.project_id}/budget", {"monthly_budget_nanos": 1}),
        ("GET", f"/v1/organization/projects/{theirs.project_id}/api_keys", None),
        ("POST", f"/v1/organization/projects/{theirs.project_id}/api_keys", {"name": "mine"}),
        ("GET", f"/v1/organization/projects/{theirs.project_id}/api_keys/{key['key']['id']}", None),
        ("DELETE", f"/v1/organization/projects/{theirs.project_id}/api_keys/{key['key']['id']}", None),
        # their key id under my own project: still not found
        ("GET", f"/v1/organization/projects/{mine.project_id}/api_keys/{key['key']['id']}", None),
        ("DELETE", f"/v1/organization/projects/{mine.project_id}/api_keys/{key['key']['id']}", None),
        ("GET", f"/v1/organization/users/{theirs.owner_id}", None),
        ("POST", f"/v1/organization/users/{theirs.members['developer']}", {"role": "reader"}),
        ("DELETE", f"/v1/organization/users/{theirs.members['developer']}", None),
        ("GET", f"/v1/organization/invites/{invite['id']}", None),
        ("DELETE", f"/v1/organization/invites/{invite['id']}", None),
        ("GET", f"/v1/organization/admin_api_keys/{admin_key['id']}", None),
        ("DELETE", f"/v1/organization/admin_api_keys/{admin_key['id']}", None),
    ]
    async with org_client(p, mine.admin_key) as c:
        for method, path, body in other:
            r = await c.request(method, path, json=body)
            assert r.status_code == 404 and error_code(r) == "not_found", (method, path, r.text)
            made_up = path.replace(theirs.project_id, "proj_00000000000000000000000000")
            for real in (key["key"]["id"], theirs.owner_id, theirs.members["developer"], invite["id"],
                         admin_key["id"]):
                made_up = made_up.replace(real, real[:-4] + "0000")
            fake = await c.request(method, made_up, json=body)
            assert fake.status_code == 404 and set(fake.json()["error"]) == set(r.json()["error"])
        # naming their organization in the header is 404 too, whatever the route
        r = await c.get("/v1/organization/projects", headers={"openai-organization": theirs.id})
        assert r.status_code == 404 and error_code(r) == "not_found"
        ids = {x["id"] for x in (await c.get("/v1/organization/users")).json()["data"]}
        assert theirs.owner_id not in ids and mine.owner_id in ids
    async with org_client(p, theirs.admin_key) as t:
        assert (await t.get(f"/v1/organization/projects/{theirs.project_id}/api_keys/{key['key']['id']}")
                ).json()["revoked"] is False
        assert (await t.get(f"/v1/organization/invites/{invite['id']}")).json()["status"] == "pending"
        assert (await t.get(f"/v1/organization/users/{theirs.members['developer']}")).json()["role"] == "developer"
        assert (await t.get(f"/v1/organization/admin_api_keys/{admin_key['id']}")).json()["revoked_at"] is None


async def test_other_credentials_are_refused(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p)
    async with org_client(p) as anonymous:
        r = await anonymous.get("/v1/organization/projects")
        assert r.status_code == 401 and error_code(r) == "missing_api_key", r.text
    for token in (p.key, p.admin_token, "nx_admin_" + "A" * 49, org.admin_key[:-1] + ("y" if org.admin_key.endswith("x") else "x")):
        async with org_client(p, token) as c:
            r = await c.get("/v1/organization/projects")
            assert r.status_code == 401 and error_code(r) == "invalid_api_key", (token[:12], r.text)
    async with p.client(org.admin_key) as inference:  # an admin key is no API key at the sidecar
        r = await inference.get("/v1/models")
        assert r.status_code == 401, r.text


async def test_the_operator_makes_an_organizations_first_admin_key_with_nx(sp: SimPlatform) -> None:
    from tests.foundation.test_cli import nx

    p = sp.platform
    org = await new_org(p)
    made = await nx(p, "admin-keys", "create", "--org", org.id, "--name", "from the cli")
    assert made["value"].startswith("nx_admin_")
    assert made["id"] in {k["id"] for k in (await nx(p, "admin-keys", "list", "--org", org.id))["data"]}
    async with org_client(p, made["value"]) as c:
        r = await c.get("/v1/organization/settings")
        assert r.status_code == 200 and r.json()["id"] == org.id, r.text
