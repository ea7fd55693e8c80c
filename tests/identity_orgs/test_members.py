"""Members through the customer REST API: the owner rules, project narrowing, CSRF on cookie
writes, and removal (sessions end, the organization's keys stay and are listed)."""

from __future__ import annotations

from tests.identity_orgs.conftest import add_member, error_code, new_org, org_client
from tests.identity_orgs.sessions import session_headers
from tests.inference.support import SimPlatform


async def test_the_last_owner_can_neither_leave_nor_be_demoted(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("admin",))
    owner, admin = org.members["owner"], org.members["admin"]
    async with org_client(p, **await session_headers(p, owner, org.id)) as o:
        r = await o.delete(f"/v1/organization/users/{owner}")
        assert r.status_code == 409 and error_code(r) == "conflict", r.text
        r = await o.post(f"/v1/organization/users/{owner}", json={"role": "admin"})
        assert r.status_code == 409 and error_code(r) == "conflict", r.text
    async with org_client(p, **await session_headers(p, admin, org.id)) as a:
        # an admin may neither touch an owner nor make one
        for r in (await a.post(f"/v1/organization/users/{owner}", json={"role": "reader"}),
                  await a.delete(f"/v1/organization/users/{owner}"),
                  await a.post(f"/v1/organization/users/{admin}", json={"role": "owner"}),
                  await a.post("/v1/organization/invites", json={"email": "o@example.com", "role": "owner"})):
            assert r.status_code == 403 and error_code(r) == "permission_denied", r.text
    async with org_client(p, org.admin_key) as k:  # an admin key is an admin too
        r = await k.post(f"/v1/organization/users/{admin}", json={"role": "owner"})
        assert r.status_code == 403 and error_code(r) == "permission_denied", r.text
    async with org_client(p, **await session_headers(p, owner, org.id)) as o:
        assert (await o.post(f"/v1/organization/users/{admin}", json={"role": "owner"})).json()["role"] == "owner"
        r = await o.delete(f"/v1/organization/users/{owner}")  # another owner remains: may leave now
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
    async with org_client(p, **await session_headers(p, admin, org.id)) as a:
        users = (await a.get("/v1/organization/users")).json()["data"]
        assert [(u["id"], u["role"]) for u in users] == [(admin, "owner")]


async def test_removal_ends_the_members_sessions_and_keeps_their_keys(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("developer",))
    dev = org.members["developer"]
    dev_headers = await session_headers(p, dev, org.id)
    async with org_client(p, **dev_headers) as d:
        r = await d.post(f"/v1/organization/projects/{org.project_id}/api_keys", json={"name": "dev key"})
        assert r.status_code == 201, r.text
        key_id, secret = r.json()["key"]["id"], r.json()["secret"]
    async with org_client(p, org.admin_key) as k:
        r = await k.delete(f"/v1/organization/users/{dev}")
        assert r.status_code == 200, r.text
        removed = r.json()
        assert removed["object"] == "organization.user.deleted" and removed["id"] == dev
        assert [(x["id"], x["name"], x["revoked"]) for x in removed["api_keys"]] == [(key_id, "dev key", False)]
        r = await k.get(f"/v1/organization/users/{dev}")
        assert r.status_code == 404, r.text
        audit = (await k.get("/v1/organization/audit_logs", params={"type": "member.removed"})).json()["data"]
        assert audit[0]["target"] == dev and audit[0]["actor"]["type"] == "admin_key"
    async with org_client(p, **dev_headers) as d:  # the session is gone, not merely the membership
        r = await d.get("/v1/organization/projects")
        assert r.status_code == 401 and error_code(r) == "missing_api_key", r.text
    async with p.client(secret) as inference:  # the organization's key keeps working
        assert (await inference.get("/v1/models")).status_code == 200


