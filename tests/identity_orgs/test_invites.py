"""Invitations: by email with a role and projects; the token travels only by email (the outbox);
pending -> accepted once, revoked, or expired after 7 days; a used, revoked or expired token is
refused, and so is another user's."""

from __future__ import annotations

import re
import secrets

from tests.identity_orgs.conftest import error_code, new_org, operator, org_client
from tests.identity_orgs.sessions import execute, session_headers
from tests.inference.support import SimPlatform


async def _invitee(p: object, email: str) -> str:
    async with operator(p) as a:  # type: ignore[arg-type]
        r = await a.post("/api/users", json={"email": email})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _token_mailed_to(p: object, email: str) -> str:
    rows = await execute(p, "SELECT body FROM mail_outbox WHERE to_address = :e ORDER BY created_at DESC",  # type: ignore[arg-type]
                         {"e": email})
    assert rows, f"no mail to {email}"
    match = re.search(r"nxinv_[A-Za-z0-9_-]+", str(rows[0][0]))
    assert match, rows[0][0]
    return match.group(0)


async def test_an_invitation_is_accepted_once_with_its_role_and_projects(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p, roles=("admin",))
    email = f"new-{secrets.token_hex(4)}@example.com"
    async with org_client(p, **await session_headers(p, org.members["admin"], org.id)) as a:
        research = (await a.post("/v1/organization/projects", json={"name": "Research"})).json()["id"]
        r = await a.post("/v1/organization/invites", json={"email": email.upper(), "role": "developer",
                                                           "projects": [research]})
        assert r.status_code == 201, r.text
        invite = r.json()
        assert invite["status"] == "pending" and invite["email"] == email and invite["projects"] == [research]
        assert invite["expires_at"] - invite["invited_at"] == 7 * 24 * 3600
        assert "nxinv_" not in r.text  # the token goes by email only
        r = await a.post("/v1/organization/invites", json={"email": email, "role": "reader"})
        assert r.status_code == 409 and error_code(r) == "conflict", r.text
    token = await _token_mailed_to(p, email)
    stranger = await _invitee(p, f"stranger-{secrets.token_hex(4)}@example.com")
    async with org_client(p, **await session_headers(p, stranger, None)) as s:
        r = await s.post("/v1/organization/invites/accept", json={"token": token})
        assert r.status_code == 404 and error_code(r) == "not_found", r.text  # addressed to someone else
    user = await _invitee(p, email)
    async with org_client(p, **await session_headers(p, user, None)) as u:
        r = await u.post("/v1/organization/invites/accept", json={"token": token})
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        assert "__Host-nx_session=" in r.headers.get("set-cookie", "")  # joining rotates the session
    async with org_client(p, **await session_headers(p, user, None)) as u:
        r = await u.post("/v1/organization/invites/accept", json={"token": token})
        assert r.status_code == 409 and error_code(r) == "conflict", r.text
        me = (await u.get(f"/v1/organization/users/{user}")).json()
        assert (me["role"], me["projects"]) == ("developer", [research])
    async with org_client(p, org.admin_key) as k:
        assert (await k.get(f"/v1/organization/invites/{invite['id']}")).json()["status"] == "accepted"
        r = await k.delete(f"/v1/organization/invites/{invite['id']}")
        assert r.status_code == 409, r.text
        log = (await k.get("/v1/organization/audit_logs")).json()["data"]
        accepted = next(e for e in log if e["type"] == "invite.accepted")
        assert accepted["actor"] == {"type": "user", "id": user, "ip_address": "127.0.0.1"}
        assert any(e["type"] == "invite.created" and e["target"] == invite["id"] for e in log)


async def test_revoked_and_expired_invitations_are_refused(sp: SimPlatform) -> None:
    p = sp.platform
    org = await new_org(p)
    revoked_email, expired_email = (f"{w}-{secrets.token_hex(4)}@example.com" for w in ("rev", "exp"))
    async with org_client(p, org.admin_key) as k:
        revoked = (await k.post("/v1/organization/invites", json={"email": revoked_email, "role": "reader"})).json()
        expired = (await k.post("/v1/organization/invites", json={"email": expired_email, "role": "reader"})).json()
        r = await k.delete(f"/v1/organization/invites/{revoked['id']}")
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert (await k.get(f"/v1/organization/invites/{revoked['id']}")).json()["status"] == "revoked"
    # seven days pass for the other one
    await execute(p, "UPDATE invitations SET expires_at = created_at - 1 WHERE id = :i", {"i": expired["id"]})
    async with org_client(p, org.admin_key) as k:
        assert (await k.get(f"/v1/organization/invites/{expired['id']}")).json()["status"] == "expired"
    for email in (revoked_email, expired_email):
        token = await _token_mailed_to(p, email)
        user = await _invitee(p, email)
        async with org_client(p, **await session_headers(p, user, None)) as u:
            r = await u.post("/v1/organization/invites/accept", json={"token": token})
            assert r.status_code == 409 and error_code(r) == "conflict", (email, r.text)
            r = await u.get("/v1/organization/projects", headers={"openai-organization": org.id})
            assert r.status_code == 404, r.text  # not a member
    async with org_client(p, org.admin_key) as k:  # an expired invitation no longer blocks a new one
        r = await k.post("/v1/organization/invites", json={"email": expired_email, "role": "reader"})
        assert r.status_code == 201, r.text
