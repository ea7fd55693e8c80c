"""Issue 15's done-when path, through the edge only: a new user signs up, verifies the email from
`nx mail`, signs in, invites a colleague; the colleague signs up, accepts from `nx mail`, creates a
scoped key through the REST API with their session and calls `/v1/responses` with it. Then the owner
demotes and removes the colleague: the colleague's session ends, the key they made keeps working."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys

import httpx

from tests.harness import ROOT, Platform
from tests.identity_orgs.conftest import error_code
from tests.inference.support import SimPlatform

PASSWORD = "saffron kettle glacier 58"  # noqa: S105  (a test account's)


async def nx(p: Platform, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "control_plane.cli", *args, env=p.env,
                                                cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def nx_mail_token(p: Platform, email: str, subject: str) -> str:
    """The token of the newest mail to `email` whose subject starts with `subject`, as `nx mail` shows it."""
    listed = await nx(p, "mail", "list", "--to", email)
    mail_id = next(m.group(0) for line in listed.splitlines() if subject in line
                   for m in [re.search(r"mail_[0-9a-z]{26}", line)] if m)
    shown = await nx(p, "mail", "show", mail_id)
    match = re.search(r'"token": "([^"]+)"', shown)
    assert match, shown
    return match.group(1)


def csrf(c: httpx.AsyncClient) -> dict[str, str]:
    """The double-submit token, read from the readable cookie as a browser page would."""
    return {"x-csrf-token": str(c.cookies.get("__Host-nx_csrf"))}


async def signed_up(p: Platform, c: httpx.AsyncClient, email: str) -> dict[str, object]:
    r = await c.post("/auth/signup", json={"email": email, "password": PASSWORD, "name": email.split("@")[0]})
    assert r.status_code == 202, r.text
    r = await c.post("/auth/verify", json={"token": await nx_mail_token(p, email, "Verify your email")})
    assert r.status_code == 200, r.text
    r = await c.post("/auth/signin", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_sign_up_invite_accept_make_a_key_and_call_responses(sp: SimPlatform) -> None:
    p = sp.platform
    owner_email, dev_email = (f"{w}-{secrets.token_hex(4)}@example.com" for w in ("ada", "grace"))
    async with httpx.AsyncClient(base_url=p.edge, timeout=30) as owner, \
            httpx.AsyncClient(base_url=p.edge, timeout=30) as dev:
        session = await signed_up(p, owner, owner_email)
        org = session["organizations"][0]["id"]  # type: ignore[index]
        async with p.admin() as a:  # sign-up mints no money: the operator grants the credit
            r = await a.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": 10**9},
                             headers={"idempotency-key": secrets.token_hex(8)})
            assert r.status_code == 201, r.text
        in_org = {"openai-organization": org}
        projects = (await owner.get("/v1/organization/projects", headers=in_org)).json()["data"]
        assert [x["name"] for x in projects] == ["Default project"]
        r = await owner.post("/v1/organization/invites", json={"email": dev_email, "role": "developer"},
                             headers={**in_org, **csrf(owner)})
        assert r.status_code == 201, r.text

        await signed_up(p, dev, dev_email)  # the colleague's own organization comes with it
        token = await nx_mail_token(p, dev_email, "You are invited")
        r = await dev.post("/v1/organization/invites/accept", json={"token": token}, headers=csrf(dev))
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        r = await dev.get("/v1/organization/projects")  # two organizations now: name one
        assert r.status_code == 400 and r.json()["error"]["param"] == "OpenAI-Organization", r.text

        r = await dev.post(f"/v1/organization/projects/{projects[0]['id']}/api_keys",
                           headers={**in_org, **csrf(dev)},
                           json={"name": "grace's key", "models": ["sim-chat"], "endpoints": ["responses"],
                                 "monthly_budget_nanos": 10**8, "rate_limits": {"rpm": 60}})
        assert r.status_code == 201, r.text
        key_id, secret = r.json()["key"]["id"], r.json()["secret"]
        async with p.client(secret) as inference:
            r = await inference.post("/v1/responses", json={"model": "sim-chat", "input": "hello, platform"})
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text

        users = (await owner.get("/v1/organization/users", headers=in_org)).json()["data"]
        dev_id = next(u["id"] for u in users if u["email"] == dev_email)
        r = await owner.post(f"/v1/organization/users/{dev_id}", json={"role": "reader"},
                             headers={**in_org, **csrf(owner)})
        assert r.status_code == 200 and r.json()["role"] == "reader", r.text
        r = await dev.post(f"/v1/organization/projects/{projects[0]['id']}/api_keys", json={},
                           headers={**in_org, **csrf(dev)})
        assert r.status_code == 403 and error_code(r) == "permission_denied", r.text

        r = await owner.delete(f"/v1/organization/users/{dev_id}", headers={**in_org, **csrf(owner)})
        assert r.status_code == 200 and [k["id"] for k in r.json()["api_keys"]] == [key_id], r.text
        assert (await dev.get("/v1/organization/projects", headers=in_org)).status_code == 401
        assert (await dev.get("/auth/session")).status_code == 401  # signed out everywhere
        async with p.client(secret) as inference:  # the organization's key stays
            r = await inference.post("/v1/responses", json={"model": "sim-chat", "input": "still here"})
            assert r.status_code == 200, r.text
        log = (await owner.get("/v1/organization/audit_logs", headers=in_org)).json()["data"]
        assert [e["type"] for e in log][:4] == ["member.removed", "member.updated", "key.created", "invite.accepted"]
