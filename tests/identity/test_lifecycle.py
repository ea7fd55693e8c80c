"""The account life cycle through the edge, with no API key: sign up, verify from `nx mail`, sign in,
change the password, sign out, reset the password. Sign-up makes an organization with a default
project, the user its owner, no key, and promotional credit only once the email is verified."""

from __future__ import annotations

import asyncio
import re
import sys

from tests.harness import ROOT, Platform
from tests.identity.conftest import CREDIT, PASSWORD, mail_token, new_client, new_email, sql


async def nx_mail(p: Platform, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "control_plane.cli", "mail", *args,
                                                env=p.env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def balance(p: Platform, org_id: str) -> int:
    async with p.admin() as a:
        r = await a.get(f"/api/orgs/{org_id}/ledger/balance")
    assert r.status_code == 200, r.text
    body = r.json()
    return int(body["promo_nanos"]) + int(body["wallet_nanos"])


async def test_sign_up_verify_sign_in_change_and_reset_password(idp: Platform) -> None:
    email = new_email("life")
    async with new_client(idp) as c:
        r = await c.post("/auth/signup", json={"email": email.upper(), "password": PASSWORD, "name": "Ada"})
        assert r.status_code == 202, r.text
        assert r.json() == {"object": "signup", "email": email, "status": "verification_sent"}
        assert r.headers["x-request-id"].startswith("req_")  # through the edge, with no API key

        # not verified yet: a right password learns only that
        r = await c.post("/auth/signin", json={"email": email, "password": PASSWORD})
        assert r.status_code == 403 and r.json()["error"]["code"] == "email_not_verified", r.text

        listed = await nx_mail(idp, "list", "--to", email)
        assert "Verify your email" in listed
        shown = await nx_mail(idp, "show", "--last", "--to", email)
        token = re.search(r'"token": "([^"]+)"', shown)
        assert token, shown
        user_id = (await sql(idp, "SELECT id FROM users WHERE email = :e", e=email))[0][0]
        org_id = (await sql(idp, "SELECT signup_org_id FROM users WHERE id = :u", u=user_id))[0][0]
        assert await balance(idp, org_id) == 0  # nothing before the email is verified

        r = await c.post("/auth/verify", json={"token": token.group(1)})
        assert r.status_code == 200 and r.json()["user"]["email_verified"] is True, r.text
        assert await balance(idp, org_id) == CREDIT

        r = await c.post("/auth/signin", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        session = r.json()
        assert session["user"]["id"] == user_id and session["provider"] == "local"
        assert [(o["id"], o["role"]) for o in session["organizations"]] == [(org_id, "owner")]
        assert (await c.get("/auth/session")).json()["id"] == session["id"]

        projects = await sql(idp, "SELECT name FROM projects WHERE org_id = :o", o=org_id)
        assert [r[0] for r in projects] == ["Default project"]
        assert await sql(idp, "SELECT id FROM api_keys WHERE org_id = :o", o=org_id) == []

        # change the password: this session carries on with a new token, others end
        async with new_client(idp) as other:
            assert (await other.post("/auth/signin", json={"email": email, "password": PASSWORD})).status_code == 200
            new_password = "quartz meadow violin 77"
            r = await c.post("/auth/password", json={"current_password": PASSWORD, "new_password": new_password},
                             headers={"x-csrf-token": session["csrf_token"]})
            assert r.status_code == 200, r.text
            assert r.json()["id"] == session["id"] and r.json()["csrf_token"] != session["csrf_token"]
            assert (await other.get("/auth/session")).status_code == 401
        assert (await c.get("/auth/session")).status_code == 200
        r = await c.post("/auth/signout", headers={"x-csrf-token": r.json()["csrf_token"]})
        assert r.status_code == 200 and (await c.get("/auth/session")).status_code == 401

        # reset: the mailed token sets a new password and ends every session
        r = await c.post("/auth/password_reset", json={"email": email})
        assert r.status_code == 202, r.text
        reset = await mail_token(idp, email, "Reset your password")
        r = await c.post("/auth/password_reset/complete", json={"token": reset, "password": "cobalt harbor pencil 9"})
        assert r.status_code == 200, r.text
        assert (await c.post("/auth/signin", json={"email": email, "password": new_password})).status_code == 401
        assert (await c.post("/auth/signin", json={"email": email,
                                                   "password": "cobalt harbor pencil 9"})).status_code == 200
    assert await balance(idp, org_id) == CREDIT  # still granted once
