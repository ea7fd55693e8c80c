"""Accounts through the edge: lockout without revealing accounts, weak passwords, single-use and
expiring tokens, and a sign-up that cannot mint money."""

from __future__ import annotations

from tests.harness import Platform, eventually
from tests.identity.conftest import CREDIT, PASSWORD, mail_token, new_client, new_email, signed_up, sql


async def test_lockout_per_account_looks_the_same_for_unknown_emails(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
    ghost = new_email("ghost")
    for email in (me.email, ghost):
        async with new_client(idp) as c:  # a fresh address each: the account's own count
            wrong = {"email": email, "password": "wrong guess here"}
            statuses = [(await c.post("/auth/signin", json=wrong)).status_code for _ in range(5)]
            assert statuses == [401] * 5
        async with new_client(idp) as c:
            r = await c.post("/auth/signin", json={"email": email, "password": PASSWORD})
            # locked: even the right password is not checked, and an unknown email answers the same
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text
            assert int(r.headers["retry-after"]) >= 1
    async with new_client(idp) as c:

        async def unlocked() -> bool:
            return (await c.post("/auth/signin", json={"email": me.email, "password": PASSWORD})).status_code == 200

        await eventually(unlocked, "the account's back-off to pass", timeout=10)


async def test_lockout_per_client_address(idp: Platform) -> None:
    async with new_client(idp, ip="203.0.113.77") as c:
        for _ in range(20):
            r = await c.post("/auth/signin", json={"email": new_email("spray"), "password": "wrong guess here"})
            assert r.status_code == 401, r.text
        r = await c.post("/auth/signin", json={"email": new_email("spray"), "password": "wrong guess here"})
        assert r.status_code == 429, r.text
    async with new_client(idp) as other:  # another address is not affected
        r = await other.post("/auth/signin", json={"email": new_email("spray"), "password": "wrong guess here"})
        assert r.status_code == 401


async def test_sign_ups_per_client_address_are_limited(idp: Platform) -> None:
    async with new_client(idp, ip="203.0.113.99") as c:
        for _ in range(10):
            r = await c.post("/auth/signup", json={"email": new_email("bulk"), "password": PASSWORD})
            assert r.status_code == 202, r.text
        r = await c.post("/auth/signup", json={"email": new_email("bulk"), "password": PASSWORD})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text


async def test_weak_and_breached_pattern_passwords_are_refused_with_the_reason(idp: Platform) -> None:
    email = new_email("weak")
    async with new_client(idp) as c:
        for password, reason in (("short1", "fewer than"), ("Password123!", "common"), ("qwertyuiop12", "common"),
                                 ("aaaaaaaaaaaaaa", "too few different"), ("1234567890", "sequence"),
                                 (f"{email.split('@')[0]}xyz!", "email")):
            r = await c.post("/auth/signup", json={"email": email, "password": password})
            assert r.status_code == 400, (password, r.text)
            err = r.json()["error"]
            assert err["code"] == "weak_password" and err["param"] == "password" and reason in err["message"], err
    assert await sql(idp, "SELECT id FROM users WHERE email = :e", e=email) == []


async def test_tokens_are_single_use_and_expire(idp: Platform) -> None:
    async with new_client(idp) as c:
        email = new_email("tok")
        assert (await c.post("/auth/signup", json={"email": email, "password": PASSWORD})).status_code == 202
        token = await mail_token(idp, email, "Verify your email")
        assert (await c.post("/auth/verify", json={"token": token})).status_code == 200
        r = await c.post("/auth/verify", json={"token": token})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_token", r.text
        assert (await c.post("/auth/verify", json={"token": "x" * 43})).json()["error"]["code"] == "invalid_token"

        assert (await c.post("/auth/password_reset", json={"email": email})).status_code == 202
        old = await mail_token(idp, email, "Reset your password")
        assert (await c.post("/auth/password_reset", json={"email": email})).status_code == 202
        assert await mail_token(idp, email, "Reset your password") == old  # one mail a minute at most
        await sql(idp, "UPDATE verification_tokens SET created_at = 1 WHERE purpose = 'password_reset'")
        assert (await c.post("/auth/password_reset", json={"email": email})).status_code == 202
        newer = await mail_token(idp, email, "Reset your password")
        body = {"password": "granite willow saddle 3"}
        r = await c.post("/auth/password_reset/complete", json={"token": old, **body})
        assert r.json()["error"]["code"] == "invalid_token"  # a newer mail replaced it
        await sql(idp, "UPDATE verification_tokens SET expires = 1 WHERE purpose = 'password_reset'"
                       " AND used_at IS NULL AND identifier = (SELECT id FROM users WHERE email = :e)", e=email)
        r = await c.post("/auth/password_reset/complete", json={"token": newer, **body})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_token", r.text  # expired
        await sql(idp, "UPDATE verification_tokens SET created_at = 1 WHERE purpose = 'password_reset'")
        assert (await c.post("/auth/password_reset", json={"email": email})).status_code == 202
        fresh = await mail_token(idp, email, "Reset your password")
        assert (await c.post("/auth/password_reset/complete", json={"token": fresh, **body})).status_code == 200
        r = await c.post("/auth/password_reset/complete", json={"token": fresh, **body})
        assert r.json()["error"]["code"] == "invalid_token"  # spent
        stored = await sql(idp, "SELECT token_hash FROM verification_tokens WHERE token_hash = :t", t=fresh)
        assert stored == []  # only hashes are stored


async def test_reset_request_and_sign_up_do_not_reveal_accounts(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        ghost = new_email("ghost")
        a = await c.post("/auth/password_reset", json={"email": me.email})
        b = await c.post("/auth/password_reset", json={"email": ghost})
        assert a.status_code == b.status_code == 202
        assert a.json() | {"email": ""} == b.json() | {"email": ""}
        r = await c.post("/auth/signup", json={"email": me.email, "password": "some other phrase 8"})
        assert r.status_code == 202 and r.json()["status"] == "verification_sent"
        assert await sql(idp, "SELECT body FROM mail_outbox WHERE to_address = :e", e=ghost) == []
        users = await sql(idp, "SELECT id FROM users WHERE email = :e", e=me.email)
        assert len(users) == 1


async def test_sign_up_cannot_mint_money(idp: Platform) -> None:
    """Credit is the operator's setting (default 0), granted once per sign-up organization and only
    at verification: a taken email, a repeated verification or a reset grant nothing more."""
    from core.settings import Settings

    assert Settings().signup_credit_nanos == 0
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        org = me.session["organizations"][0]["id"]
        await c.post("/auth/signup", json={"email": me.email, "password": "some other phrase 8"})
        await c.post("/auth/password_reset", json={"email": me.email})
        token = await mail_token(idp, me.email, "Reset your password")
        r = await c.post("/auth/password_reset/complete", json={"token": token, "password": "granite willow saddle 3"})
        assert r.status_code == 200, r.text
    grants = await sql(idp, "SELECT COUNT(*) FROM ledger_transactions WHERE org_id = :o", o=org)
    assert grants[0][0] == 1
    async with idp.admin() as a:
        body = (await a.get(f"/api/orgs/{org}/ledger/balance")).json()
    assert (body["promo_nanos"], body["wallet_nanos"]) == (CREDIT, 0)
    orgs = await sql(idp, "SELECT COUNT(*) FROM memberships WHERE user_id = (SELECT id FROM users WHERE email = :e)",
                     e=me.email)
    assert orgs[0][0] == 1  # the second sign-up made no organization


async def test_signing_in_unverified_mails_a_new_link_at_most_every_five_minutes(idp: Platform) -> None:
    email = new_email("late")
    async with new_client(idp) as c:
        assert (await c.post("/auth/signup", json={"email": email, "password": PASSWORD})).status_code == 202
        first = await mail_token(idp, email, "Verify your email")
        await sql(idp, "UPDATE verification_tokens SET expires = 1, created_at = 1"
                       " WHERE identifier = (SELECT id FROM users WHERE email = :e)", e=email)
        assert (await c.post("/auth/verify", json={"token": first})).json()["error"]["code"] == "invalid_token"
        for _ in range(3):
            r = await c.post("/auth/signin", json={"email": email, "password": PASSWORD})
            assert r.status_code == 403 and r.json()["error"]["code"] == "email_not_verified", r.text
        mails = await sql(idp, "SELECT COUNT(*) FROM mail_outbox WHERE to_address = :e AND subject = 'Verify your email'",
                          e=email)
        assert mails[0][0] == 2  # the sign-up's, and one new one for the three attempts
        second = await mail_token(idp, email, "Verify your email")
        assert second != first and (await c.post("/auth/verify", json={"token": second})).status_code == 200
        assert (await c.post("/auth/signin", json={"email": email, "password": PASSWORD})).status_code == 200