async def test_a_member_narrowed_to_projects_sees_and_touches_only_those(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("developer",))
    dev = org.members["developer"]
    async with org_client(p, org.admin_key) as k:
        research = (await k.post("/v1/organization/projects", json={"name": "Research"})).json()["id"]
        shared = (await k.post(f"/v1/organization/projects/{research}/api_keys",
                               json={"name": "shared", "projects": [research, org.project_id]})).json()["key"]["id"]
        r = await k.post(f"/v1/organization/users/{dev}", json={"projects": [research]})
        assert r.status_code == 200 and r.json()["projects"] == [research], r.text
        r = await k.post(f"/v1/organization/users/{dev}", json={"projects": ["proj_00000000000000000000000000"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "projects", r.text
    async with org_client(p, **await session_headers(p, dev, org.id)) as d:
        assert [x["id"] for x in (await d.get("/v1/organization/projects")).json()["data"]] == [research]
        for r in (await d.get(f"/v1/organization/projects/{org.project_id}"),
                  await d.get(f"/v1/organization/projects/{org.project_id}/api_keys"),
                  await d.post(f"/v1/organization/projects/{org.project_id}/api_keys", json={})):
            assert r.status_code == 404 and error_code(r) == "not_found", r.text
        r = await d.post(f"/v1/organization/projects/{research}/api_keys", json={"projects": [org.project_id]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "projects", r.text
        r = await d.post(f"/v1/organization/projects/{research}/api_keys", json={"name": "mine"})
        assert r.status_code == 201 and r.json()["key"]["projects"] == [research], r.text
        # a key that also acts for a project outside the narrowing: visible, not theirs to change
        assert (await d.get(f"/v1/organization/projects/{research}/api_keys/{shared}")).status_code == 200
        for r in (await d.post(f"/v1/organization/projects/{research}/api_keys/{shared}", json={"name": "x"}),
                  await d.delete(f"/v1/organization/projects/{research}/api_keys/{shared}")):
            assert r.status_code == 403 and error_code(r) == "permission_denied", r.text
    async with org_client(p, org.admin_key) as k:
        r = await k.post(f"/v1/organization/users/{dev}", json={"projects": None})
        assert r.status_code == 200 and r.json()["projects"] is None
    async with org_client(p, **await session_headers(p, dev, org.id)) as d:
        assert len((await d.get("/v1/organization/projects")).json()["data"]) == 2


async def test_cookie_writes_need_the_csrf_token_and_a_member_may_leave(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("admin", "reader"))
    no_csrf = await session_headers(p, org.members["admin"], org.id, csrf=False)
    async with org_client(p, **no_csrf) as a:
        assert (await a.get("/v1/organization/projects")).status_code == 200
        r = await a.post("/v1/organization/projects", json={"name": "forged"})
        assert r.status_code == 403 and error_code(r) == "csrf_failed", r.text
        r = await a.delete(f"/v1/organization/users/{org.members['reader']}")
        assert r.status_code == 403 and error_code(r) == "csrf_failed", r.text
    reader = org.members["reader"]
    async with org_client(p, **await session_headers(p, reader, org.id)) as rd:
        r = await rd.delete(f"/v1/organization/users/{reader}")  # leaving needs no permission
        assert r.status_code == 200, r.text
    other = await add_member(p, org.id, "developer")
    async with org_client(p, **await session_headers(p, other, None)) as only_one:  # one membership: no header
        assert (await only_one.get("/v1/organization/settings")).json()["id"] == org.id


async def test_the_operators_removal_ends_sessions_too(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("reader",))
    reader = org.members["reader"]
    headers = await session_headers(p, reader, org.id)
    async with org_client(p, **headers) as rd:
        assert (await rd.get("/v1/organization/projects")).status_code == 200
    async with p.admin() as a:
        assert (await a.delete(f"/api/orgs/{org.id}/members/{reader}")).status_code == 200
    async with org_client(p, **headers) as rd:
        r = await rd.get("/v1/organization/projects")
        assert r.status_code == 401 and error_code(r) == "missing_api_key", r.text


async def test_a_raised_role_ends_the_members_sessions_a_lowered_one_does_not(sp: SimPlatform) -> None:
    """A privilege gain is used only with a token issued after it (identity/policy.gains): the
    member's sessions end and they sign in again; a loss applies at once to the same session."""
    p = sp.platform
    org = await new_org(p, roles=("reader", "developer"))
    reader, dev = org.members["reader"], org.members["developer"]
    before, dev_session = await session_headers(p, reader, org.id), await session_headers(p, dev, org.id)
    async with org_client(p, **await session_headers(p, org.members["owner"], org.id)) as o:
        r = await o.post(f"/v1/organization/users/{reader}", json={"role": "developer"})
        assert r.status_code == 200 and r.json()["role"] == "developer", r.text
        r = await o.post(f"/v1/organization/users/{dev}", json={"role": "reader"})
        assert r.status_code == 200 and r.json()["role"] == "reader", r.text
        log = (await o.get("/v1/organization/audit_logs", params={"type": "member.updated"})).json()["data"]
        assert {e["target"]: e["details"].get("sessions_ended") for e in log} == {reader: 1, dev: None}, log
    async with org_client(p, **before) as old:
        r = await old.get("/v1/organization/projects")
        assert r.status_code == 401 and error_code(r) == "missing_api_key", r.text
    async with org_client(p, **await session_headers(p, reader, org.id)) as again:  # signed in anew
        r = await again.post(f"/v1/organization/projects/{org.project_id}/api_keys", json={"name": "mine now"})
        assert r.status_code == 201, r.text
    async with org_client(p, **dev_session) as lowered:  # same session, the lower role at once
        r = await lowered.post(f"/v1/organization/projects/{org.project_id}/api_keys", json={"name": "no more"})
        assert r.status_code == 403 and error_code(r) == "permission_denied", r.text
